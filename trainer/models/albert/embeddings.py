"""ALBERT's factorized input embeddings: BERT-style tables of a small width, then a projection up.

The tables (word + position + token type, LayerNorm, dropout) are BERT's,
only `embedding_size` wide; a dense layer maps them to `hidden_size`. This
keeps the vocabulary matrix small (30k x 128 for albert-base instead of 30k x 768).
"""

import tensorflow as tf
import tf_keras

from trainer.models.architecture import TransformerConfig
from trainer.models.bert.embeddings import BertEmbeddings, truncated_normal


class AlbertEmbeddings(tf_keras.layers.Layer):
    def __init__(self, config: TransformerConfig, embedding_size: int, type_vocab_size: int, **kwargs):
        super().__init__(name=kwargs.pop("name", "embeddings"), **kwargs)
        self.tables = BertEmbeddings(config, width=embedding_size, type_vocab_size=type_vocab_size, name="tables")
        # Hugging Face keeps this in the encoder (embedding_hidden_mapping_in); it belongs
        # with the embeddings here, so the shared block sees hidden_size from its first use.
        self.projection = tf_keras.layers.Dense(
            config.hidden_size, kernel_initializer=truncated_normal(config.initializer_range), name="projection"
        )

    def call(self, word_ids: tf.Tensor, type_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.projection(self.tables(word_ids, type_ids, training=training))
