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
  nan_label:I                     the encoded training label of example I is NaN (a poisoned example)
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
        import dataclasses

        from trainer.training.evaluation import Evaluator

        original = Evaluator.evaluate
        evaluations = {"count": 0}

        def evaluate(self, examples, split_name, step):
            evaluations["count"] += 1
            if evaluations["count"] == int(value):
                eval_fn = self.step_functions.run

                def first_batch_then_kill(inputs):
                    eval_fn(inputs)
                    _kill()

                self.step_functions = dataclasses.replace(self.step_functions, run=first_batch_then_kill)
            return original(self, examples, split_name, step)

        Evaluator.evaluate = evaluate
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
        import dataclasses
        import threading

        from trainer.training import steps

        original = steps.build_train_step
        target = int(value)

        def build(*args, **kwargs):
            functions = original(*args, **kwargs)
            calls = {"count": 0}

            def timed_run(*run_args):
                calls["count"] += 1
                if calls["count"] == target:
                    # Killed from another thread while the step runs inside TensorFlow.
                    threading.Timer(0.05, _kill).start()
                return functions.run(*run_args)

            return dataclasses.replace(functions, run=timed_run)

        steps.build_train_step = build
    elif kind == "nan_label":
        import numpy as np

        from trainer.training.loop import Trainer

        original_train = Trainer.train

        def train(self, train_examples, validation_examples):
            # Labels are kept as read and encoded by the task as batches are made: the training
            # split's encoded label of example I becomes NaN (what no real label can encode to).
            encode = self.input_plan.encode_labels

            def poisoned_encode(labels, ids):
                encoded = encode(labels, ids)
                if ids is train_examples.ids:
                    encoded = encoded.astype(np.float32)
                    encoded[int(value)] = np.nan
                return encoded

            self.input_plan.encode_labels = poisoned_encode
            return original_train(self, train_examples, validation_examples)

        Trainer.train = train
    elif kind == "scale_loss":
        from trainer.tasks.classification import BinaryClassificationTask

        original_loss = BinaryClassificationTask.per_example_loss
        factor = float(value)
        BinaryClassificationTask.per_example_loss = lambda self, labels, outputs: (
            original_loss(self, labels, outputs) * factor
        )
    else:
        raise SystemExit(f"unknown fault {fault!r}; see the module docstring")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["trainer.main", *sys.argv[2:]]
    runpy.run_module("trainer.main", run_name="__main__", alter_sys=True)
