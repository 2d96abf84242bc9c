"""Regression: one score per text (or pair), such as a star rating."""

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from trainer.tasks import labels, metrics
from trainer.tasks.base import Metrics, Predictions, Task

# Points of the predicted-vs-true scatter kept in metrics.json for the report.
SCATTER_POINTS = 2000


class TargetScale(tf_keras.layers.Layer):
    """outputs * std + mean, with mean and std kept as (untrained) weights: checkpointed and exported,
    so a model trained on normalised targets answers in the targets' own units."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kwargs):
        super().__init__(name=kwargs.pop("name", "target_scale"), dtype="float32", **kwargs)
        self._initial = (mean, std)

    def build(self, input_shape):
        mean, std = self._initial
        self.mean = self.add_weight("mean", shape=(), initializer=tf_keras.initializers.Constant(mean), trainable=False)
        self.std = self.add_weight("std", shape=(), initializer=tf_keras.initializers.Constant(std), trainable=False)
        super().build(input_shape)

    def call(self, outputs: tf.Tensor) -> tf.Tensor:
        return outputs * self.std + self.mean


class RegressionTask(Task):
    """Mean squared error on one output; MSE, MAE, Pearson's and Spearman's correlations, the share of
    predictions within one unit of the target, and a predicted-vs-true scatter.

    With `task.normalize_targets`, the model learns targets scaled to mean 0 and
    deviation 1 (the training data's) and its output is scaled back inside it.
    """

    metric_names = ("loss", "mae", "mse", "pearson", "spearman", "within_one")
    progress_metrics = ("loss", "mae")
    collects_predictions = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.target_mean, self.target_std = 0.0, 1.0

    def fit(self, labels_read: np.ndarray, ids: np.ndarray) -> None:
        targets = self.encode_labels(labels_read, ids)
        if self.task_config.normalize_targets:
            self.target_mean = float(targets.mean())
            self.target_std = float(targets.std()) or 1.0

    def encode_labels(self, labels_read: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return np.array([labels.number(v, w) for v, w in zip(labels_read, ids)], np.float32)

    def label_encoder(self) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        return labels.encode_number

    @property
    def num_outputs(self) -> int:
        return 1

    def output_transform(self) -> tf_keras.layers.Layer:
        return TargetScale(self.target_mean, self.target_std)

    def per_example_loss(self, labels_: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        # In normalised units: the gradient is that of the normalised targets' squared error.
        return tf.square((labels_ - tf.cast(outputs, tf.float32)) / self.target_std)

    def build_metrics(self, evaluation: bool = False) -> Metrics:
        kinds = {
            "loss": tf_keras.metrics.Mean,
            "mae": tf_keras.metrics.MeanAbsoluteError,
            "moments": metrics.Moments,
        }
        if evaluation:
            kinds.update(mse=tf_keras.metrics.MeanSquaredError, num_examples=tf_keras.metrics.Sum)
        return {name: kind(name=name, dtype="float32") for name, kind in kinds.items()}

    def update_metrics(
        self, metrics_: Metrics, labels_: tf.Tensor, outputs: tf.Tensor, per_example_loss: tf.Tensor, weights: tf.Tensor
    ) -> None:
        outputs = tf.cast(outputs, tf.float32)
        for name, metric in metrics_.items():
            if name == "loss":
                metric.update_state(per_example_loss, sample_weight=weights)
            elif name == "num_examples":
                metric.update_state(weights)
            elif name == "moments":
                metric.update_state(labels_, outputs, sample_weight=weights)
            else:  # Keras' error metrics average over a last axis: one value per example.
                metric.update_state(labels_[:, tf.newaxis], outputs[:, tf.newaxis], sample_weight=weights)

    def aggregate(self, metrics_: Metrics, predictions: Predictions | None = None) -> dict[str, Any]:
        results = {name: float(metrics_[name].result()) for name in ("loss", "mae")}
        results["pearson"] = metrics.pearson(metrics_["moments"].result().numpy())
        if "mse" not in metrics_:
            return results
        results["mse"] = float(metrics_["mse"].result())
        results["num_examples"] = int(metrics_["num_examples"].result())
        if predictions is not None and len(predictions.labels):
            targets, predicted = predictions.labels, predictions.outputs
            results["spearman"] = metrics.spearman(targets, predicted)
            results["within_one"] = float(np.mean(np.abs(predicted - targets) <= 1.0))
            keep = np.random.default_rng(0).permutation(len(targets))[:SCATTER_POINTS]
            results["scatter"] = {"true": targets[keep].tolist(), "predicted": predicted[keep].tolist()}
        return results

    def serving_outputs(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"score": outputs}

    def format_predictions(self, outputs: dict[str, np.ndarray]) -> list[str]:
        return [f"{score:.4f}" for score in outputs["score"].tolist()]
