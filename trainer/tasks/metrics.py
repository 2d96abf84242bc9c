"""Streaming metrics the tasks share, and the numbers derived from their counts.

Keras metrics keep sums in variables that tf.distribute adds up over replicas
and workers when read, so each of these gives the same result sharded or not.
Padding slots of evaluation batches carry weight 0 and count nowhere.
"""

import numpy as np
import tensorflow as tf
import tf_keras


class ConfusionMatrix(tf_keras.metrics.Metric):
    """Weighted counts [true class, predicted class] of a C-class classifier (argmax of its logits)."""

    def __init__(self, num_classes: int, name: str = "confusion_matrix", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.counts = self.add_weight("counts", shape=(num_classes, num_classes), initializer="zeros")

    def update_state(self, labels: tf.Tensor, logits: tf.Tensor, sample_weight: tf.Tensor | None = None) -> None:
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        self.counts.assign_add(
            tf.math.confusion_matrix(
                tf.cast(labels, tf.int32), predicted, self.num_classes, weights=sample_weight, dtype=self.dtype
            )
        )

    def result(self) -> tf.Tensor:
        return self.counts

    def reset_state(self) -> None:
        self.counts.assign(tf.zeros_like(self.counts))


class LabelCounts(tf_keras.metrics.Metric):
    """Per-label true/false positives and false negatives of a multi-label classifier at `threshold`: [3, L]."""

    def __init__(self, num_labels: int, threshold: float, name: str = "label_counts", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.counts = self.add_weight("counts", shape=(3, num_labels), initializer="zeros")

    def update_state(self, labels: tf.Tensor, probabilities: tf.Tensor, sample_weight: tf.Tensor) -> None:
        predicted = tf.cast(probabilities >= self.threshold, self.dtype)
        actual = tf.cast(labels, self.dtype)
        weight = tf.cast(sample_weight, self.dtype)[:, tf.newaxis]
        self.counts.assign_add(
            tf.stack(
                [
                    tf.reduce_sum(weight * predicted * actual, axis=0),
                    tf.reduce_sum(weight * predicted * (1 - actual), axis=0),
                    tf.reduce_sum(weight * (1 - predicted) * actual, axis=0),
                ]
            )
        )

    def result(self) -> tf.Tensor:
        return self.counts

    def reset_state(self) -> None:
        self.counts.assign(tf.zeros_like(self.counts))


class Moments(tf_keras.metrics.Metric):
    """Weighted sums of x, y, x^2, y^2 and xy over (target, prediction) pairs, and their weight: Pearson's r."""

    def __init__(self, name: str = "moments", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sums = self.add_weight("sums", shape=(6,), initializer="zeros")

    def update_state(self, targets: tf.Tensor, predictions: tf.Tensor, sample_weight: tf.Tensor) -> None:
        x, y = tf.cast(targets, self.dtype), tf.cast(predictions, self.dtype)
        w = tf.cast(sample_weight, self.dtype)
        self.sums.assign_add(tf.stack([tf.reduce_sum(w * v) for v in (tf.ones_like(x), x, y, x * x, y * y, x * y)]))

    def result(self) -> tf.Tensor:
        return self.sums

    def reset_state(self) -> None:
        self.sums.assign(tf.zeros_like(self.sums))


def f1_scores(true_positives: np.ndarray, false_positives: np.ndarray, false_negatives: np.ndarray):
    """Precision, recall and F1 per class (0 where undefined)."""
    precision = true_positives / np.maximum(true_positives + false_positives, 1e-12)
    recall = true_positives / np.maximum(true_positives + false_negatives, 1e-12)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return precision, recall, f1


def per_label(names: tuple[str, ...], **columns: np.ndarray) -> dict[str, dict[str, float]]:
    """{name: {column: value}} of per-class (per-label) figures, for metrics.json."""
    return {name: {column: float(values[i]) for column, values in columns.items()} for i, name in enumerate(names)}


def pearson(sums: np.ndarray) -> float:
    """Pearson's correlation from `Moments` sums (0 when either side is constant)."""
    n, sx, sy, sxx, syy, sxy = (float(v) for v in sums)
    if n <= 0:
        return 0.0
    covariance, var_x, var_y = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
    return covariance / np.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else 0.0


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranked = np.empty(len(values), np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranked[order[start:end]] = (start + end + 1) / 2
    return ranked


def spearman(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the ranks (0 when either side is constant)."""
    x, y = ranks(targets), ranks(predictions)
    sums = np.array([len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])
    return pearson(sums)
