"""Hugging Face-format BERT weights <-> the native BertEncoder.

A Hugging Face BERT directory holds `config.json`, `model.safetensors` and
`vocab.txt`. The safetensors file is read with numpy, so no PyTorch is needed.
"""

from trainer.models import hf_format
from trainer.models.bert.encoder import BertConfig
from trainer.models.hf_format import REQUIRED, BlockNames, ConfigKeys, Supported

VOCAB_FILE = "vocab.txt"
# A buffer that holds no learned weights, and the pre-training heads the encoder does not use.
_IGNORED = ("embeddings.position_ids", "cls.")
# Also ALBERT's (albert/convert_hf.py), which changes some defaults.
CONFIG_KEYS: ConfigKeys = {
    "vocab_size": ("vocab_size", REQUIRED),
    "hidden_size": ("hidden_size", REQUIRED),
    "num_layers": ("num_hidden_layers", REQUIRED),
    "num_heads": ("num_attention_heads", REQUIRED),
    "intermediate_size": ("intermediate_size", REQUIRED),
    "max_position_embeddings": ("max_position_embeddings", REQUIRED),
    "type_vocab_size": ("type_vocab_size", 2),
    "dropout_rate": ("hidden_dropout_prob", 0.1),
    "attention_dropout_rate": ("attention_probs_dropout_prob", 0.1),
    "layer_norm_epsilon": ("layer_norm_eps", 1e-12),
    "initializer_range": ("initializer_range", 0.02),
}
_SUPPORTED: Supported = {"hidden_act": ("gelu",), "position_embedding_type": ("absolute",)}
_BLOCK = BlockNames.of(
    "attention.self.query attention.self.key attention.self.value attention.output.dense "
    "attention.output.LayerNorm intermediate.dense output.dense output.LayerNorm"
)
_WEIGHTS = hf_format.layered_encoder("pooler.dense", "encoder.layer.{}", _BLOCK)


# A sentence-embedding export may lack the pooler; it then starts random.
_OPTIONAL = ("pooler.",)
CONVERTER = hf_format.Converter("bert", BertConfig, CONFIG_KEYS, _SUPPORTED, _WEIGHTS, VOCAB_FILE, _OPTIONAL, _IGNORED)
load_config, load_weights, save_pretrained = CONVERTER.load_config, CONVERTER.load_weights, CONVERTER.save_pretrained
