"""A DistilBERT encoder in tf_keras: word + position embeddings -> post-LayerNorm blocks -> pre-classifier.

DistilBERT is BERT distilled to half the layers: the same block (exact GELU),
no token type table and no pooler. Hugging Face's sequence classifier reads
[CLS] through a dense `pre_classifier` with a ReLU; that layer is this
encoder's `pooled_output`, so the classification head is the same as for
every other family. Unlike BERT, the attention output has no dropout before
its residual.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from trainer.models.bert.embeddings import BertEmbeddings, truncated_normal
from trainer.models.bert.transformer import TransformerBlock, run_blocks
from trainer.schema import ABOVE_ZERO, POSITIVE, RATE, option


@dataclasses.dataclass(frozen=True)
class DistilBertConfig:
    """A DistilBERT's shape; the defaults are distilbert-base's. As config section model.distilbert, a random one's."""

    vocab_size: int
    hidden_size: int = option(768, "Width of every token vector (Hugging Face: dim).", POSITIVE)
    num_layers: int = option(6, "Transformer blocks (n_layers).", POSITIVE)
    num_heads: int = option(12, "Attention heads; must divide hidden_size (n_heads).", POSITIVE)
    intermediate_size: int = option(3072, "Width of the feed-forward layer (hidden_dim).", POSITIVE)
    max_position_embeddings: int = option(512, "Longest sequence the position table holds.", POSITIVE)
    dropout_rate: float = option(0.1, "Dropout on embeddings and feed-forward outputs in training.", RATE)
    attention_dropout_rate: float = option(0.1, "Dropout on the attention weights in training.", RATE)
    layer_norm_epsilon: float = option(1e-12, "LayerNorm's variance epsilon.", ABOVE_ZERO)
    initializer_range: float = option(0.02, "Standard deviation of the truncated normal initial weights.", ABOVE_ZERO)


class DistilBertEncoder(tf_keras.layers.Layer):
    """Maps {input_word_ids, input_mask, input_type_ids} to {pooled_output, sequence_output}; type ids are unused."""

    def __init__(self, config: DistilBertConfig, pooled_output_only: bool = False, **kwargs):
        """`pooled_output_only`: see `run_blocks`."""
        super().__init__(name=kwargs.pop("name", "distilbert_encoder"), **kwargs)
        self.config = config
        self.pooled_output_only = pooled_output_only
        self.embeddings = BertEmbeddings(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=0,
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
                attention_output_dropout_rate=0.0,
                name=f"layer_{i}",
            )
            for i in range(config.num_layers)
        ]
        self.pre_classifier = tf_keras.layers.Dense(
            config.hidden_size,
            activation="relu",
            kernel_initializer=truncated_normal(config.initializer_range),
            name="pre_classifier",
        )

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        hidden = self.embeddings(inputs["input_word_ids"], inputs["input_type_ids"], training=training)
        return run_blocks(
            self.blocks, hidden, inputs["input_mask"], self.pre_classifier, self.pooled_output_only, training
        )
