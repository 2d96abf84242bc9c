"""The shape every native encoder family shares: a stack of post-LayerNorm transformer blocks.

Each family's architecture dataclass extends `TransformerConfig` with what
is its own (token types, factorized embeddings, an activation) and changes
defaults where its base model differs. As the config section
`model.<family>` it is the shape of a randomly initialised encoder; its
first field, vocab_size, comes from the vocabulary.
"""

import dataclasses

from trainer.schema import ABOVE_ZERO, POSITIVE, RATE, option


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    hidden_size: int = option(768, "Width of every token vector.", POSITIVE)
    num_layers: int = option(12, "Transformer blocks.", POSITIVE)
    num_heads: int = option(12, "Attention heads; must divide hidden_size.", POSITIVE)
    intermediate_size: int = option(3072, "Width of the feed-forward layer.", POSITIVE)
    max_position_embeddings: int = option(512, "Longest sequence the position table holds.", POSITIVE)
    dropout_rate: float = option(0.1, "Dropout on embeddings and block outputs in training.", RATE)
    attention_dropout_rate: float = option(0.1, "Dropout on the attention weights in training.", RATE)
    layer_norm_epsilon: float = option(1e-12, "LayerNorm's variance epsilon.", ABOVE_ZERO)
    initializer_range: float = option(0.02, "Standard deviation of the truncated normal initial weights.", ABOVE_ZERO)
