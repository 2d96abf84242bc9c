"""An ALBERT encoder in tf_keras: factorized embeddings -> one shared transformer block, num_layers times -> pooler.

It takes and returns the same dicts as `BertEncoder` and TF Hub encoders, so
the classifier, trainer and export work with it unchanged.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from trainer.models.albert.embeddings import AlbertEmbeddings
from trainer.models.architecture import TransformerConfig
from trainer.models.bert.transformer import TransformerBlock, cls_dense, run_blocks
from trainer.schema import POSITIVE, RATE, option

# Hugging Face `hidden_act` names: "gelu_new" (albert-*-v2) is the tanh approximation, "gelu" the exact form.
APPROXIMATE_GELU = {"gelu_new": True, "gelu": False}


@dataclasses.dataclass(frozen=True)
class AlbertConfig(TransformerConfig):
    """An ALBERT's shape; the defaults are albert-base-v2's."""

    embedding_size: int = option(128, "Width of the factorized embedding tables.", POSITIVE)
    type_vocab_size: int = option(2, "Token type (segment) ids.", POSITIVE)
    # albert-*-v2 was pre-trained without dropout.
    dropout_rate: float = option(0.0, "Dropout on embeddings and block outputs in training.", RATE)
    attention_dropout_rate: float = option(0.0, "Dropout on the attention weights in training.", RATE)
    hidden_act: str = option(
        "gelu_new", "gelu_new (tanh approximation) or gelu (exact).", choices=tuple(APPROXIMATE_GELU)
    )


class AlbertEncoder(tf_keras.layers.Layer):
    """Maps {input_word_ids, input_mask, input_type_ids} to {pooled_output, sequence_output}."""

    def __init__(self, config: AlbertConfig, pooled_output_only: bool = False, **kwargs):
        """`pooled_output_only`: see `run_blocks`."""
        super().__init__(name=kwargs.pop("name", "albert_encoder"), **kwargs)
        self.pooled_output_only = pooled_output_only
        self.config = config
        self.embeddings = AlbertEmbeddings(config, config.embedding_size, config.type_vocab_size)
        # Cross-layer sharing: one block's weights serve every layer, so depth adds
        # compute but no parameters.
        self.shared_block = TransformerBlock(
            config, approximate_gelu=APPROXIMATE_GELU[config.hidden_act], name="shared_layer"
        )
        # Pre-trained on sentence-order prediction: tanh(W h_[CLS] + b).
        self.pooler = cls_dense(config, "tanh", "pooler")

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        hidden = self.embeddings(inputs["input_word_ids"], inputs["input_type_ids"], training=training)
        blocks = [self.shared_block] * self.config.num_layers
        return run_blocks(blocks, hidden, inputs["input_mask"], self.pooler, self.pooled_output_only, training)
