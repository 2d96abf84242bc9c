"""Hugging Face-format DistilBERT weights <-> the native DistilBertEncoder.

A Hugging Face DistilBERT directory (e.g. distilbert-base-uncased) holds
`config.json`, `model.safetensors` and `vocab.txt` (BERT's WordPiece). Base
models keep the encoder under `distilbert.` (or at the top level); sequence
classifiers add `pre_classifier` (imported: it is this encoder's pooled
output) and `classifier` (not imported: each task trains its own head).
"""

from trainer.models import hf_format
from trainer.models.bert.convert_hf import CONFIG_KEYS as BERT_CONFIG_KEYS
from trainer.models.distilbert.encoder import DistilBertConfig
from trainer.models.hf_format import BlockNames, ConfigKeys, Supported

VOCAB_FILE = "vocab.txt"
# Buffers, the task head and the pre-training heads: not the encoder's.
_IGNORED = ("embeddings.position_ids", "classifier.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.")
# BERT's keys under DistilBERT's names, without token types and the epsilon (its LayerNorms use
# 1e-12, the config's default).
_RENAMED = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "intermediate_size": "hidden_dim",
    "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attention_dropout",
}
_CONFIG_KEYS: ConfigKeys = {
    field: (_RENAMED.get(key, key), default)
    for field, (key, default) in BERT_CONFIG_KEYS.items()
    if field not in ("type_vocab_size", "layer_norm_epsilon")
}
# Sinusoidal position tables are stored like learned ones, so they import as well.
_SUPPORTED: Supported = {"activation": ("gelu",), "sinusoidal_pos_embds": (False, True)}
_BLOCK = BlockNames.of(
    "attention.q_lin attention.k_lin attention.v_lin attention.out_lin "
    "sa_layer_norm "
    "ffn.lin1 ffn.lin2 output_layer_norm"
)
_WEIGHTS = hf_format.layered_encoder("pre_classifier", "transformer.layer.{}", _BLOCK)


# A base model has no pre-classifier; it then starts random.
_OPTIONAL = ("pre_classifier.",)
CONVERTER = hf_format.Converter(
    "distilbert", DistilBertConfig, _CONFIG_KEYS, _SUPPORTED, _WEIGHTS, VOCAB_FILE, _OPTIONAL, _IGNORED
)
load_config, load_weights, save_pretrained = CONVERTER.load_config, CONVERTER.load_weights, CONVERTER.save_pretrained
