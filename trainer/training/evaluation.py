"""Evaluation of a model on one split: its metrics through the task, its summaries and log line."""

import time
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from trainer.data.examples import Examples
from trainer.data.input_plan import InputPlan
from trainer.errors import ReadError
from trainer.run_dir import RunDirectory, summaries_name
from trainer.tasks.base import Predictions, Task
from trainer.training import steps


def _predictions(batches: list[list[np.ndarray]]) -> Predictions:
    """The labels and outputs of every real example of the gathered batches (padding slots dropped)."""
    labels, outputs, weights = (np.concatenate(column) for column in zip(*batches))
    real = weights > 0
    return Predictions(labels[real], outputs[real])


class Evaluator:
    """Evaluates `model` on whole splits, every example once, through the strategy."""

    def __init__(
        self,
        task: Task,
        model: tf_keras.Model,
        strategy: tf.distribute.Strategy,
        input_plan: InputPlan,
        run_dir: RunDirectory,
        global_batch_size: int,
        jit_compile: bool,
    ):
        self.task = task
        self.input_plan = input_plan
        self.run_dir = run_dir
        self.global_batch_size = global_batch_size
        with strategy.scope():
            self.metrics = task.build_metrics(evaluation=True)
        self.step_functions = steps.build_eval_step(task, model, self.metrics, strategy, jit_compile)

    def evaluate(self, examples: Examples, split_name: str, step: int) -> dict[str, Any]:
        """The task's results on `examples` (float scalars also as summaries at `step` and in the log)."""
        for metric in self.metrics.values():
            metric.reset_state()
        batches = self.input_plan.evaluation_batches(examples, split_name, self.global_batch_size)
        start = time.time()
        collected: list[list[np.ndarray]] = []
        try:
            for batch_index, inputs in enumerate(batches.batches, start=1):
                gathered = self.step_functions.run(inputs)
                if gathered is not None:
                    collected.append([value.numpy() for value in gathered])
                if batch_index % 50 == 0:
                    logging.info("eval %s: batch %d/%s", split_name, batch_index, batches.num_batches or "?")
        except tf.errors.OpError as e:
            reason = self.input_plan.read_error(examples, e)
            if reason is None:
                raise
            raise ReadError(f"{reason} (evaluating the {split_name} split at step {step}).") from None
        results = self.task.aggregate(self.metrics, _predictions(collected) if collected else None)
        scalars = {name: value for name, value in results.items() if isinstance(value, float)}
        logging.info(
            "eval %s at step %d: %s (%.1f examples/s)",
            split_name,
            step,
            "  ".join(f"{name} {value:.4f}" for name, value in scalars.items()),
            results.get("num_examples", 0) / max(time.time() - start, 1e-9),
        )
        self.run_dir.write_scalars(summaries_name(split_name), step, scalars)
        return results
