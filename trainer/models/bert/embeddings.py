"""BERT input embeddings: word + position + token type, then LayerNorm and dropout."""

import tensorflow as tf
import tf_keras

from trainer.models.architecture import TransformerConfig
from trainer.models.dropout import Dropout


def truncated_normal(stddev: float) -> tf_keras.initializers.Initializer:
    """A fresh initializer: one instance reused for several weights would give them equal values."""
    return tf_keras.initializers.TruncatedNormal(stddev=stddev)


class BertEmbeddings(tf_keras.layers.Layer):
    def __init__(self, config: TransformerConfig, width: int | None = None, type_vocab_size: int = 0, **kwargs):
        """Tables of `width` (default the config's hidden size) columns; without token types
        (`type_vocab_size=0`, DistilBERT) there is no type table."""
        super().__init__(name=kwargs.pop("name", "embeddings"), **kwargs)
        self.vocab_size = config.vocab_size
        self.hidden_size = width or config.hidden_size
        self.max_position_embeddings = config.max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self._initializer_range = config.initializer_range
        self.layer_norm = tf_keras.layers.LayerNormalization(
            epsilon=config.layer_norm_epsilon, dtype="float32", name="layer_norm"
        )
        self.dropout = Dropout(config.dropout_rate)

    def build(self, input_shape):
        def table(name: str, rows: int) -> tf.Variable:
            # Read in float32: the sum and LayerNorm are float32, and autocasting would
            # convert the whole table to the compute dtype at every step.
            return self.add_weight(
                name,
                shape=(rows, self.hidden_size),
                initializer=truncated_normal(self._initializer_range),
                experimental_autocast=False,
            )

        self.word_embeddings = table("word_embeddings", self.vocab_size)
        self.position_embeddings = table("position_embeddings", self.max_position_embeddings)
        self.type_embeddings = table("type_embeddings", self.type_vocab_size) if self.type_vocab_size else None
        super().build(input_shape)

    def call(self, word_ids: tf.Tensor, type_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        seq_length = tf.shape(word_ids)[1]
        embeddings = tf.gather(self.word_embeddings, word_ids)
        if self.type_embeddings is not None:
            embeddings += tf.gather(self.type_embeddings, type_ids)
        embeddings += self.position_embeddings[tf.newaxis, :seq_length]
        embeddings = self.layer_norm(embeddings)
        return tf.cast(self.dropout(embeddings, training=training), self.compute_dtype)
