"""Multi-label classification: any number of labels per text (or pair), one sigmoid each."""

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from trainer.data.examples import LIST_SEPARATOR
from trainer.tasks import labels, metrics
from trainer.tasks.base import Metrics, Predictions, Task


class MultilabelClassificationTask(Task):
    """Binary cross-entropy per label, summed over the labels; micro- and macro-F1 at `task.threshold`
    and each label's precision, recall, F1 and ROC-AUC.

    An example's labels are a JSON list, or a CSV field split at `data.label_delimiter`.
    """

    needs_label_names = True
    metric_names = ("loss", "micro_f1", "macro_f1", "auc")
    progress_metrics = ("loss", "micro_f1")

    def fit(self, labels_read: np.ndarray, ids: np.ndarray) -> None:
        names = labels.names_of(labels_read, ids, several=True)
        self.label_names = labels.vocabulary(names, ids, self.label_names, self.task_config.num_classes)

    def encode_labels(self, labels_read: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return labels.multi_hot(labels.names_of(labels_read, ids, several=True), ids, self.label_names)

    def label_encoder(self) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        table = labels.lookup_table(self.label_names)
        delimiter = self.data_config.label_delimiter or LIST_SEPARATOR
        return lambda label: labels.encode_multi_hot(label, table, len(self.label_names), delimiter)

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def per_example_loss(self, labels_: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels_, logits=tf.cast(outputs, tf.float32))
        return tf.reduce_sum(losses, axis=-1)

    def build_metrics(self, evaluation: bool = False) -> Metrics:
        threshold = self.task_config.threshold
        kinds = {
            "loss": tf_keras.metrics.Mean,
            "counts": lambda **kwargs: metrics.LabelCounts(self.num_outputs, threshold, **kwargs),
        }
        if evaluation:
            kinds.update(
                # Each label's ROC from 200 thresholds (multi_label keeps them apart).
                auc=lambda **kwargs: tf_keras.metrics.AUC(
                    num_thresholds=200, multi_label=True, num_labels=self.num_outputs, **kwargs
                ),
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
            elif name == "auc":
                # A weight per label: AUC takes one of the labels' shape.
                metric.update_state(
                    labels_, probabilities, sample_weight=weights[:, tf.newaxis] * tf.ones_like(labels_)
                )
            else:
                metric.update_state(labels_, probabilities, sample_weight=weights)

    def aggregate(self, metrics_: Metrics, predictions: Predictions | None = None) -> dict[str, Any]:
        true_positives, false_positives, false_negatives = metrics_["counts"].result().numpy()
        precision, recall, f1 = metrics.f1_scores(true_positives, false_positives, false_negatives)
        _, _, micro = metrics.f1_scores(
            *(np.array([column.sum()]) for column in (true_positives, false_positives, false_negatives))
        )
        results = {"loss": float(metrics_["loss"].result()), "micro_f1": float(micro[0]), "macro_f1": float(f1.mean())}
        if "auc" in metrics_:
            auc = label_aucs(metrics_["auc"])
            results["auc"] = float(auc.mean())
            results["num_examples"] = int(metrics_["num_examples"].result())
            results["per_label"] = metrics.per_label(
                self.label_names,
                precision=precision,
                recall=recall,
                f1=f1,
                auc=auc,
                support=true_positives + false_negatives,
            )
        return results

    def serving_outputs(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = tf.sigmoid(outputs)
        chosen = probabilities >= self.task_config.threshold
        names = tf.broadcast_to(tf.constant(self.label_names), tf.shape(probabilities))
        # The predicted labels of each text, in output order, joined by commas ("" for none).
        joined = tf.strings.reduce_join(tf.ragged.boolean_mask(names, chosen), axis=-1, separator=",")
        return {"probabilities": probabilities, "labels": joined}

    def format_predictions(self, outputs: dict[str, np.ndarray]) -> list[str]:
        return [
            f"{joined.decode() or '-'}\t" + " ".join(f"{p:.4f}" for p in probabilities)
            for joined, probabilities in zip(outputs["labels"], outputs["probabilities"])
        ]


def label_aucs(auc: tf_keras.metrics.AUC) -> np.ndarray:
    """Each label's ROC-AUC from a multi_label AUC metric's counts (trapezoids over its thresholds)."""
    tp, fp, tn, fn = (
        v.numpy() for v in (auc.true_positives, auc.false_positives, auc.true_negatives, auc.false_negatives)
    )
    tpr = tp / np.maximum(tp + fn, 1e-12)
    fpr = fp / np.maximum(fp + tn, 1e-12)
    # Thresholds rise with the index, so the rates fall: integrate from the last point back to the first.
    return np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2, axis=0)
