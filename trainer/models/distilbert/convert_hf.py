"""Hugging Face-format DistilBERT weights <-> the native DistilBertEncoder.

A Hugging Face DistilBERT directory (e.g. distilbert-base-uncased) holds
`config.json`, `model.safetensors` and `vocab.txt` (BERT's WordPiece). Base
models keep the encoder under `distilbert.` (or at the top level); sequence
classifiers add `pre_classifier` (imported: it is this encoder's pooled
output) and `classifier` (not imported: each task trains its own head).
"""

from trainer.models import hf_format
from trainer.models.distilbert.encoder import DistilBertConfig, DistilBertEncoder
from trainer.models.hf_format import WeightImportError, WeightMap, dense, norm

VOCAB_FILE = "vocab.txt"
# Buffers, the task head and the pre-training heads: not the encoder's.
_IGNORED = ("embeddings.position_ids", "classifier.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.")


def load_config(model_dir: str) -> DistilBertConfig:
    path, hf = hf_format.read_config(model_dir, "distilbert")
    if hf.get("activation", "gelu") != "gelu":
        raise WeightImportError(f"{path}: activation {hf['activation']!r} is not supported; only exact gelu is.")
    try:
        return DistilBertConfig(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["dim"],
            num_layers=hf["n_layers"],
            num_heads=hf["n_heads"],
            intermediate_size=hf["hidden_dim"],
            max_position_embeddings=hf["max_position_embeddings"],
            dropout_rate=hf.get("dropout", 0.1),
            attention_dropout_rate=hf.get("attention_dropout", 0.1),
            initializer_range=hf.get("initializer_range", 0.02),
        )
    except KeyError as e:
        raise WeightImportError(f"{path} lacks the key {e.args[0]!r}.") from None


def _weight_map(encoder: DistilBertEncoder) -> WeightMap:
    """Hugging Face tensor name (without the "distilbert." prefix) -> (variable, whether transposed)."""
    emb = encoder.embeddings
    mapping = {
        "embeddings.word_embeddings.weight": (emb.word_embeddings, False),
        "embeddings.position_embeddings.weight": (emb.position_embeddings, False),
        **norm("embeddings.LayerNorm", emb.layer_norm),
        **dense("pre_classifier", encoder.pre_classifier),
    }
    for i, block in enumerate(encoder.blocks):
        p = f"transformer.layer.{i}"
        mapping.update(dense(f"{p}.attention.q_lin", block.attention.query))
        mapping.update(dense(f"{p}.attention.k_lin", block.attention.key))
        mapping.update(dense(f"{p}.attention.v_lin", block.attention.value))
        mapping.update(dense(f"{p}.attention.out_lin", block.attention.output_dense))
        mapping.update(norm(f"{p}.sa_layer_norm", block.attention_layer_norm))
        mapping.update(dense(f"{p}.ffn.lin1", block.intermediate))
        mapping.update(dense(f"{p}.ffn.lin2", block.output_dense))
        mapping.update(norm(f"{p}.output_layer_norm", block.output_layer_norm))
    return mapping


def load_weights(encoder: DistilBertEncoder, model_dir: str) -> None:
    """Assigns every encoder weight from `model_dir/model.safetensors` (encoder must be built).

    A base model has no pre-classifier; it then starts random.
    """
    hf_format.import_weights(
        _weight_map(encoder), model_dir, "distilbert.", optional=("pre_classifier.",), ignored=_IGNORED
    )


def save_pretrained(encoder: DistilBertEncoder, vocab_path: str, model_dir: str) -> None:
    """Writes the encoder as a Hugging Face-format directory (config, weights with the pre-classifier, vocab)."""
    config = encoder.config
    hf_config = {
        "model_type": "distilbert",
        "architectures": ["DistilBertModel"],
        "vocab_size": config.vocab_size,
        "dim": config.hidden_size,
        "n_layers": config.num_layers,
        "n_heads": config.num_heads,
        "hidden_dim": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "dropout": config.dropout_rate,
        "attention_dropout": config.attention_dropout_rate,
        "initializer_range": config.initializer_range,
        "activation": "gelu",
        "sinusoidal_pos_embds": False,
    }
    hf_format.save_pretrained(_weight_map(encoder), hf_config, vocab_path, VOCAB_FILE, model_dir)
