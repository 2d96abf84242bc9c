"""Checkpoints of a run: written by every worker, read from the chief's directory.

MultiWorkerMirroredStrategy needs every worker to take part in a save (the
values of some variables are gathered across workers), but only the chief's
copy is kept: other workers write into a local temporary directory of their
own (never the shared model_dir) and delete it after each save. One left by a
worker killed mid-save is removed when that worker starts again.

A save is never mistaken for a good checkpoint while it is torn: TensorFlow
writes the data and index files first and the `checkpoint` state file last,
by an atomic rename. On restore, a checkpoint that cannot be read (a file
truncated or removed after the fact) is skipped with a warning in favour of
the newest older one that can.
"""

import hashlib
import os
import re
import tempfile

from absl import logging
import tensorflow as tf
import tf_keras

from trainer.errors import UserError, WriteError
from trainer.run_dir import BEST_DIR, CHECKPOINT_DIR

# Where earlier versions put non-chief copies, inside model_dir; the chief removes any left.
_LEGACY_WORKER_DIR_PREFIX = ".tmp-worker-"
# CheckpointManager names a checkpoint saved with checkpoint_number=step "ckpt-<step>".
_STEP_SUFFIX = re.compile(r"-(\d+)$")


class CheckpointError(UserError):
    """The checkpoints in model_dir do not fit the configured model, or there are none to use."""


class CheckpointWriteError(WriteError):
    """A checkpoint could not be written (disk full, permissions); the last complete one is named."""


class Checkpoints:
    def __init__(
        self,
        checkpoint: tf.train.Checkpoint,
        model_dir: str,
        keep: int,
        step_counter: tf.Variable | None,
        is_chief: bool,
        worker_id: int = 0,
        num_workers: int = 1,
        subdir: str = CHECKPOINT_DIR,
    ):
        """Checkpoints of `checkpoint` in model_dir/`subdir`. Non-chief workers must take part in each save
        (its collectives) but their copies are thrown away: they write to local temporary storage, not to
        the shared model_dir (no upload of a full checkpoint per worker per save to a bucket)."""
        self.checkpoint = checkpoint
        self.model_dir = model_dir
        self.subdir = subdir
        self.directory = os.path.join(model_dir, subdir)
        self.is_chief = is_chief
        self._write_dir = self.directory if is_chief else os.path.join(_worker_dir(model_dir, worker_id), subdir)
        self._worker_id, self._num_workers = worker_id, num_workers
        self._manager = tf.train.CheckpointManager(
            checkpoint, self._write_dir, max_to_keep=keep, step_counter=step_counter
        )

    def remove_leftovers(self) -> None:
        """Removes a non-chief copy left by a run killed mid-save (each worker its own), and the chief the
        copies earlier versions kept inside model_dir. Called when training starts, after every check that
        could refuse the run."""
        leftovers = [_worker_dir(self.model_dir, self._worker_id)] if not self.is_chief else []
        if self.is_chief and tf.io.gfile.isdir(self.model_dir):
            names = (name.rstrip("/") for name in tf.io.gfile.listdir(self.model_dir))
            leftovers = [os.path.join(self.model_dir, n) for n in names if n.startswith(_LEGACY_WORKER_DIR_PREFIX)]
        for path in leftovers:
            if tf.io.gfile.exists(path):
                logging.info("Removing %s, left by an earlier run.", path)
                tf.io.gfile.rmtree(path)

    def candidates(self) -> list[str]:
        """Complete checkpoints in the chief's directory, newest first."""
        return complete_checkpoints(self.directory)

    def restore(self) -> str | None:
        """Restores the newest readable checkpoint; returns its path, or None if there is none."""
        return restore_newest(self.checkpoint, self.model_dir, self.subdir)

    def save(self, step: int) -> str:
        """Saves on every worker; only the chief's copy stays. Returns a description for the log.

        Raises CheckpointWriteError naming the last complete checkpoint when the write fails.
        """
        try:
            path = self._manager.save(checkpoint_number=step)
            if not self.is_chief:
                tf.io.gfile.rmtree(_worker_dir(self.model_dir, self._worker_id))
                return f"step {step} (this worker's copy removed; the chief keeps {self.directory})"
        except (tf.errors.OpError, OSError) as e:
            candidates = self.candidates()
            raise CheckpointWriteError(
                f"Writing the checkpoint of step {step} to {self.directory} failed: "
                f"{' '.join(str(getattr(e, 'message', e)).split())[:300]}. The last complete checkpoint is "
                f"{candidates[0] if candidates else 'none'}; fix the cause (free space, permissions) and rerun "
                "the same command to resume from it."
            ) from e
        return path


