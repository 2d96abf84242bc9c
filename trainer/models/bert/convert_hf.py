"""Hugging Face-format BERT weights <-> the native BertEncoder.

A Hugging Face BERT directory holds `config.json`, `model.safetensors` and
`vocab.txt`. The safetensors file is read with numpy, so no PyTorch is needed.
"""

from trainer.models import hf_format
from trainer.models.bert.encoder import BertConfig, BertEncoder
from trainer.models.hf_format import WeightImportError, WeightMap, dense, norm

VOCAB_FILE = "vocab.txt"
# A buffer that holds no learned weights, and the pre-training heads the encoder does not use.
_IGNORED = ("embeddings.position_ids", "cls.")


def load_config(model_dir: str) -> BertConfig:
    path, hf = hf_format.read_config(model_dir, "bert", default_type="bert")
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise WeightImportError(f"{path}: only BERT with exact GELU and absolute positions is supported.")
    return BertConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
        layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02),
    )


def _weight_map(encoder: BertEncoder) -> WeightMap:
    """Hugging Face tensor name -> (variable, whether its matrix is transposed)."""
    emb = encoder.embeddings
    mapping = {
        "embeddings.word_embeddings.weight": (emb.word_embeddings, False),
        "embeddings.position_embeddings.weight": (emb.position_embeddings, False),
        "embeddings.token_type_embeddings.weight": (emb.type_embeddings, False),
        **norm("embeddings.LayerNorm", emb.layer_norm),
        **dense("pooler.dense", encoder.pooler),
    }
    for i, block in enumerate(encoder.blocks):
        p = f"encoder.layer.{i}"
        mapping.update(dense(f"{p}.attention.self.query", block.attention.query))
        mapping.update(dense(f"{p}.attention.self.key", block.attention.key))
        mapping.update(dense(f"{p}.attention.self.value", block.attention.value))
        mapping.update(dense(f"{p}.attention.output.dense", block.attention.output_dense))
        mapping.update(norm(f"{p}.attention.output.LayerNorm", block.attention_layer_norm))
        mapping.update(dense(f"{p}.intermediate.dense", block.intermediate))
        mapping.update(dense(f"{p}.output.dense", block.output_dense))
        mapping.update(norm(f"{p}.output.LayerNorm", block.output_layer_norm))
    return mapping


def load_weights(encoder: BertEncoder, model_dir: str) -> None:
    """Assigns every encoder weight from `model_dir/model.safetensors` (encoder must be built).

    A sentence-embedding export may lack the pooler; it then starts random.
    """
    hf_format.import_weights(_weight_map(encoder), model_dir, "bert.", optional=("pooler.",), ignored=_IGNORED)


def save_pretrained(encoder: BertEncoder, vocab_path: str, model_dir: str) -> None:
    """Writes the encoder as a Hugging Face-format directory (config, weights, vocab)."""
    config = encoder.config
    hf_config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "hidden_dropout_prob": config.dropout_rate,
        "attention_probs_dropout_prob": config.attention_dropout_rate,
        "layer_norm_eps": config.layer_norm_epsilon,
        "initializer_range": config.initializer_range,
        "hidden_act": "gelu",
    }
    hf_format.save_pretrained(_weight_map(encoder), hf_config, vocab_path, VOCAB_FILE, model_dir)
