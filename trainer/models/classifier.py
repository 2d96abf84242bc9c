"""The head on any encoder: pooled features -> (hidden layer) -> dropout -> the task's outputs."""

import tensorflow as tf
import tf_keras

from trainer.models.dropout import Dropout


def masked_mean(sequence: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The mean of each sequence's token vectors where `mask` is 1, in float32: [batch, hidden]."""
    weights = tf.cast(mask, tf.float32)[:, :, tf.newaxis]
    summed = tf.reduce_sum(tf.cast(sequence, tf.float32) * weights, axis=1)
    return summed / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)


class Classifier(tf_keras.Model):
    """Wraps any encoder that maps the BERT input dict to a dict with `pooled_output` (and `sequence_output`).

    `pooling` picks the features: the encoder's pooled [CLS] (`cls`), the mean
    of the last layer's token vectors under the mask (`mean`, what
    sentence-embedding models such as MiniLM were trained for), or both
    concatenated (`cls_mean`). The head is dropout -> output layer, or with
    `hidden_size` > 0 a deeper one for feature extraction from a frozen
    encoder: dense -> batch normalization -> ReLU -> dropout -> output layer.
    `output_transform`, a layer, maps the outputs last (a regression's target scale).
    """

    def __init__(
        self,
        encoder: tf_keras.layers.Layer,
        dropout_rate: float,
        hidden_size: int = 0,
        num_outputs: int = 1,
        pooling: str = "cls",
        output_transform: tf_keras.layers.Layer | None = None,
        **kwargs,
    ):
        """`num_outputs`: outputs per example; with 1, the output is [batch] rather than [batch, 1]."""
        super().__init__(name=kwargs.pop("name", "classifier"), **kwargs)
        self.encoder = encoder
        self.num_outputs = num_outputs
        self.pooling = pooling
        self.hidden_layers = []
        if hidden_size:
            self.hidden_layers = [
                tf_keras.layers.Dense(hidden_size, use_bias=False, name="head_dense"),
                # Statistics in float32 whatever the compute dtype.
                tf_keras.layers.BatchNormalization(dtype="float32", name="head_batch_norm"),
                tf_keras.layers.ReLU(name="head_relu"),
            ]
        self.dropout = Dropout(dropout_rate)
        # The outputs are float32 under any mixed-precision policy, for a stable loss.
        self.logit = tf_keras.layers.Dense(num_outputs, dtype="float32", name="logit")
        self.output_transform = output_transform

    def features(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """What the head reads, by `pooling`."""
        # A frozen encoder is a fixed feature extractor: no dropout inside it.
        outputs = self.encoder(inputs, training=training and self.encoder.trainable)
        if self.pooling == "cls":
            return outputs["pooled_output"]
        mean = masked_mean(outputs["sequence_output"], inputs["input_mask"])
        if self.pooling == "mean":
            return mean
        return tf.concat([tf.cast(outputs["pooled_output"], tf.float32), mean], axis=-1)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        hidden = self.features(inputs, training)
        for layer in self.hidden_layers:
            hidden = layer(hidden, training=training)
        outputs = self.logit(self.dropout(hidden, training=training))
        if self.output_transform is not None:
            outputs = self.output_transform(outputs)
        return tf.squeeze(outputs, axis=-1) if self.num_outputs == 1 else outputs
