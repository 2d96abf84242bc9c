"""Loads TF Hub models from a URL or a local directory, with errors a user can act on."""

import tensorflow as tf
import tensorflow_hub as hub

# Registers the text ops that BERT preprocessing SavedModels use; loading one
# without this import fails with "Op type not registered".
import tensorflow_text  # noqa: F401
import tf_keras

from trainer.errors import UserError


class HubLoadError(UserError):
    """A TF Hub handle could not be loaded; the message says how to fix it."""


def _is_remote(handle: str) -> bool:
    return handle.startswith(("http://", "https://", "gs://"))


def _describe(handle: str, flag: str, error: Exception) -> str:
    if _is_remote(handle):
        hint = (
            "TF Hub (tfhub.dev / Kaggle) may be unreachable from this machine. Download the model "
            f"on a machine with internet (it is a SavedModel directory), copy it here and set {flag}=/path/to/dir "
            "(or set TFHUB_CACHE_DIR to a pre-filled cache)."
        )
    else:
        hint = f"{flag} must be a SavedModel directory (with saved_model.pb)."
    return f"Could not load TF Hub model {flag}={handle}: {type(error).__name__}: {error}. {hint}"


def check_local(handle: str, flag: str) -> None:
    """A local handle must be a directory (checked without loading it); URLs are checked when loaded."""
    if not _is_remote(handle) and not tf.io.gfile.isdir(handle):
        raise HubLoadError(f"{flag}={handle}: no such directory.")


def load(handle: str, flag: str):
    """hub.load(handle), naming `flag` in any error."""
    check_local(handle, flag)
    try:
        return hub.load(handle)
    except Exception as e:  # Network, format and op errors all mean "cannot use this handle".
        raise HubLoadError(_describe(handle, flag, e)) from e


def keras_layer(handle: str, flag: str, trainable: bool) -> tf_keras.layers.Layer:
    """hub.KerasLayer(handle), naming `flag` in any error. Needs tf_keras (Keras 2)."""
    return hub.KerasLayer(load(handle, flag), trainable=trainable, name="hub_encoder")
