"""--profile_steps=A,B: a TensorFlow profiler trace of training steps A..B for TensorBoard's Profile tab.

The trace (an .xplane.pb per host under <model_dir>/train/plugins/profile/<run>/)
holds every op's time on every thread, the host's input pipeline and, on
GPUs, the kernels; BUILD.md says how to read it for this model.
"""

from absl import logging
import tensorflow as tf

from trainer.errors import UserError


def parse_steps(value: str | None) -> tuple[int, int] | None:
    """`A,B` (0 <= A < B) as a pair; None for no profiling. Raises UserError naming --profile_steps."""
    if not value:
        return None
    parts = value.split(",")
    try:
        start, stop = (int(part) for part in parts)
    except ValueError:
        start = stop = -1
    if len(parts) != 2 or not 0 <= start < stop:
        raise UserError(
            f"--profile_steps={value}: expected two step numbers A,B with 0 <= A < B, e.g. --profile_steps=20,25."
        )
    return start, stop


class StepProfiler:
    """Starts the profiler at step `start` and stops it at `stop` (chief only: one trace per run)."""

    def __init__(self, steps: tuple[int, int] | None, logdir: str, enabled: bool = True):
        self.steps = steps if enabled else None
        self.logdir = logdir
        self._active = False

    def boundaries(self) -> list[int]:
        """Steps the loop must stop at so that the trace covers exactly the asked steps."""
        return list(self.steps) if self.steps else []

    def at_step(self, step: int) -> None:
        """Called at each step boundary of the loop, before the next steps run."""
        if self.steps is None:
            return
        start, stop = self.steps
        if not self._active and start <= step < stop:
            logging.info("Profiling steps %d..%d into %s.", step, stop, self.logdir)
            tf.profiler.experimental.start(self.logdir)
            self._active = True
        elif self._active and step >= stop:
            self.stop()

    def stop(self) -> None:
        if self._active:
            tf.profiler.experimental.stop()
            self._active = False
            logging.info("Profiler trace written under %s/plugins/profile/.", self.logdir)
