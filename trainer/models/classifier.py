"""Binary text classifier: encoder pooled output -> dropout -> one logit."""

import tensorflow as tf
import tf_keras


class Classifier(tf_keras.Model):
    """Wraps any encoder that maps the BERT input dict to a dict with `pooled_output`."""

    def __init__(self, encoder: tf_keras.layers.Layer, dropout_rate: float, **kwargs):
        super().__init__(name=kwargs.pop("name", "classifier"), **kwargs)
        self.encoder = encoder
        self.dropout = tf_keras.layers.Dropout(dropout_rate)
        # The logit is float32 under any mixed-precision policy, for a stable loss.
        self.logit = tf_keras.layers.Dense(1, dtype="float32", name="logit")

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        pooled = self.encoder(inputs, training=training)["pooled_output"]
        return tf.squeeze(self.logit(self.dropout(pooled, training=training)), axis=-1)
