"""The layout of a run's model_dir, and the one object that writes its records.

  model_dir/
    .lock               flock held by the run (pid and host inside)
    config.json         the resolved config
    config_changes.json what each resume changed of it
    metrics.json        final metrics of each evaluated split, the step and what was trained
    checkpoints/        tf.train.CheckpointManager's directory (trainer/training/checkpointing.py)
    best/               the best checkpoint by train.best_metric, and best.json (trainer/training/selection.py)
    export/<step>/      serving SavedModels (trainer/serving/export.py): the best one when there is a best
    export_last/<step>/ the last step's, when it is not the best
    train/, eval/, eval_<split>/   TensorBoard summaries (the run's hyperparameters in model_dir itself)

Only the chief writes records and summaries; other workers get no-op
writers. The guards run before any expensive work: one run at a time (an
advisory `flock`, held for the life of the process, which the kernel drops
however the process dies) and room to write. Only local directories can be
locked or sized; for remote ones (gs://...) both checks are skipped with a
note. JSON records are written to a temporary name and renamed, so a reader
never sees a torn file.
"""

import datetime
import fcntl
import json
import os
import shutil
import socket
from typing import Any

from absl import logging
from tensorboard.plugins.hparams import api as hparams_api
import tensorflow as tf

from trainer.errors import UserError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
# Each resume that changed the config: its step and {key: [before, after]}.
CONFIG_CHANGES_FILE = "config_changes.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
# The best checkpoint by train.best_metric, and best.json (trainer/training/selection.py).
BEST_DIR = "best"
# The last step's export, when the best one is exported to export/.
LAST_EXPORT_DIR = "export_last"
BEST_FILE = "best.json"
EXPORT_DIR = "export"
TRAIN_SUMMARIES = "train"
# A write probe, removed at once.
_PROBE_FILE = ".write-probe"

# Held open for the process's lifetime; closing it would release the lock.
_held_locks: dict[str, int] = {}


class ModelDirError(UserError):
    """model_dir is in use, not writable or too full."""


def summaries_name(split: str) -> str:
    """Subdirectory of an evaluated split's summaries: validation curves in eval/, others in eval_<split>/."""
    return "eval" if split == "validation" else f"eval_{split}"


def write_json_atomically(path: str, payload: dict) -> None:
    """Writes to a temporary name, then renames: readers never see a torn file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _is_remote(path: str) -> bool:
    return "://" in path


class RunDirectory:
    """One run's model_dir; `is_chief` = this process writes its records and summaries."""

    def __init__(self, path: str, is_chief: bool = True):
        self.path = path
        self.is_chief = is_chief
        self.checkpoints = os.path.join(path, CHECKPOINT_DIR)
        self.export = os.path.join(path, EXPORT_DIR)
        self.export_last = os.path.join(path, LAST_EXPORT_DIR)
        # Created on first use, so nothing is written to model_dir before it is claimed.
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    # ----- claiming the directory -----

    def claim(self, needed_bytes: int) -> None:
        """Takes the lock and checks for room, before training writes anything (chief only)."""
        if not self.is_chief:
            return
        # Room first: a refusal leaves the directory as it was (the lock writes this run's pid).
        self._check_writable(needed_bytes)
        self._lock()

    def _lock(self) -> None:
        if _is_remote(self.path):
            logging.info("--model_dir=%s is remote: no lock against concurrent runs.", self.path)
            return
        path = os.path.abspath(os.path.join(self.path, LOCK_FILE))
        if path in _held_locks:
            return
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ModelDirError(f"--model_dir={self.path} is not writable: {e.strerror or e}.") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ModelDirError(
                f"--model_dir={self.path} is in use by {holder}. Wait for that run to finish, stop it, "
                "or use another --model_dir."
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} (started {started})\n".encode(), 0)
        _held_locks[path] = fd

    def _check_writable(self, needed_bytes: int) -> None:
        if _is_remote(self.path):
            return
        try:
            os.makedirs(self.path, exist_ok=True)
            probe = os.path.join(self.path, _PROBE_FILE)
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
            os.remove(probe)
        except OSError as e:
            raise ModelDirError(f"--model_dir={self.path} is not writable: {e.strerror or e}.") from e
        free = shutil.disk_usage(self.path).free
        if free < needed_bytes:
            raise ModelDirError(
                f"--model_dir={self.path} has {free / 2**20:.0f} MiB free; checkpoints and the export of this "
                f"model need about {needed_bytes / 2**20:.0f} MiB. Free some space or use another --model_dir."
            )

    # ----- records -----

    def write_config(self, values: dict[str, Any]) -> None:
        """config.json: the resolved config of the run (chief only)."""
        if self.is_chief:
            tf.io.gfile.makedirs(self.path)
            write_json_atomically(os.path.join(self.path, CONFIG_FILE), values)

    def record_config_changes(self, step: int, changes: dict[str, list]) -> None:
        """Adds a resume's config changes to config_changes.json (chief only)."""
        if self.is_chief and changes:
            path = os.path.join(self.path, CONFIG_CHANGES_FILE)
            history = self._read_json(CONFIG_CHANGES_FILE).get("resumes", [])
            write_json_atomically(path, {"resumes": [*history, {"step": step, "changes": changes}]})

    def read_config(self) -> dict[str, Any]:
        """The run's own config.json ({} before the run wrote one)."""
        return self._read_json(CONFIG_FILE)

    def read_metrics(self) -> dict[str, Any]:
        return self._read_json(METRICS_FILE)

    def read_best(self) -> dict[str, Any]:
        """best/best.json: the best checkpoint's step and validation metrics ({} before there is one)."""
        return self._read_json(os.path.join(BEST_DIR, BEST_FILE))

    def _read_json(self, name: str) -> dict[str, Any]:
        path = os.path.join(self.path, name)
        if not tf.io.gfile.exists(path):
            return {}
        try:
            with tf.io.gfile.GFile(path) as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            raise ModelDirError(f"{path} is not valid JSON ({e}); restore it or use another --model_dir.") from None

    def write_metrics(self, splits: dict[str, dict], **fields: Any) -> None:
        """Adds the final metrics of each split (and `fields` such as the step) to metrics.json (chief only).

        Splits and fields not given keep their earlier values, so --mode=evaluate
        on the test split leaves the validation results in place.
        """
        if self.is_chief:
            write_json_atomically(os.path.join(self.path, METRICS_FILE), {**self.read_metrics(), **splits, **fields})

    # ----- summaries -----

    def summaries_path(self, name: str) -> str:
        return os.path.join(self.path, name)

    def summary_writer(self, name: str) -> tf.summary.SummaryWriter:
        """The TensorBoard writer of model_dir/name; a no-op writer on non-chief workers."""
        if name not in self._writers:
            self._writers[name] = (
                tf.summary.create_file_writer(self.summaries_path(name))
                if self.is_chief
                else tf.summary.create_noop_writer()
            )
        return self._writers[name]

    def write_hparams(self, hparams: dict[str, bool | int | float | str]) -> None:
        """The run's key hyperparameters, for TensorBoard's HParams tab: `tensorboard --logdir` over
        several runs lists each with its values and its latest eval/ and train/ scalars."""
        writer = self.summary_writer(".")
        with writer.as_default():
            hparams_api.hparams(hparams, trial_id=os.path.basename(os.path.normpath(self.path)))
        writer.flush()

    def write_scalars(self, name: str, step: int, scalars: dict[str, float]) -> None:
        """One TensorBoard scalar per entry of `scalars`, at `step`, in model_dir/name."""
        writer = self.summary_writer(name)
        with writer.as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)
        writer.flush()
