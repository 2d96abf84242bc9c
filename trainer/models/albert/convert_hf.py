"""Hugging Face-format ALBERT weights <-> the native AlbertEncoder.

A Hugging Face ALBERT directory (e.g. albert-base-v2) holds `config.json`,
`model.safetensors` and the SentencePiece model `spiece.model`. The
safetensors file is read with numpy, so no PyTorch is needed. Only the
standard layout is supported: one layer group with one layer in it, shared
by all layers.
"""

from trainer.models import hf_format
from trainer.models.albert.encoder import APPROXIMATE_GELU, AlbertConfig, AlbertEncoder
from trainer.models.hf_format import WeightImportError, WeightMap, dense, norm

SPIECE_FILE = "spiece.model"
# The one shared layer; Hugging Face nests it in group 0.
_LAYER = "encoder.albert_layer_groups.0.albert_layers.0"
# Buffers that hold no learned weights, and pre-training heads the encoder does not use.
_IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids", "predictions.", "sop_classifier.")


def load_config(model_dir: str) -> AlbertConfig:
    path, hf = hf_format.read_config(model_dir, "albert")
    for key in ("num_hidden_groups", "inner_group_num"):
        if hf.get(key, 1) != 1:
            raise WeightImportError(
                f"{path}: {key}={hf[key]}; only ALBERT with one shared layer (num_hidden_groups=1, "
                "inner_group_num=1) is supported."
            )
    hidden_act = hf.get("hidden_act", "gelu_new")
    if hidden_act not in APPROXIMATE_GELU:
        raise WeightImportError(
            f"{path}: hidden_act {hidden_act!r} is not supported; expected one of {', '.join(APPROXIMATE_GELU)}."
        )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise WeightImportError(f"{path}: only absolute position embeddings are supported.")
    try:
        return _albert_config(hf, hidden_act)
    except KeyError as e:
        raise WeightImportError(f"{path} lacks the key {e.args[0]!r}.") from None


def _albert_config(hf: dict, hidden_act: str) -> AlbertConfig:
    return AlbertConfig(
        vocab_size=hf["vocab_size"],
        embedding_size=hf.get("embedding_size", 128),
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        dropout_rate=hf.get("hidden_dropout_prob", 0.0),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.0),
        hidden_act=hidden_act,
        layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02),
    )


def _weight_map(encoder: AlbertEncoder) -> WeightMap:
    """Hugging Face tensor name (without the "albert." prefix) -> (variable, whether transposed)."""
    tables, block = encoder.embeddings.tables, encoder.shared_block
    return {
        "embeddings.word_embeddings.weight": (tables.word_embeddings, False),
        "embeddings.position_embeddings.weight": (tables.position_embeddings, False),
        "embeddings.token_type_embeddings.weight": (tables.type_embeddings, False),
        **norm("embeddings.LayerNorm", tables.layer_norm),
        **dense("encoder.embedding_hidden_mapping_in", encoder.embeddings.projection),
        **dense(f"{_LAYER}.attention.query", block.attention.query),
        **dense(f"{_LAYER}.attention.key", block.attention.key),
        **dense(f"{_LAYER}.attention.value", block.attention.value),
        **dense(f"{_LAYER}.attention.dense", block.attention.output_dense),
        **norm(f"{_LAYER}.attention.LayerNorm", block.attention_layer_norm),
        **dense(f"{_LAYER}.ffn", block.intermediate),
        **dense(f"{_LAYER}.ffn_output", block.output_dense),
        **norm(f"{_LAYER}.full_layer_layer_norm", block.output_layer_norm),
        **dense("pooler", encoder.pooler),
    }


def load_weights(encoder: AlbertEncoder, model_dir: str) -> None:
    """Assigns every encoder weight from `model_dir/model.safetensors` (encoder must be built)."""
    hf_format.import_weights(_weight_map(encoder), model_dir, "albert.", ignored=_IGNORED)


def save_pretrained(encoder: AlbertEncoder, spiece_model_path: str, model_dir: str) -> None:
    """Writes the encoder as a Hugging Face-format AlbertModel directory (config, weights, spiece.model)."""
    config = encoder.config
    hf_config = {
        "model_type": "albert",
        "architectures": ["AlbertModel"],
        "vocab_size": config.vocab_size,
        "embedding_size": config.embedding_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_hidden_groups": 1,
        "inner_group_num": 1,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "hidden_dropout_prob": config.dropout_rate,
        "attention_probs_dropout_prob": config.attention_dropout_rate,
        "hidden_act": config.hidden_act,
        "layer_norm_eps": config.layer_norm_epsilon,
        "initializer_range": config.initializer_range,
        "position_embedding_type": "absolute",
    }
    hf_format.save_pretrained(_weight_map(encoder), hf_config, spiece_model_path, SPIECE_FILE, model_dir)