def restore_model(model: tf_keras.Model, model_dir: str, which: str = "latest", **tracked: tf.Module) -> int:
    """Restores the model's weights (and `tracked` objects saved beside it) without the optimizer; returns the step.

    `which`: "latest" (the newest readable checkpoint of model_dir), "best" (model_dir/best/) or a
    checkpoint's path. For export, predict and evaluation. Raises CheckpointError if there is none.
    """
    checkpoint = tf.train.Checkpoint(model=model, **tracked)
    if which in ("latest", "best"):
        subdir = CHECKPOINT_DIR if which == "latest" else BEST_DIR
        path = restore_newest(checkpoint, model_dir, subdir)
    else:
        path = which
        try:
            _read_every_tensor(path)
        except (tf.errors.OpError, ValueError) as e:
            raise CheckpointError(
                f"--checkpoint={path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})."
            ) from None
        _restore(checkpoint, path, model_dir)
    if path is None:
        raise CheckpointError(
            f"--model_dir={model_dir} has no {'best ' if which == 'best' else ''}checkpoint"
            f"{' (set --config.train.best_metric while training)' if which == 'best' else ''}: train first, "
            "or point at a trained run."
        )
    logging.info("Restored the model from %s.", path)
    return int(_STEP_SUFFIX.search(path).group(1))


def complete_checkpoints(directory: str) -> list[str]:
    """Checkpoints named by `directory`'s state file whose index exists, newest first."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    paths = [p if os.path.isabs(p) or "://" in p else os.path.join(directory, p) for p in paths]
    return [p for p in reversed(paths) if tf.io.gfile.exists(f"{p}.index")]


def restore_newest(checkpoint: tf.train.Checkpoint, model_dir: str, subdir: str = CHECKPOINT_DIR) -> str | None:
    """Restores the newest checkpoint of model_dir that reads whole into `checkpoint`; returns its path or None.

    A checkpoint that cannot be read is skipped with a warning for the previous one;
    one that reads but does not fit the objects raises CheckpointError.
    """
    for path in complete_checkpoints(os.path.join(model_dir, subdir)):
        try:
            _read_every_tensor(path)
        except (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.OutOfRangeError, IndexError) as e:
            # Torn, or removed by the keep-K rotation while a continuous evaluator read it.
            logging.warning("Skipping unreadable checkpoint %s (%s).", path, str(e).splitlines()[0][:200])
            continue
        _restore(checkpoint, path, model_dir)
        return path
    return None


def _restore(checkpoint: tf.train.Checkpoint, path: str, model_dir: str) -> None:
    try:
        # Export and evaluation restore the model alone: the optimizer's values stay unread.
        checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise CheckpointError(
            f"--model_dir={model_dir} holds {path}, which does not fit the configured model "
            f"({str(e).splitlines()[0][:300]}). Use a new --model_dir, or the config it was trained "
            "with (config.json there)."
        ) from e


def _worker_dir(model_dir: str, worker_id: int) -> str:
    """A non-chief worker's local scratch directory: named after model_dir, so a restarted worker on the
    same machine finds (and removes) what a killed one left."""
    name = model_dir if "://" in model_dir else os.path.abspath(model_dir)
    run = hashlib.sha256(name.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"bert-trainer-{run}-worker-{worker_id}")


def _read_every_tensor(path: str) -> None:
    """Reads the whole checkpoint, so a torn or corrupted file fails here, before any variable is assigned.

    The reader checks each tensor's length and CRC32C against the index; restoring
    instead would assign variables one by one and could stop half-way.
    """
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
