"""ALBERT's factorized input embeddings: BERT-style tables of a small width, then a projection up.

The tables (word + position + token type, LayerNorm, dropout) are BERT's,
only `embedding_size` wide; a dense layer maps them to `hidden_size`. This
keeps the vocabulary matrix small (30k x 128 for albert-base instead of 30k x 768).
"""

import tensorflow as tf
import tf_keras

from trainer.models.bert.embeddings import BertEmbeddings, truncated_normal


class AlbertEmbeddings(tf_keras.layers.Layer):
    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        max_position_embeddings: int,
        type_vocab_size: int,
        dropout_rate: float,
        layer_norm_epsilon: float,
        initializer_range: float,
        **kwargs,
    ):
        super().__init__(name=kwargs.pop("name", "embeddings"), **kwargs)
        self.tables = BertEmbeddings(
            vocab_size=vocab_size,
            hidden_size=embedding_size,
            max_position_embeddings=max_position_embeddings,
            type_vocab_size=type_vocab_size,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            initializer_range=initializer_range,
            name="tables",
        )
        # Hugging Face keeps this in the encoder (embedding_hidden_mapping_in); it belongs
        # with the embeddings here, so the shared block sees hidden_size from its first use.
        self.projection = tf_keras.layers.Dense(
            hidden_size, kernel_initializer=truncated_normal(initializer_range), name="projection"
        )

    def call(self, word_ids: tf.Tensor, type_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.projection(self.tables(word_ids, type_ids, training=training))
