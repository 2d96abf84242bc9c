"""Hugging Face-format ALBERT weights <-> the native AlbertEncoder.

A Hugging Face ALBERT directory (e.g. albert-base-v2) holds `config.json`,
`model.safetensors` and the SentencePiece model `spiece.model`. The
safetensors file is read with numpy, so no PyTorch is needed. Only the
standard layout is supported: one layer group with one layer in it, shared
by all layers.
"""

from trainer.models import hf_format
from trainer.models.albert.encoder import APPROXIMATE_GELU, AlbertConfig, AlbertEncoder
from trainer.models.bert.convert_hf import CONFIG_KEYS as BERT_CONFIG_KEYS
from trainer.models.hf_format import BlockNames, ConfigKeys, Supported, WeightMap

SPIECE_FILE = "spiece.model"
# ALBERT's vocabulary is its SentencePiece model.
VOCAB_FILE = SPIECE_FILE
# The one shared layer; Hugging Face nests it in group 0.
_LAYER = "encoder.albert_layer_groups.0.albert_layers.0"
# Buffers that hold no learned weights, and pre-training heads the encoder does not use.
_IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids", "predictions.", "sop_classifier.")
_CONFIG_KEYS: ConfigKeys = {
    **BERT_CONFIG_KEYS,
    "embedding_size": ("embedding_size", 128),
    # albert-*-v2 was pre-trained without dropout.
    "dropout_rate": ("hidden_dropout_prob", 0.0),
    "attention_dropout_rate": ("attention_probs_dropout_prob", 0.0),
    "hidden_act": ("hidden_act", "gelu_new"),
}
# Only the standard layout: one layer group with one layer in it, shared by all layers.
_ONE_SHARED_LAYER: Supported = {"num_hidden_groups": (1,), "inner_group_num": (1,)}
_SUPPORTED: Supported = {
    **_ONE_SHARED_LAYER,
    "hidden_act": tuple(APPROXIMATE_GELU),
    "position_embedding_type": ("absolute",),
}
_BLOCK = BlockNames.of(
    "attention.query attention.key attention.value attention.dense attention.LayerNorm ffn ffn_output "
    "full_layer_layer_norm"
)


def _weight_map(encoder: AlbertEncoder) -> WeightMap:
    """Hugging Face tensor name (without the "albert." prefix) -> (variable, whether transposed)."""
    return {
        **hf_format.embeddings("embeddings", encoder.embeddings.tables),
        **hf_format.dense("encoder.embedding_hidden_mapping_in", encoder.embeddings.projection),
        **hf_format.block(_LAYER, encoder.shared_block, _BLOCK),
        **hf_format.dense("pooler", encoder.pooler),
    }


CONVERTER = hf_format.Converter("albert", AlbertConfig, _CONFIG_KEYS, _SUPPORTED, _weight_map, VOCAB_FILE, (), _IGNORED)
load_config, load_weights, save_pretrained = CONVERTER.load_config, CONVERTER.load_weights, CONVERTER.save_pretrained
