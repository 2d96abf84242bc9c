"""Runs `trainer.main` with one fault injected at an exact point: test-only, never imported by the product.

    python tests/fault_injection.py FAULT [trainer.main flags...]

FAULT is one of:
  kill_before_checkpoint_state:N  SIGKILL once the N-th checkpoint's data and index are
                                  written, before the `checkpoint` state file names it
  kill_during_eval:N              SIGKILL after the first batch of the N-th evaluation
  kill_during_export              SIGKILL after the SavedModel is written, before it is renamed
  kill_during_reexport            SIGKILL after an existing version of the export is moved aside
                                  for its replacement, before the replacement takes its name
  kill_during_step:N              SIGKILL in the middle of the N-th train function call
  nan_label:I                     the training label of example I is NaN (a poisoned example)
  scale_loss:F                    the training loss is multiplied by F: with a huge F, float16
                                  gradients overflow at every step while the loss stays finite
"""

import os
import runpy
import signal
import sys


def _kill() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _on_call(module, name: str, target: int, before: bool = True) -> None:
    """Kills the process at the `target`-th call of module.name (before or after it runs)."""
    original = getattr(module, name)
    calls = {"count": 0}

    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if before and calls["count"] == target:
            _kill()
        result = original(*args, **kwargs)
        if not before and calls["count"] == target:
            _kill()
        return result

    setattr(module, name, wrapper)


def install(fault: str) -> None:
    kind, _, value = fault.partition(":")
    if kind == "kill_before_checkpoint_state":
        from tensorflow.python.checkpoint import checkpoint_management

        # CheckpointManager.save writes the state file twice (before and after deleting old
        # checkpoints): the N-th save's first write is call 2N-1.
        _on_call(checkpoint_management, "update_checkpoint_state_internal", 2 * int(value) - 1)
    elif kind == "kill_during_eval":
        from trainer import train_loop

        original = train_loop.Trainer.evaluate
        evaluations = {"count": 0}

        def evaluate(self, examples, split_name):
            evaluations["count"] += 1
            if evaluations["count"] == int(value):
                eval_fn = self._eval_fn

                def first_batch_then_kill(inputs):
                    eval_fn(inputs)
                    _kill()

                self._eval_fn = first_batch_then_kill
            return original(self, examples, split_name)

        train_loop.Trainer.evaluate = evaluate
    elif kind == "kill_during_export":
        import tensorflow as tf

        _on_call(tf.saved_model, "save", 1, before=False)
    elif kind == "kill_during_reexport":
        original_rename = os.rename

        def rename(source, destination):
            original_rename(source, destination)
            if os.path.basename(destination).startswith(".tmp-replaced-"):
                _kill()

        os.rename = rename
    elif kind == "kill_during_step":
        import threading

        from trainer import train_loop

        original = train_loop.Trainer._make_train_function
        target = int(value)

        def make(self):
            forward_backward, train_fn = original(self)
            calls = {"count": 0}

            def timed_train_fn(*args):
                calls["count"] += 1
                if calls["count"] == target:
                    # Killed from another thread while the step runs inside TensorFlow.
                    threading.Timer(0.05, _kill).start()
                return train_fn(*args)

            return forward_backward, timed_train_fn

        train_loop.Trainer._make_train_function = make
    elif kind == "nan_label":
        import numpy as np

        from trainer import train_loop
        from trainer.data.sources import Examples

        original_train = train_loop.Trainer.train

        def train(self, train_examples, validation_examples):
            labels = train_examples.labels.astype(np.float32)
            labels[int(value)] = np.nan
            poisoned = Examples(train_examples.texts, labels, train_examples.ids)
            return original_train(self, poisoned, validation_examples)

        train_loop.Trainer.train = train
    elif kind == "scale_loss":
        from trainer.task import ClassificationTask

        original_loss = ClassificationTask.per_example_loss
        factor = float(value)
        ClassificationTask.per_example_loss = staticmethod(
            lambda labels, logits: original_loss(labels, logits) * factor
        )
    else:
        raise SystemExit(f"unknown fault {fault!r}; see the module docstring")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["trainer.main", *sys.argv[2:]]
    runpy.run_module("trainer.main", run_name="__main__", alter_sys=True)
