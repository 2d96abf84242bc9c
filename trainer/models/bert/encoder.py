"""A BERT encoder in tf_keras: embeddings -> transformer blocks -> pooler.

It takes and returns the same dicts as TF Hub BERT encoders, so the
classifier, trainer and export do not care which kind they hold.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from trainer.models.architecture import TransformerConfig
from trainer.models.bert.embeddings import BertEmbeddings
from trainer.models.bert.transformer import TransformerBlock, cls_dense, run_blocks
from trainer.schema import POSITIVE, option


@dataclasses.dataclass(frozen=True)
class BertConfig(TransformerConfig):
    """A BERT's shape; the defaults are BERT-base's."""

    type_vocab_size: int = option(2, "Token type (segment) ids.", POSITIVE)


class BertEncoder(tf_keras.layers.Layer):
    """Maps {input_word_ids, input_mask, input_type_ids} to {pooled_output, sequence_output}."""

    # What a subclass of the same design changes (see DistilBertEncoder).
    default_name = "bert_encoder"
    # Pre-trained on next-sentence prediction: tanh(W h_[CLS] + b).
    pooler_activation, pooler_name = "tanh", "pooler"
    # None: the config's dropout_rate, as on every block output.
    attention_output_dropout_rate: float | None = None

    def __init__(self, config: TransformerConfig, pooled_output_only: bool = False, **kwargs):
        """`pooled_output_only`: see `run_blocks`."""
        super().__init__(name=kwargs.pop("name", self.default_name), **kwargs)
        self.config = config
        self.pooled_output_only = pooled_output_only
        self.embeddings = BertEmbeddings(config, type_vocab_size=self.type_vocab_size(config))
        self.blocks = [
            TransformerBlock(
                config, attention_output_dropout_rate=self.attention_output_dropout_rate, name=f"layer_{i}"
            )
            for i in range(config.num_layers)
        ]
        self.pooler = cls_dense(config, self.pooler_activation, self.pooler_name)

    @staticmethod
    def type_vocab_size(config: TransformerConfig) -> int:
        return config.type_vocab_size

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        hidden = self.embeddings(inputs["input_word_ids"], inputs["input_type_ids"], training=training)
        return run_blocks(self.blocks, hidden, inputs["input_mask"], self.pooler, self.pooled_output_only, training)
