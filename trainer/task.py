"""The text-classification task: tokenizer and model from the config, loss and metrics."""

import dataclasses
import os

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tf_keras

from trainer.config import ConfigError
from trainer.data import tokenizers
from trainer.models import hub_loading
from trainer.models.albert import convert_hf as albert_convert_hf
from trainer.models.albert.encoder import AlbertConfig, AlbertEncoder
from trainer.models.bert import convert_hf
from trainer.models.bert.encoder import BertConfig, BertEncoder
from trainer.models.classifier import Classifier

INPUT_KEYS = ("input_word_ids", "input_mask", "input_type_ids")


@dataclasses.dataclass
class ClassificationTask:
    """Builds the pieces that depend on the model config, in a fixed order."""

    config: ml_collections.ConfigDict

    def __post_init__(self):
        model = self.config.model
        self.seq_length = self.config.data.seq_length
        if model.encoder in ("bert", "albert"):
            self._pretrained_dir = convert_hf.resolve_dir(model.pretrained_dir) if model.pretrained_dir else ""
            native = self._native_bert_config if model.encoder == "bert" else self._native_albert_config
            self._encoder_config = native()
            if self.seq_length > self._encoder_config.max_position_embeddings:
                raise ConfigError(
                    f"--config.data.seq_length={self.seq_length} exceeds the encoder's "
                    f"{self._encoder_config.max_position_embeddings} position embeddings."
                )

    def _vocab_path(self) -> str:
        # ALBERT's vocabulary is its SentencePiece model.
        default = albert_convert_hf.SPIECE_FILE if self.config.model.encoder == "albert" else convert_hf.VOCAB_FILE
        path = self.config.model.vocab_path or os.path.join(self._pretrained_dir, default)
        if not tf.io.gfile.exists(path):
            raise ConfigError(f"Vocabulary {path} not found (--config.model.vocab_path / pretrained_dir).")
        return path

    def _native_bert_config(self) -> BertConfig:
        if self._pretrained_dir:
            return convert_hf.load_config(self._pretrained_dir)
        bert = self.config.model.bert
        with tf.io.gfile.GFile(self._vocab_path()) as f:
            vocab_size = sum(1 for _ in f)
        return BertConfig(vocab_size=vocab_size, **bert.to_dict())

    def _native_albert_config(self) -> AlbertConfig:
        if self._pretrained_dir:
            return albert_convert_hf.load_config(self._pretrained_dir)
        vocab_size = self.build_tokenizer().vocab_size
        return AlbertConfig(vocab_size=vocab_size, **self.config.model.albert.to_dict())

    def build_tokenizer(self) -> tokenizers.Tokenizer:
        model, data = self.config.model, self.config.data
        truncation = {"truncation": data.truncation, "head_fraction": data.head_fraction}
        if model.encoder == "hub":
            return tokenizers.HubPreprocessor(model.hub_preprocessor, self.seq_length, **truncation)
        kind = tokenizers.SentencePieceTokenizer if model.encoder == "albert" else tokenizers.WordPieceTokenizer
        return kind(self._vocab_path(), self.seq_length, model.lower_case, **truncation)

    def build_model(self) -> Classifier:
        """Builds the classifier, its variables created and pretrained weights loaded.

        Call inside `strategy.scope()` so variables are mirrored.
        """
        model_config = self.config.model
        trainable = not model_config.freeze_encoder
        if model_config.encoder == "hub":
            encoder = hub_loading.keras_layer(model_config.hub_encoder, "--config.model.hub_encoder", trainable)
        elif model_config.encoder == "albert":
            encoder = AlbertEncoder(self._encoder_config, pooled_output_only=True, trainable=trainable)
        else:
            encoder = BertEncoder(self._encoder_config, pooled_output_only=True, trainable=trainable)
        model = Classifier(encoder, model_config.head_dropout_rate, model_config.head_hidden_size)
        model(self.dummy_inputs())
        if model_config.encoder == "bert" and self._pretrained_dir:
            convert_hf.load_weights(encoder, self._pretrained_dir)
        elif model_config.encoder == "albert" and self._pretrained_dir:
            albert_convert_hf.load_weights(encoder, self._pretrained_dir)
        logging.info(
            "Model: %s encoder%s, %s parameters (%s trainable).",
            model_config.encoder,
            " (frozen)" if not trainable else "",
            f"{model.count_params():,}",
            f"{sum(int(tf.size(v)) for v in model.trainable_variables):,}",
        )
        return model

    def dummy_inputs(self) -> dict[str, tf.Tensor]:
        return {key: tf.ones([1, self.seq_length], tf.int32) for key in INPUT_KEYS}

    @staticmethod
    def per_example_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))

    @staticmethod
    def build_metrics(evaluation: bool = False) -> dict[str, tf_keras.metrics.Metric]:
        """Loss, accuracy and ROC-AUC; evaluation adds precision, recall and the confusion
        counts at 0.5, and the number of examples seen. Create inside `strategy.scope()`.

        Keras metrics sum their state over replicas and workers when read, so a
        sharded evaluation reports the same numbers as a single-device one.
        """
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
        metrics = {name: kind(name=name, dtype="float32") for name, kind in kinds.items()}
        return metrics

    @staticmethod
    def update_metrics(
        metrics: dict[str, tf_keras.metrics.Metric],
        labels: tf.Tensor,
        logits: tf.Tensor,
        per_example_loss: tf.Tensor,
        weights: tf.Tensor,
    ) -> None:
        """Adds one batch to metrics from `build_metrics`; weight 0 marks padding slots."""
        probabilities = tf.sigmoid(tf.cast(logits, tf.float32))
        for name, metric in metrics.items():
            if name == "loss":
                metric.update_state(per_example_loss, sample_weight=weights)
            elif name == "num_examples":
                metric.update_state(weights)
            else:
                metric.update_state(labels, probabilities, sample_weight=weights)


def summarize(metrics: dict[str, tf_keras.metrics.Metric]) -> dict[str, float]:
    """Scalar results of `metrics`, with F1 from precision and recall where both are present."""
    results = {name: float(metric.result()) for name, metric in metrics.items()}
    if "precision" in results:
        precision, recall = results["precision"], results["recall"]
        results["f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return results


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
