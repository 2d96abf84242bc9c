"""One post-LayerNorm BERT transformer block: self-attention and a GELU feed-forward."""

import math

import tensorflow as tf
import tf_keras

from trainer.models.bert.embeddings import truncated_normal


class SelfAttention(tf_keras.layers.Layer):
    """Multi-head scaled dot-product self-attention over the unmasked tokens."""

    def __init__(self, hidden_size: int, num_heads: int, dropout_rate: float, initializer_range: float, **kwargs):
        super().__init__(name=kwargs.pop("name", "attention"), **kwargs)
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} attention heads.")
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads

        def dense(name: str) -> tf_keras.layers.Dense:
            return tf_keras.layers.Dense(hidden_size, kernel_initializer=truncated_normal(initializer_range), name=name)

        self.query, self.key, self.value = dense("query"), dense("key"), dense("value")
        self.output_dense = dense("output")
        self.dropout = tf_keras.layers.Dropout(dropout_rate)

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        return tf.reshape(x, [batch, length, self.num_heads, self.head_size])

    def call(self, hidden: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        scores = tf.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(self.head_size)
        # Softmax in float32 whatever the compute dtype; padded keys get no weight.
        scores = tf.cast(scores, tf.float32)
        key_is_padding = tf.cast(mask[:, tf.newaxis, tf.newaxis, :] == 0, tf.float32)
        weights = tf.nn.softmax(scores - 1e9 * key_is_padding, axis=-1)
        weights = self.dropout(tf.cast(weights, value.dtype), training=training)
        context = tf.einsum("bhqk,bkhd->bqhd", weights, value)
        batch, length = tf.shape(hidden)[0], tf.shape(hidden)[1]
        return self.output_dense(tf.reshape(context, [batch, length, self.num_heads * self.head_size]))


class TransformerBlock(tf_keras.layers.Layer):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        dropout_rate: float,
        attention_dropout_rate: float,
        layer_norm_epsilon: float,
        initializer_range: float,
        approximate_gelu: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout_rate, initializer_range)
        self.attention_dropout = tf_keras.layers.Dropout(dropout_rate)
        self.attention_layer_norm = tf_keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype="float32", name="attention_layer_norm"
        )
        self.intermediate = tf_keras.layers.Dense(
            intermediate_size,
            # BERT's GELU is the exact (erf) form; ALBERT's "gelu_new" is the tanh approximation.
            activation=lambda x: tf.nn.gelu(x, approximate=approximate_gelu),
            kernel_initializer=truncated_normal(initializer_range),
            name="intermediate",
        )
        self.output_dense = tf_keras.layers.Dense(
            hidden_size, kernel_initializer=truncated_normal(initializer_range), name="output"
        )
        self.output_dropout = tf_keras.layers.Dropout(dropout_rate)
        self.output_layer_norm = tf_keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype="float32", name="output_layer_norm"
        )

    def call(self, hidden: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        attended = self.attention(hidden, mask, training=training)
        hidden = self._residual_norm(
            self.attention_layer_norm, hidden, self.attention_dropout(attended, training=training)
        )
        transformed = self.output_dense(self.intermediate(hidden))
        return self._residual_norm(self.output_layer_norm, hidden, self.output_dropout(transformed, training=training))

    def _residual_norm(self, layer_norm, residual: tf.Tensor, update: tf.Tensor) -> tf.Tensor:
        # LayerNorm in float32; the next matmuls take the compute dtype again.
        return tf.cast(layer_norm(tf.cast(residual, tf.float32) + tf.cast(update, tf.float32)), self.compute_dtype)
