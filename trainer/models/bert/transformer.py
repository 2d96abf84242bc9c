"""One post-LayerNorm BERT transformer block: self-attention and a GELU feed-forward."""

import math

import tensorflow as tf
import tf_keras

from trainer.models.bert.embeddings import truncated_normal
from trainer.models.dropout import Dropout


class SelfAttention(tf_keras.layers.Layer):
    """Multi-head scaled dot-product self-attention over the unmasked tokens.

    Takes and returns the token matrix [batch * length, hidden]: dense layers on
    2-D inputs run as one MatMul + BiasAdd, which the CPU graph optimizer fuses.
    """

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
        self.dropout = Dropout(dropout_rate)

    def call(self, tokens: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        batch, length = tf.shape(mask)[0], tf.shape(mask)[1]

        def split_heads(x: tf.Tensor) -> tf.Tensor:  # [batch * length, hidden] -> [batch, heads, length, head]
            return tf.transpose(tf.reshape(x, [batch, length, self.num_heads, self.head_size]), [0, 2, 1, 3])

        # Scaling the queries costs length times less than scaling the scores.
        query = split_heads(self.query(tokens) * tf.cast(1.0 / math.sqrt(self.head_size), self.compute_dtype))
        scores = tf.matmul(query, split_heads(self.key(tokens)), transpose_b=True)
        # Softmax in float32 whatever the compute dtype; padded keys get no weight.
        key_is_padding = tf.cast(mask[:, tf.newaxis, tf.newaxis, :] == 0, tf.float32)
        weights = tf.nn.softmax(tf.cast(scores, tf.float32) - 1e9 * key_is_padding, axis=-1)
        weights = self.dropout(tf.cast(weights, self.compute_dtype), training=training)
        context = tf.matmul(weights, split_heads(self.value(tokens)))
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, self.num_heads * self.head_size])
        return self.output_dense(context)


class TransformerBlock(tf_keras.layers.Layer):
    """One post-LayerNorm block: attention -> dropout -> add & norm -> GELU feed-forward -> dropout -> add & norm."""

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
        self.attention_dropout = Dropout(dropout_rate)
        self.attention_layer_norm = tf_keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype="float32", name="attention_layer_norm"
        )
        self.intermediate = tf_keras.layers.Dense(
            intermediate_size,
            # BERT's GELU is the exact (erf) form; ALBERT's "gelu_new" is the tanh approximation.
            # Computed in float32: CPUs have no bfloat16 erf, and its gradient is elementwise-heavy.
            activation=lambda x: tf.cast(tf.nn.gelu(tf.cast(x, tf.float32), approximate=approximate_gelu), x.dtype),
            kernel_initializer=truncated_normal(initializer_range),
            name="intermediate",
        )
        self.output_dense = tf_keras.layers.Dense(
            hidden_size, kernel_initializer=truncated_normal(initializer_range), name="output"
        )
        self.output_dropout = Dropout(dropout_rate)
        self.output_layer_norm = tf_keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype="float32", name="output_layer_norm"
        )

    def call(self, hidden: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[batch, length, hidden] -> same; inside, tokens are the rows of one matrix."""
        tokens = tf.reshape(hidden, [-1, hidden.shape[-1]])
        attended = self.attention(tokens, mask, training=training)
        tokens = self._residual_norm(
            self.attention_layer_norm, tokens, self.attention_dropout(attended, training=training)
        )
        # 2-D inputs: each dense layer is one MatMul + BiasAdd, fused by the graph optimizer.
        transformed = self.output_dense(self.intermediate(tokens))
        tokens = self._residual_norm(
            self.output_layer_norm, tokens, self.output_dropout(transformed, training=training)
        )
        return tf.reshape(tokens, tf.shape(hidden))

    def _residual_norm(self, layer_norm, residual: tf.Tensor, update: tf.Tensor) -> tf.Tensor:
        # LayerNorm in float32; the next matmuls take the compute dtype again.
        return tf.cast(layer_norm(tf.cast(residual, tf.float32) + tf.cast(update, tf.float32)), self.compute_dtype)
