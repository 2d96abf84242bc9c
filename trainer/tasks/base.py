"""The task interface: what one kind of fine-tuning job adds to an encoder, in the spirit of Model Garden's Task.

A task knows how labels are encoded, the head on the encoder, the loss, the
metrics and how their results are aggregated, and what the serving model
returns. The train and validation steps of one replica are written here once
in terms of those; the distributed loop (trainer/training/) calls them and
names no metric of any task. Tasks are registered by `task.type` in
trainer/tasks/registry.py.
"""

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from trainer.models.classifier import Classifier
from trainer.models.family import EncoderFamily
from trainer.models.tokenizer import Tokenizer, Truncation

INPUT_KEYS = ("input_word_ids", "input_mask", "input_type_ids")
Metrics = dict[str, tf_keras.metrics.Metric]


class Task(abc.ABC):
    """One kind of job on one encoder family, for one run."""

    # Scalar results shown on each progress line, in order.
    progress_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    # dtype of the encoded labels the input pipeline feeds to the steps.
    label_dtype: ClassVar[tf.DType] = tf.float32

    def __init__(self, encoder: EncoderFamily, model_config: Any, data_config: Any):
        self.encoder = encoder
        self.model_config = model_config
        self.seq_length = data_config.seq_length
        self.truncation = Truncation(data_config.truncation, data_config.head_fraction)

    # ----- inputs -----

    @property
    @abc.abstractmethod
    def num_outputs(self) -> int:
        """Logits per example."""

    def encode_labels(self, labels: np.ndarray) -> np.ndarray:
        """Labels as read from the data -> the array the steps take (dtype `label_dtype`)."""
        return np.asarray(labels, dtype=self.label_dtype.as_numpy_dtype)

    def build_tokenizer(self) -> Tokenizer:
        return self.encoder.build_tokenizer(self.truncation)

    def dummy_inputs(self) -> dict[str, tf.Tensor]:
        return {key: tf.ones([1, self.seq_length], tf.int32) for key in INPUT_KEYS}

    # ----- model -----

    def build_model(self) -> Classifier:
        """The encoder with this task's head, variables created and pretrained weights loaded.

        Call inside `strategy.scope()` so variables are mirrored.
        """
        config = self.model_config
        trainable = not config.freeze_encoder
        encoder = self.encoder.build_encoder(trainable)
        model = Classifier(encoder, config.head_dropout_rate, config.head_hidden_size, self.num_outputs)
        model(self.dummy_inputs())
        self.encoder.load_pretrained(encoder)
        logging.info(
            "Model: %s%s, %s parameters (%s trainable).",
            self.encoder.describe(),
            " (frozen)" if not trainable else "",
            f"{model.count_params():,}",
            f"{sum(int(tf.size(v)) for v in model.trainable_variables):,}",
        )
        return model

    # ----- losses and metrics -----

    @abc.abstractmethod
    def per_example_loss(self, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """Loss of each example, float32 [batch]."""

    @abc.abstractmethod
    def build_metrics(self, evaluation: bool = False) -> Metrics:
        """Keras metrics (create inside `strategy.scope()`); `evaluation` adds what only evaluation reports.

        Keras metrics sum their state over replicas and workers when read, so a
        sharded evaluation reports the same numbers as a single-device one.
        """

    @abc.abstractmethod
    def update_metrics(
        self, metrics: Metrics, labels: tf.Tensor, outputs: tf.Tensor, per_example_loss: tf.Tensor, weights: tf.Tensor
    ) -> None:
        """Adds one batch; weight 0 marks padding slots."""

    @abc.abstractmethod
    def aggregate(self, metrics: Metrics) -> dict[str, Any]:
        """The results of `metrics`: float scalars (summaries and logs), ints (counts) and
        structured results such as a confusion matrix (metrics.json)."""

    # ----- steps of one replica -----

    def train_step(
        self,
        model: tf_keras.Model,
        features: dict[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor,
        global_batch_size: int,
        scale_loss: Callable[[tf.Tensor], tf.Tensor],
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """Forward and backward pass: (loss, outputs, per-example loss, gradients of the scaled loss).

        The loss is scaled by the global batch, so summing it over replicas gives the mean.
        """
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            per_example_loss = self.per_example_loss(labels, outputs) * weights
            loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
            scaled_loss = scale_loss(loss)
        # Embedding gradients arrive as IndexedSlices; dense tensors all-reduce efficiently.
        gradients = [tf.convert_to_tensor(g) for g in tape.gradient(scaled_loss, model.trainable_variables)]
        return loss, outputs, per_example_loss, gradients

    def validation_step(
        self,
        outputs_fn: Callable[[dict[str, tf.Tensor]], tf.Tensor],
        features: dict[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor,
        metrics: Metrics,
    ) -> None:
        """Adds one batch of model outputs to `metrics`."""
        outputs = outputs_fn(features)
        self.update_metrics(metrics, labels, outputs, self.per_example_loss(labels, outputs), weights)

    # ----- serving -----

    @abc.abstractmethod
    def serving_outputs(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """The exported signature's outputs, from the model's float32 outputs."""

    @abc.abstractmethod
    def format_predictions(self, outputs: dict[str, np.ndarray]) -> list[str]:
        """One line per text for --mode=predict, from the serving outputs (without the text)."""
