"""Binary text classification: one text, a 0/1 label, one logit (IMDb sentiment)."""

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from trainer.tasks.base import Metrics, Task

_CONFUSION_COUNTS = ("true_positives", "false_positives", "true_negatives", "false_negatives")


class BinaryClassificationTask(Task):
    """Sigmoid cross-entropy on one logit; accuracy, ROC-AUC, precision, recall, F1 and the confusion matrix."""

    progress_metrics = ("loss", "accuracy")

    @property
    def num_outputs(self) -> int:
        return 1

    def per_example_loss(self, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=tf.cast(outputs, tf.float32))

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
        self, metrics: Metrics, labels: tf.Tensor, outputs: tf.Tensor, per_example_loss: tf.Tensor, weights: tf.Tensor
    ) -> None:
        probabilities = tf.sigmoid(tf.cast(outputs, tf.float32))
        for name, metric in metrics.items():
            if name == "loss":
                metric.update_state(per_example_loss, sample_weight=weights)
            elif name == "num_examples":
                metric.update_state(weights)
            else:
                metric.update_state(labels, probabilities, sample_weight=weights)

    def aggregate(self, metrics: Metrics) -> dict[str, Any]:
        """Scalars, with F1 from precision and recall; for evaluation metrics also the confusion
        matrix at 0.5, the number of examples and the ROC curve."""
        results = {name: float(metric.result()) for name, metric in metrics.items()}
        if "precision" in results:
            precision, recall = results["precision"], results["recall"]
            results["f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if "num_examples" in results:
            results["confusion_matrix"] = {name: int(results.pop(name)) for name in _CONFUSION_COUNTS}
            results["num_examples"] = int(results["num_examples"])
            results["roc_curve"] = roc_curve(metrics["auc"])
        return results

    def serving_outputs(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probability": tf.sigmoid(outputs)}

    def format_predictions(self, outputs: dict[str, np.ndarray]) -> list[str]:
        return [
            f"{'positive' if probability >= 0.5 else 'negative'}\t{probability:.4f}"
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
