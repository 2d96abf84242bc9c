"""A BERT encoder in tf_keras: embeddings -> transformer blocks -> pooler.

It takes and returns the same dicts as TF Hub BERT encoders, so the
classifier, trainer and export do not care which kind they hold.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from trainer.models.bert.embeddings import BertEmbeddings, truncated_normal
from trainer.models.bert.transformer import TransformerBlock, run_blocks
from trainer.schema import ABOVE_ZERO, POSITIVE, RATE, option


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """A BERT's shape; the defaults are BERT-base's. As config section model.bert, a random encoder's shape."""

    vocab_size: int
    hidden_size: int = option(768, "Width of every token vector.", POSITIVE)
    num_layers: int = option(12, "Transformer blocks.", POSITIVE)
    num_heads: int = option(12, "Attention heads; must divide hidden_size.", POSITIVE)
    intermediate_size: int = option(3072, "Width of the feed-forward layer.", POSITIVE)
    max_position_embeddings: int = option(512, "Longest sequence the position table holds.", POSITIVE)
    type_vocab_size: int = option(2, "Token type (segment) ids.", POSITIVE)
    dropout_rate: float = option(0.1, "Dropout on embeddings and block outputs in training.", RATE)
    attention_dropout_rate: float = option(0.1, "Dropout on the attention weights in training.", RATE)
    layer_norm_epsilon: float = option(1e-12, "LayerNorm's variance epsilon.", ABOVE_ZERO)
    initializer_range: float = option(0.02, "Standard deviation of the truncated normal initial weights.", ABOVE_ZERO)


class BertEncoder(tf_keras.layers.Layer):
    """Maps {input_word_ids, input_mask, input_type_ids} to {pooled_output, sequence_output}."""

    def __init__(self, config: BertConfig, pooled_output_only: bool = False, **kwargs):
        """`pooled_output_only`: see `run_blocks`."""
        super().__init__(name=kwargs.pop("name", "bert_encoder"), **kwargs)
        self.config = config
        self.pooled_output_only = pooled_output_only
        self.embeddings = BertEmbeddings(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            dropout_rate=config.dropout_rate,
            layer_norm_epsilon=config.layer_norm_epsilon,
            initializer_range=config.initializer_range,
        )
        self.blocks = [
            TransformerBlock(
                hidden_size=config.hidden_size,
                num_heads=config.num_heads,
                intermediate_size=config.intermediate_size,
                dropout_rate=config.dropout_rate,
                attention_dropout_rate=config.attention_dropout_rate,
                layer_norm_epsilon=config.layer_norm_epsilon,
                initializer_range=config.initializer_range,
                name=f"layer_{i}",
            )
            for i in range(config.num_layers)
        ]
        # Pre-trained on next-sentence prediction: tanh(W h_[CLS] + b).
        self.pooler = tf_keras.layers.Dense(
            config.hidden_size,
            activation="tanh",
            kernel_initializer=truncated_normal(config.initializer_range),
            name="pooler",
        )

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        hidden = self.embeddings(inputs["input_word_ids"], inputs["input_type_ids"], training=training)
        return run_blocks(self.blocks, hidden, inputs["input_mask"], self.pooler, self.pooled_output_only, training)
