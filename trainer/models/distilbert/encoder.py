"""A DistilBERT encoder in tf_keras: word + position embeddings -> post-LayerNorm blocks -> pre-classifier.

DistilBERT is BERT distilled to half the layers: the same block (exact GELU),
no token type table and no pooler. Hugging Face's sequence classifier reads
[CLS] through a dense `pre_classifier` with a ReLU; that layer is this
encoder's `pooled_output`, so the classification head is the same as for
every other family. Unlike BERT, the attention output has no dropout before
its residual.
"""

import dataclasses

from trainer.models.architecture import TransformerConfig
from trainer.models.bert.encoder import BertEncoder
from trainer.schema import POSITIVE, option


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(TransformerConfig):
    """A DistilBERT's shape; the defaults are distilbert-base's (Hugging Face: dim, n_layers, n_heads, hidden_dim)."""

    num_layers: int = option(6, "Transformer blocks.", POSITIVE)


class DistilBertEncoder(BertEncoder):
    """Maps {input_word_ids, input_mask, input_type_ids} to {pooled_output, sequence_output}; type ids are unused."""

    default_name = "distilbert_encoder"
    pooler_activation, pooler_name = "relu", "pre_classifier"
    attention_output_dropout_rate = 0.0

    @staticmethod
    def type_vocab_size(config: TransformerConfig) -> int:
        return 0
