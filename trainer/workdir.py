"""Guards on --model_dir before any expensive work: one run at a time, and room to write.

The lock is an advisory `flock` on model_dir/.lock, held for the life of the
process: the kernel drops it when the process dies however it dies, so a
crashed run never leaves it stuck. Only local directories can be locked or
sized; for remote ones (gs://...) both checks are skipped with a note.
"""

import datetime
import fcntl
import os
import shutil
import socket

from absl import logging

from trainer.config import ConfigError

LOCK_FILE = ".lock"
# A write probe, removed at once.
_PROBE_FILE = ".write-probe"

# Held open for the process's lifetime; closing it would release the lock.
_held_locks: dict[str, int] = {}


def _is_remote(path: str) -> bool:
    return "://" in path


def lock(model_dir: str) -> None:
    """Takes model_dir's lock or raises ConfigError naming the run that holds it."""
    if _is_remote(model_dir):
        logging.info("--model_dir=%s is remote: no lock against concurrent runs.", model_dir)
        return
    path = os.path.abspath(os.path.join(model_dir, LOCK_FILE))
    if path in _held_locks:
        return
    try:
        os.makedirs(model_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"--model_dir={model_dir} is not writable: {e.strerror or e}.") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(
            f"--model_dir={model_dir} is in use by {holder}. Wait for that run to finish, stop it, "
            "or use another --model_dir."
        ) from None
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} (started {started})\n".encode(), 0)
    _held_locks[path] = fd


def check_writable(model_dir: str, needed_bytes: int) -> None:
    """Raises ConfigError if model_dir cannot be written or lacks `needed_bytes` of free space."""
    if _is_remote(model_dir):
        return
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, _PROBE_FILE)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"--model_dir={model_dir} is not writable: {e.strerror or e}.") from e
    free = shutil.disk_usage(model_dir).free
    if free < needed_bytes:
        raise ConfigError(
            f"--model_dir={model_dir} has {free / 2**20:.0f} MiB free; checkpoints and the export of this "
            f"model need about {needed_bytes / 2**20:.0f} MiB. Free some space or use another --model_dir."
        )
