"""An ALBERT encoder in tf_keras: factorized embeddings -> one shared transformer block, num_layers times -> pooler.

It takes and returns the same dicts as `BertEncoder` and TF Hub encoders, so
the classifier, trainer and export work with it unchanged.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from trainer.models.albert.embeddings import AlbertEmbeddings
from trainer.models.bert.embeddings import truncated_normal
from trainer.models.bert.transformer import TransformerBlock, run_blocks
from trainer.schema import ABOVE_ZERO, POSITIVE, RATE, option

# Hugging Face `hidden_act` names: "gelu_new" (albert-*-v2) is the tanh approximation, "gelu" the exact form.
APPROXIMATE_GELU = {"gelu_new": True, "gelu": False}


@dataclasses.dataclass(frozen=True)
class AlbertConfig:
    """An ALBERT's shape; the defaults are albert-base-v2's. As config section model.albert, a random encoder's."""

    vocab_size: int
    embedding_size: int = option(128, "Width of the factorized embedding tables.", POSITIVE)
    hidden_size: int = option(768, "Width of every token vector in the shared block.", POSITIVE)
    num_layers: int = option(12, "How many times the shared block runs.", POSITIVE)
    num_heads: int = option(12, "Attention heads; must divide hidden_size.", POSITIVE)
    intermediate_size: int = option(3072, "Width of the feed-forward layer.", POSITIVE)
    max_position_embeddings: int = option(512, "Longest sequence the position table holds.", POSITIVE)
    type_vocab_size: int = option(2, "Token type (segment) ids.", POSITIVE)
    # albert-*-v2 was pre-trained without dropout.
    dropout_rate: float = option(0.0, "Dropout on embeddings and block outputs in training.", RATE)
    attention_dropout_rate: float = option(0.0, "Dropout on the attention weights in training.", RATE)
    hidden_act: str = option(
        "gelu_new", "gelu_new (tanh approximation) or gelu (exact).", choices=tuple(APPROXIMATE_GELU)
    )
    layer_norm_epsilon: float = option(1e-12, "LayerNorm's variance epsilon.", ABOVE_ZERO)
    initializer_range: float = option(0.02, "Standard deviation of the truncated normal initial weights.", ABOVE_ZERO)


class AlbertEncoder(tf_keras.layers.Layer):
    """Maps {input_word_ids, input_mask, input_type_ids} to {pooled_output, sequence_output}."""

    def __init__(self, config: AlbertConfig, pooled_output_only: bool = False, **kwargs):
        """`pooled_output_only`: see `run_blocks`."""
        super().__init__(name=kwargs.pop("name", "albert_encoder"), **kwargs)
        self.pooled_output_only = pooled_output_only
        self.config = config
        self.embeddings = AlbertEmbeddings(
            vocab_size=config.vocab_size,
            embedding_size=config.embedding_size,
            hidden_size=config.hidden_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            dropout_rate=config.dropout_rate,
            layer_norm_epsilon=config.layer_norm_epsilon,
            initializer_range=config.initializer_range,
        )
        # Cross-layer sharing: one block's weights serve every layer, so depth adds
        # compute but no parameters.
        self.shared_block = TransformerBlock(
            hidden_size=config.hidden_size,
            num_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            dropout_rate=config.dropout_rate,
            attention_dropout_rate=config.attention_dropout_rate,
            layer_norm_epsilon=config.layer_norm_epsilon,
            initializer_range=config.initializer_range,
            approximate_gelu=APPROXIMATE_GELU[config.hidden_act],
            name="shared_layer",
        )
        # Pre-trained on sentence-order prediction: tanh(W h_[CLS] + b).
        self.pooler = tf_keras.layers.Dense(
            config.hidden_size,
            activation="tanh",
            kernel_initializer=truncated_normal(config.initializer_range),
            name="pooler",
        )

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        hidden = self.embeddings(inputs["input_word_ids"], inputs["input_type_ids"], training=training)
        blocks = [self.shared_block] * self.config.num_layers
        return run_blocks(blocks, hidden, inputs["input_mask"], self.pooler, self.pooled_output_only, training)
