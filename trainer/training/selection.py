"""Model selection: the best checkpoint by a validation metric, and early stopping.

After each evaluation, `observe` compares the watched metric with the best
so far; an improvement (by more than `min_delta`) writes the model's weights
to model_dir/best/ (a checkpoint directory of its own, which the keep-K
rotation of checkpoints/ never touches) and best/best.json with its step and
metrics. The tracker's state (best value and step, evaluations since,
whether training stopped early) lives in variables saved with every
checkpoint, so a resumed run continues the same count.
"""

import math
import os
from typing import Any

from absl import logging
import tensorflow as tf
import tf_keras

from trainer import strategy as strategy_lib
from trainer.config import TrainConfig
from trainer.run_dir import BEST_DIR, BEST_FILE, RunDirectory, write_json_atomically
from trainer.training.checkpointing import Checkpoints


class ModelSelection:
    """Keeps the best checkpoint of `config.best_metric` (when set) and decides on early stopping."""

    def __init__(
        self,
        config: TrainConfig,
        lower_is_better: frozenset[str],
        model: tf_keras.Model,
        strategy: tf.distribute.Strategy,
        run_dir: RunDirectory,
    ):
        self.metric = config.best_metric.removeprefix("validation/")
        self.patience = config.early_stopping_patience
        self.min_delta = config.min_delta
        minimize = config.best_mode == "min" or (config.best_mode == "auto" and self.metric in lower_is_better)
        self.sign = -1.0 if minimize else 1.0
        self.run_dir = run_dir
        with strategy.scope():
            # Saved with every checkpoint (see `variables`).
            self.best_value = tf.Variable(-math.inf, trainable=False, name="best_value")
            self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_step")
            self.evaluations_since = tf.Variable(0, dtype=tf.int64, trainable=False, name="evaluations_since_best")
            self.stopped = tf.Variable(False, trainable=False, name="stopped_early")
        self.checkpoints = Checkpoints(
            tf.train.Checkpoint(model=model),
            run_dir.path,
            keep=1,
            step_counter=None,
            is_chief=run_dir.is_chief,
            worker_id=strategy_lib.worker_id(strategy),
            num_workers=strategy_lib.num_workers(strategy),
            subdir=BEST_DIR,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.metric)

    def variables(self) -> dict[str, tf.Variable]:
        """The tracker's state, for the run's checkpoint."""
        return {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "evaluations_since_best": self.evaluations_since,
            "stopped_early": self.stopped,
        }

    def resume(self, record: dict[str, Any]) -> None:
        """Continues from best/best.json (a process that keeps no checkpoint of its own: an evaluator)."""
        if self.enabled and record.get("metric") == f"validation/{self.metric}":
            self.best_value.assign(self.sign * record["value"])
            self.best_step.assign(record["step"])

    def observe(self, step: int, results: dict[str, Any]) -> None:
        """Takes the validation results of `step` (the model holds the weights they came from)."""
        if not self.enabled:
            return
        value = results[self.metric]
        if self.sign * value > float(self.best_value.numpy()) + self.min_delta:
            self.best_value.assign(self.sign * value)
            self.best_step.assign(step)
            self.evaluations_since.assign(0)
            self.checkpoints.save(step)
            if self.run_dir.is_chief:
                scalars = {name: v for name, v in results.items() if isinstance(v, (int, float))}
                record = {"step": step, "metric": f"validation/{self.metric}", "value": value, "metrics": scalars}
                write_json_atomically(os.path.join(self.run_dir.path, BEST_DIR, BEST_FILE), record)
            logging.info("New best validation %s %.4f at step %d: saved to %s.", self.metric, value, step, BEST_DIR)
            return
        self.evaluations_since.assign_add(1)
        logging.info(
            "Validation %s %.4f at step %d; the best is %.4f at step %d (%d evaluation(s) since).",
            self.metric,
            value,
            step,
            self.sign * float(self.best_value.numpy()),
            int(self.best_step.numpy()),
            int(self.evaluations_since.numpy()),
        )
        if self.patience and int(self.evaluations_since.numpy()) >= self.patience:
            self.stopped.assign(True)
            logging.info(
                "Early stopping at step %d: %d evaluations without validation %s improving by more than %g "
                "(--config.train.early_stopping_patience). The best, step %d, is exported.",
                step,
                self.patience,
                self.metric,
                self.min_delta,
                int(self.best_step.numpy()),
            )

    @property
    def should_stop(self) -> bool:
        return bool(self.stopped.numpy())
