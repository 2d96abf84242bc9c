"""Text classifier: encoder pooled output -> head -> logits (one per output of the task)."""

import tensorflow as tf
import tf_keras

from trainer.models.dropout import Dropout


class Classifier(tf_keras.Model):
    """Wraps any encoder that maps the BERT input dict to a dict with `pooled_output`.

    The head is dropout -> logit, or with `hidden_size` > 0 a deeper one for
    feature extraction from a frozen encoder: dense -> batch normalization ->
    ReLU -> dropout -> logit.
    """

    def __init__(
        self,
        encoder: tf_keras.layers.Layer,
        dropout_rate: float,
        hidden_size: int = 0,
        num_outputs: int = 1,
        **kwargs,
    ):
        """`num_outputs`: logits per example; with 1, the output is [batch] rather than [batch, 1]."""
        super().__init__(name=kwargs.pop("name", "classifier"), **kwargs)
        self.encoder = encoder
        self.num_outputs = num_outputs
        self.hidden_layers = []
        if hidden_size:
            self.hidden_layers = [
                tf_keras.layers.Dense(hidden_size, use_bias=False, name="head_dense"),
                # Statistics in float32 whatever the compute dtype.
                tf_keras.layers.BatchNormalization(dtype="float32", name="head_batch_norm"),
                tf_keras.layers.ReLU(name="head_relu"),
            ]
        self.dropout = Dropout(dropout_rate)
        # The logit is float32 under any mixed-precision policy, for a stable loss.
        self.logit = tf_keras.layers.Dense(num_outputs, dtype="float32", name="logit")

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        # A frozen encoder is a fixed feature extractor: no dropout inside it.
        hidden = self.encoder(inputs, training=training and self.encoder.trainable)["pooled_output"]
        for layer in self.hidden_layers:
            hidden = layer(hidden, training=training)
        logits = self.logit(self.dropout(hidden, training=training))
        return tf.squeeze(logits, axis=-1) if self.num_outputs == 1 else logits
