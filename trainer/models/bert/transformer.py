"""One post-LayerNorm BERT transformer block: self-attention and a GELU feed-forward."""

import math

import tensorflow as tf
import tf_keras

from trainer.models import fusions
from trainer.models.architecture import TransformerConfig
from trainer.models.bert.embeddings import truncated_normal


class SelfAttention(tf_keras.layers.Layer):
    """Multi-head scaled dot-product self-attention over the unmasked tokens.

    Takes and returns token matrices [batch * length, hidden]: dense layers on
    2-D inputs run as one MatMul + BiasAdd, which the CPU graph optimizer fuses.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout_rate: float, initializer_range: float, **kwargs):
        super().__init__(name=kwargs.pop("name", "attention"), **kwargs)
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.dropout_rate = dropout_rate

        def dense(name: str) -> tf_keras.layers.Dense:
            return tf_keras.layers.Dense(hidden_size, kernel_initializer=truncated_normal(initializer_range), name=name)

        self.query, self.key, self.value = dense("query"), dense("key"), dense("value")
        self.output_dense = dense("output")

    def call(
        self, tokens: tf.Tensor, mask: tf.Tensor, query_length: int | None = None, training: bool = False
    ) -> tf.Tensor:
        """Attends from the first `query_length` tokens of each sequence (all if None) to all of them.

        tokens: [batch * length, hidden]; mask: [batch, length]. Returns [batch * queries, hidden].
        """
        batch, length = tf.shape(mask)[0], tf.shape(mask)[1]

        def split_heads(x: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:  # [batch * rows, hidden] -> [b, heads, rows, head]
            return tf.transpose(tf.reshape(x, [batch, rows, self.num_heads, self.head_size]), [0, 2, 1, 3])

        queries = tokens
        if query_length is not None:
            queries = tf.reshape(tf.reshape(tokens, [batch, length, -1])[:, :query_length], [-1, tokens.shape[-1]])
        rows = length if query_length is None else query_length
        # Scaling the queries costs length times less than scaling the scores.
        query = split_heads(self.query(queries) * tf.cast(1.0 / math.sqrt(self.head_size), self.compute_dtype), rows)
        scores = tf.matmul(query, split_heads(self.key(tokens), length), transpose_b=True)
        if training:
            weights = fusions.masked_softmax_dropout(scores, mask, fusions.dropout_seed(), self.dropout_rate)
        else:
            weights = fusions.inference_softmax(scores, mask)
        context = tf.matmul(weights, split_heads(self.value(tokens), length))
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, self.num_heads * self.head_size])
        return self.output_dense(context)


class ResidualLayerNorm(tf_keras.layers.Layer):
    """LayerNorm(residual + dropout(update)), one fused kernel; weights in float32."""

    def __init__(self, dropout_rate: float, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.dropout_rate = dropout_rate
        self.epsilon = epsilon

    def build(self, input_shape):
        width = input_shape[-1]
        # Named as Keras' LayerNormalization names them, so checkpoints and converters carry over.
        self.gamma = self.add_weight("gamma", shape=(width,), initializer="ones", experimental_autocast=False)
        self.beta = self.add_weight("beta", shape=(width,), initializer="zeros", experimental_autocast=False)
        super().build(input_shape)

    def call(self, residual: tf.Tensor, update: tf.Tensor, training: bool = False) -> tf.Tensor:
        # Values, not variables: a tf.function traced with one distributed variable as an
        # argument would capture it, and serve every later variable of the same shape with it.
        gamma, beta = tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta)
        if not training:
            return fusions.add_layer_norm(residual, update, gamma, beta, self.epsilon)
        seed = fusions.dropout_seed()
        return fusions.dropout_add_layer_norm(residual, update, gamma, beta, seed, self.dropout_rate, self.epsilon)


class TransformerBlock(tf_keras.layers.Layer):
    """One post-LayerNorm block: attention -> dropout -> add & norm -> GELU feed-forward -> dropout -> add & norm."""

    def __init__(
        self,
        config: TransformerConfig,
        approximate_gelu: bool = False,
        attention_output_dropout_rate: float | None = None,
        **kwargs,
    ):
        """`attention_output_dropout_rate`: dropout on the attention's output before its residual
        (default the config's dropout_rate, as in BERT; DistilBERT has none there)."""
        super().__init__(**kwargs)
        init = config.initializer_range
        self.attention = SelfAttention(config.hidden_size, config.num_heads, config.attention_dropout_rate, init)
        if attention_output_dropout_rate is None:
            attention_output_dropout_rate = config.dropout_rate
        self.attention_layer_norm = ResidualLayerNorm(
            attention_output_dropout_rate, config.layer_norm_epsilon, name="attention_layer_norm"
        )
        # BERT's GELU is the exact (erf) form; ALBERT's "gelu_new" is the tanh approximation.
        self.approximate_gelu = approximate_gelu
        self.intermediate = tf_keras.layers.Dense(
            config.intermediate_size, kernel_initializer=truncated_normal(init), name="intermediate"
        )
        self.output_dense = tf_keras.layers.Dense(
            config.hidden_size, kernel_initializer=truncated_normal(init), name="output"
        )
        self.output_layer_norm = ResidualLayerNorm(
            config.dropout_rate, config.layer_norm_epsilon, name="output_layer_norm"
        )

    def call(
        self, hidden: tf.Tensor, mask: tf.Tensor, query_length: int | None = None, training: bool = False
    ) -> tf.Tensor:
        """[batch, length, hidden] -> [batch, query_length or length, hidden].

        With `query_length`, only the first tokens are computed (all are still attended
        to): a classifier reading [CLS] needs no more from the last block.
        """
        width = hidden.shape[-1]
        tokens = tf.reshape(hidden, [-1, width])
        residual = tokens if query_length is None else tf.reshape(hidden[:, :query_length], [-1, width])
        attended = self.attention(tokens, mask, query_length, training=training)
        # Inside, tokens are the rows of one matrix: each dense layer is one MatMul + BiasAdd.
        tokens = self.attention_layer_norm(residual, attended, training=training)
        gelu = fusions.gelu if training else fusions.inference_gelu
        transformed = self.output_dense(gelu(self.intermediate(tokens), self.approximate_gelu))
        tokens = self.output_layer_norm(tokens, transformed, training=training)
        return tf.reshape(tokens, [tf.shape(hidden)[0], -1, width])


def cls_dense(config: TransformerConfig, activation: str, name: str) -> tf_keras.layers.Dense:
    """A dense layer of the hidden width that reads [CLS]: BERT's and ALBERT's tanh pooler,
    DistilBERT's ReLU pre-classifier."""
    return tf_keras.layers.Dense(
        config.hidden_size,
        activation=activation,
        kernel_initializer=truncated_normal(config.initializer_range),
        name=name,
    )


def run_blocks(
    blocks: list[TransformerBlock],
    hidden: tf.Tensor,
    mask: tf.Tensor,
    pooler: tf_keras.layers.Layer,
    pooled_output_only: bool,
    training: bool,
) -> dict[str, tf.Tensor]:
    """Embedded tokens through `blocks` in turn, then the pooler on [CLS]: the encoder output dict.

    With `pooled_output_only`, the last block computes [CLS] alone and no
    sequence_output is returned: a classifier on the pooled output pays for no more.
    """
    for i, block in enumerate(blocks):
        query_length = 1 if pooled_output_only and i == len(blocks) - 1 else None
        hidden = block(hidden, mask, query_length, training=training)
    pooled = pooler(hidden[:, 0])
    return {"pooled_output": pooled} if pooled_output_only else {"sequence_output": hidden, "pooled_output": pooled}
