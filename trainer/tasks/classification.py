"""Classification of one text (or a pair) into one of two labels (binary) or one of many (multiclass)."""

from collections.abc import Callable
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from trainer.tasks import labels, metrics
from trainer.tasks.base import Metrics, Predictions, Task

_CONFUSION_COUNTS = ("true_positives", "false_positives", "true_negatives", "false_negatives")
# Binary labels given as 0/1 are shown by these names (IMDb polarity: neg 0, pos 1).
BINARY_NAMES = ("negative", "positive")


class BinaryClassificationTask(Task):
    """Sigmoid cross-entropy on one logit; accuracy, ROC-AUC, precision, recall, F1 and the confusion matrix.

    Labels are 0/1 (numbers, or strings such as "1.0"), or two names (the second
    is the positive class: sorted, or as `task.labels` orders them).
    """

    metric_names = ("loss", "accuracy", "auc", "precision", "recall", "f1")
    progress_metrics = ("loss", "accuracy")

    # Whether the data label by 0/1 (each label then checked as it is encoded, naming its line) or by names.
    zero_one = True

    def fit(self, labels_read: np.ndarray, ids: np.ndarray) -> None:
        names = labels.names_of(labels_read, ids)
        self.zero_one = labels.is_number(names[0][0])
        if self.zero_one:
            self.label_names = self.label_names or BINARY_NAMES
            # One class is allowed, but said. (A label other than 0 or 1 is refused, naming its line, when
            # encoded; a stream's are skipped with data.skip_corrupt_records.)
            values = {float(name) for example in names for name in example}
            if len(values) == 1 and values <= {0.0, 1.0}:
                logging.warning(
                    "All %d training examples have label %d: the classifier has nothing to tell apart.",
                    len(ids),
                    int(values.pop()),
                )
        else:
            self.label_names = labels.vocabulary(names, ids, self.label_names, num_classes=2)

    def encode_labels(self, labels_read: np.ndarray, ids: np.ndarray) -> np.ndarray:
        if self.zero_one:
            return np.array([labels.binary(v, w) for v, w in zip(labels_read, ids)], np.float32)
        return labels.indices(labels.names_of(labels_read, ids), ids, self.label_names).astype(np.float32)

    def label_encoder(self) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        if self.zero_one:
            return labels.encode_binary
        table = labels.lookup_table(self.label_names)

        def encode(label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            index, ok = labels.encode_index(label, table)
            return tf.cast(index, tf.float32), ok

        return encode

    @property
    def num_outputs(self) -> int:
        return 1

    def per_example_loss(self, labels_: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels_, logits=tf.cast(outputs, tf.float32))

    def build_metrics(self, evaluation: bool = False) -> Metrics:
        """Loss, accuracy and ROC-AUC; evaluation adds precision, recall and the confusion
        counts at 0.5, and the number of examples seen."""
        # float32 under any mixed-precision policy: counts and sums need the range.
        kinds = {
            "loss": tf_keras.metrics.Mean,
            "accuracy": tf_keras.metrics.BinaryAccuracy,
            # 200 thresholds: its counters also give the ROC curve (see roc_curve()).
            "auc": lambda **kwargs: tf_keras.metrics.AUC(num_thresholds=200, **kwargs),
        }
        if evaluation:
            kinds.update(
                precision=tf_keras.metrics.Precision,
                recall=tf_keras.metrics.Recall,
                true_positives=tf_keras.metrics.TruePositives,
                false_positives=tf_keras.metrics.FalsePositives,
                true_negatives=tf_keras.metrics.TrueNegatives,
                false_negatives=tf_keras.metrics.FalseNegatives,
                num_examples=tf_keras.metrics.Sum,
            )
        return {name: kind(name=name, dtype="float32") for name, kind in kinds.items()}

    def update_metrics(
        self, metrics_: Metrics, labels_: tf.Tensor, outputs: tf.Tensor, per_example_loss: tf.Tensor, weights: tf.Tensor
    ) -> None:
        probabilities = tf.sigmoid(tf.cast(outputs, tf.float32))
        for name, metric in metrics_.items():
            if name == "loss":
                metric.update_state(per_example_loss, sample_weight=weights)
            elif name == "num_examples":
                metric.update_state(weights)
            else:
                metric.update_state(labels_, probabilities, sample_weight=weights)

    def aggregate(self, metrics_: Metrics, predictions: Predictions | None = None) -> dict[str, Any]:
        """Scalars, with F1 from precision and recall; for evaluation metrics also the confusion
        matrix at 0.5, the number of examples and the ROC curve."""
        results = {name: float(metric.result()) for name, metric in metrics_.items()}
        if "precision" in results:
            precision, recall = results["precision"], results["recall"]
            results["f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if "num_examples" in results:
            results["confusion_matrix"] = {name: int(results.pop(name)) for name in _CONFUSION_COUNTS}
            results["num_examples"] = int(results["num_examples"])
            results["roc_curve"] = roc_curve(metrics_["auc"])
        return results

    def serving_outputs(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probability": tf.sigmoid(outputs)}

    def format_predictions(self, outputs: dict[str, np.ndarray]) -> list[str]:
        negative, positive = self.label_names or BINARY_NAMES
        return [
            f"{positive if probability >= 0.5 else negative}\t{probability:.4f}"
            for probability in outputs["probability"].tolist()
        ]


def roc_curve(auc: tf_keras.metrics.AUC) -> dict[str, list[float]]:
    """False- and true-positive rates at the AUC metric's thresholds (highest threshold first)."""
    tp, fp, tn, fn = (
        v.numpy() for v in (auc.true_positives, auc.false_positives, auc.true_negatives, auc.false_negatives)
    )
    tpr = tp / np.maximum(tp + fn, 1)
    fpr = fp / np.maximum(fp + tn, 1)
    return {
        "threshold": [float(t) for t in auc.thresholds[::-1]],
        "fpr": fpr[::-1].tolist(),
        "tpr": tpr[::-1].tolist(),
    }


class MulticlassClassificationTask(Task):
    """Softmax over the labels, sparse cross-entropy; accuracy, macro-F1, per-class figures and the
    confusion matrix. Ordinal labels (numbers, such as star ratings) also get the mean absolute error
    of the predicted label and the share within one of the true one."""

    needs_label_names = True
    metric_names = ("loss", "accuracy", "macro_f1", "mae", "within_one")
    progress_metrics = ("loss", "accuracy")

    def fit(self, labels_read: np.ndarray, ids: np.ndarray) -> None:
        names = labels.names_of(labels_read, ids)
        self.label_names = labels.vocabulary(names, ids, self.label_names, self.task_config.num_classes)

    def encode_labels(self, labels_read: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return labels.indices(labels.names_of(labels_read, ids), ids, self.label_names)

    def label_encoder(self) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        table = labels.lookup_table(self.label_names)
        return lambda label: labels.encode_index(label, table)

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def per_example_loss(self, labels_: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(labels_, tf.int32), logits=tf.cast(outputs, tf.float32)
        )

    def build_metrics(self, evaluation: bool = False) -> Metrics:
        kinds = {"loss": tf_keras.metrics.Mean, "accuracy": tf_keras.metrics.SparseCategoricalAccuracy}
        if evaluation:
            kinds.update(
                confusion=lambda **kwargs: metrics.ConfusionMatrix(self.num_outputs, **kwargs),
                num_examples=tf_keras.metrics.Sum,
            )
        return {name: kind(name=name, dtype="float32") for name, kind in kinds.items()}

    def update_metrics(
        self, metrics_: Metrics, labels_: tf.Tensor, outputs: tf.Tensor, per_example_loss: tf.Tensor, weights: tf.Tensor
    ) -> None:
        for name, metric in metrics_.items():
            if name == "loss":
                metric.update_state(per_example_loss, sample_weight=weights)
            elif name == "num_examples":
                metric.update_state(weights)
            else:
                metric.update_state(labels_, tf.cast(outputs, tf.float32), sample_weight=weights)

    def aggregate(self, metrics_: Metrics, predictions: Predictions | None = None) -> dict[str, Any]:
        results = {name: float(metrics_[name].result()) for name in ("loss", "accuracy")}
        if "confusion" not in metrics_:
            return results
        counts = metrics_["confusion"].result().numpy()
        true_positives = np.diag(counts)
        precision, recall, f1 = metrics.f1_scores(
            true_positives, counts.sum(axis=0) - true_positives, counts.sum(axis=1) - true_positives
        )
        results["macro_f1"] = float(f1.mean())
        if all(labels.is_number(n) for n in self.label_names):
            # Ordinal labels: how far the predicted label lands from the true one, in label units.
            values = np.array([float(n) for n in self.label_names])
            distance = np.abs(values[:, np.newaxis] - values[np.newaxis, :])
            total = max(counts.sum(), 1.0)
            results["mae"] = float((counts * distance).sum() / total)
            results["within_one"] = float(counts[distance <= 1].sum() / total)
        results["num_examples"] = int(metrics_["num_examples"].result())
        results["per_class"] = metrics.per_label(
            self.label_names, precision=precision, recall=recall, f1=f1, support=counts.sum(axis=1)
        )
        results["confusion_matrix"] = {"labels": list(self.label_names), "counts": counts.astype(int).tolist()}
        return results

    def serving_outputs(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        names = tf.constant(self.label_names)
        return {"probabilities": tf.nn.softmax(outputs), "label": tf.gather(names, tf.argmax(outputs, axis=-1))}

    def format_predictions(self, outputs: dict[str, np.ndarray]) -> list[str]:
        return [
            f"{label.decode()}\t{probabilities.max():.4f}"
            for label, probabilities in zip(outputs["label"], outputs["probabilities"])
        ]
