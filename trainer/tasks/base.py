"""The task interface: what one kind of fine-tuning job adds to an encoder, in the spirit of Model Garden's Task.

A task knows its labels (their vocabulary, learned from the training data
unless the config gives it, and how each label is encoded), the head on the
encoder, the loss, the metrics and how their results are aggregated, and
what the serving model returns. The train and validation steps of one
replica are written here once in terms of those; the distributed loop
(trainer/training/) calls them and names no metric of any task. Tasks are
registered by `task.type` in trainer/tasks/registry.py.
"""

import abc
from collections.abc import Callable
import dataclasses
from typing import Any, ClassVar

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from trainer.errors import UserError
from trainer.models.classifier import Classifier
from trainer.models.family import EncoderFamily
from trainer.models.tokenizer import Tokenizer, Truncation

INPUT_KEYS = ("input_word_ids", "input_mask", "input_type_ids")
Metrics = dict[str, tf_keras.metrics.Metric]


@dataclasses.dataclass(frozen=True)
class Predictions:
    """The labels and model outputs of every evaluated example (padding slots left out)."""

    labels: np.ndarray
    outputs: np.ndarray


class Task(abc.ABC):
    """One kind of job on one encoder family, for one run."""

    # Scalar results shown on each progress line, in order.
    progress_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    # The scalar results of an evaluation, any of which train.best_metric can watch.
    metric_names: ClassVar[tuple[str, ...]] = ("loss",)
    # Results that are better lower.
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "mae", "mse"})
    # Whether evaluation hands `aggregate` every (label, output) pair, for what counts cannot give.
    collects_predictions: ClassVar[bool] = False
    # Whether the model's outputs are the labels' (its size depends on them).
    needs_label_names: ClassVar[bool] = False

    def __init__(self, encoder: EncoderFamily, model_config: Any, data_config: Any, task_config: Any):
        self.encoder = encoder
        self.model_config = model_config
        self.task_config = task_config
        self.data_config = data_config
        self.seq_length = data_config.seq_length
        self.truncation = Truncation(data_config.truncation, data_config.head_fraction)
        # A pair task reads two texts per example (and its export takes text_pair).
        self.pairs = bool(data_config.text_pair_column)
        # The label names in output order: the config's, the run's own, or learned by `fit`.
        self.label_names: tuple[str, ...] = tuple(task_config.labels)

    # ----- labels -----

    def prepare_labels(self, train: Any | None, recorded: tuple[str, ...], model_dir: str) -> None:
        """Fixes this run's label names: learned from the `train` examples (when the mode reads data) and held
        against `recorded`, those of the trained run in `model_dir`; else the config's or the recorded ones.

        Raises UserError when they differ from the recorded ones, or when a task that needs them has none.
        """
        if train is not None:
            self.fit(train.labels, train.ids)
            if recorded and tuple(recorded) != self.label_names:
                raise UserError(
                    f"--model_dir={model_dir} was trained with the labels {list(recorded)} (its config.json), "
                    f"but this run has {list(self.label_names)}: use another --model_dir, or the data and "
                    "--config.task.labels it was trained with."
                )
        elif not self.label_names:
            self.label_names = tuple(recorded)
        if self.needs_label_names and not self.label_names:
            raise UserError(
                f"--config.task.type={self.task_config.type} needs the label names to build its model: "
                f"--model_dir={model_dir} has no config.json with them; give --config.task.labels."
            )

    def fit(self, labels: np.ndarray, ids: np.ndarray) -> None:
        """Learns from the training labels what the config does not give (the label vocabulary, target scale).

        Raises DataError naming the example at fault (`ids`: file and line, or the review).
        """
        del labels, ids

    @abc.abstractmethod
    def encode_labels(self, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Labels as read from the data -> the array the steps take; raises DataError naming the example."""

    @abc.abstractmethod
    def label_encoder(self) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        """For streamed data, after `prepare_labels`: one label string -> (its target, as `encode_labels`
        gives it, and whether the label is valid), as TensorFlow ops that run in the input pipeline."""

    @property
    @abc.abstractmethod
    def num_outputs(self) -> int:
        """Outputs per example."""

    def output_transform(self) -> tf_keras.layers.Layer | None:
        """A layer the model applies to its outputs last (a regression's target scale), or None."""
        return None

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
        encoder = self.encoder.build_encoder(trainable, sequence_output=config.pooling != "cls")
        model = Classifier(
            encoder,
            config.head_dropout_rate,
            config.head_hidden_size,
            self.num_outputs,
            config.pooling,
            self.output_transform(),
        )
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
    def aggregate(self, metrics: Metrics, predictions: "Predictions | None" = None) -> dict[str, Any]:
        """The results of `metrics`: float scalars (summaries and logs), ints (counts) and
        structured results such as a confusion matrix (metrics.json). `predictions`, for a task
        that `collects_predictions`, holds the evaluated examples' labels and outputs."""

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
        # Embedding gradients arrive as IndexedSlices; dense tensors all-reduce efficiently. A
        # variable the loss does not reach (the [CLS] pooler under mean pooling) gets zeros.
        gradients = tape.gradient(
            scaled_loss, model.trainable_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        gradients = [tf.convert_to_tensor(g) for g in gradients]
        return loss, outputs, per_example_loss, gradients

    def validation_step(
        self,
        outputs_fn: Callable[[dict[str, tf.Tensor]], tf.Tensor],
        features: dict[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor,
        metrics: Metrics,
    ) -> tf.Tensor:
        """Adds one batch of model outputs to `metrics`; returns the outputs."""
        outputs = outputs_fn(features)
        self.update_metrics(metrics, labels, outputs, self.per_example_loss(labels, outputs), weights)
        return outputs

    # ----- serving -----

    @abc.abstractmethod
    def serving_outputs(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """The exported signature's outputs, from the model's float32 outputs (label names as strings)."""

    @abc.abstractmethod
    def format_predictions(self, outputs: dict[str, np.ndarray]) -> list[str]:
        """One line per text for --mode=predict, from the serving outputs (without the text)."""
