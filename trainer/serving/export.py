"""Exports a serving SavedModel that takes raw strings.

Layout follows TF Serving: `<export_dir>/<step>/saved_model.pb`. Each version
is written under a temporary name and renamed into place when complete, so a
torn write is never taken for a model.
"""

import os
import shutil

from absl import logging
import tensorflow as tf
import tf_keras

from trainer.models.tokenizer import Tokenizer
from trainer.tasks.base import Task

SIGNATURE = "serving_default"
LABELS_FILE = "labels.txt"
_TMP_PREFIX = ".tmp-"
# Requests are classified in groups of this many texts of similar length, each group
# padded only to its longest text, rounded up to a multiple of LENGTH_MULTIPLE.
CHUNK_SIZE = 16
LENGTH_MULTIPLE = 32


def logits_by_length(model: tf_keras.Model, features: dict[str, tf.Tensor], num_outputs: int = 1) -> tf.Tensor:
    """The model's outputs ([batch], or [batch, num_outputs]) for a batch of padded features, computed in
    chunks of similar length.

    A batch padded to its longest text pays for that length on every text;
    sorted by length and cut into chunks, short texts are computed short. The
    result is the same as one call on the whole batch (padding is masked, and
    nothing in inference mixes examples), in the original order.
    """
    # The loop below needs AutoGraph; the model, branching only on Python values, does not.
    infer = tf.autograph.experimental.do_not_convert(lambda chunk: model(chunk, training=False))
    lengths = tf.reduce_sum(features["input_mask"], axis=1)
    order = tf.argsort(lengths, stable=True)
    num_texts = tf.size(order)
    max_length = tf.shape(features["input_mask"])[1]
    num_chunks = (num_texts + CHUNK_SIZE - 1) // CHUNK_SIZE
    row_shape = [] if num_outputs == 1 else [num_outputs]
    chunks = tf.TensorArray(tf.float32, size=num_chunks, infer_shape=False, element_shape=[None, *row_shape])
    for i in tf.range(chunks.size()):
        rows = order[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
        longest = tf.reduce_max(tf.gather(lengths, rows))
        length = tf.minimum((longest + LENGTH_MULTIPLE - 1) // LENGTH_MULTIPLE * LENGTH_MULTIPLE, max_length)
        chunk = {key: tf.gather(value, rows)[:, :length] for key, value in features.items()}
        chunks = chunks.write(i, tf.cast(infer(chunk), tf.float32))
    return tf.scatter_nd(order[:, tf.newaxis], chunks.concat(), [num_texts, *row_shape])


class ServingModule(tf.Module):
    """Tokenizer + model + the task's outputs: a 1-D batch of strings (and of second strings, for a pair
    task) -> the task's serving outputs, e.g. positive-class probabilities.

    Holds the model's variables and a traced function, not the Keras model
    itself, so the SavedModel needs neither Keras nor this project to load.
    """

    def __init__(self, task: Task, tokenizer: Tokenizer, model: tf_keras.Model):
        super().__init__(name="serving")
        self.tokenizer = tokenizer
        self.model_variables = list(model.variables)
        text = tf.TensorSpec([None], tf.string, name="text")

        def outputs(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return task.serving_outputs(logits_by_length(model, features, task.num_outputs))

        if task.pairs:

            @tf.function(input_signature=[text, tf.TensorSpec([None], tf.string, name="text_pair")])
            def serve(text: tf.Tensor, text_pair: tf.Tensor) -> dict[str, tf.Tensor]:
                tf.debugging.assert_equal(
                    tf.size(text),
                    tf.size(text_pair),
                    message="this model takes text pairs: give as many text_pair as text",
                )
                return outputs(tokenizer(text, text_pair))

        else:

            @tf.function(input_signature=[text])
            def serve(text: tf.Tensor) -> dict[str, tf.Tensor]:
                return outputs(tokenizer(text))

        # Kept traced: saving a tf.function would trace it again (and the tokenizer and model inside).
        self.serve = serve.get_concrete_function()


def _remove_abandoned_exports(export_dir: str) -> None:
    """Deletes temporary export directories whose writer process is gone (killed mid-export)."""
    for name in os.listdir(export_dir):
        if not name.startswith(_TMP_PREFIX):
            continue
        pid = name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
            continue  # Still being written by a live process.
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        logging.info("Removing the abandoned partial export %s.", os.path.join(export_dir, name))
        shutil.rmtree(os.path.join(export_dir, name), ignore_errors=True)


def export(task: Task, tokenizer: Tokenizer, model: tf_keras.Model, export_dir: str, version: int) -> str:
    """Writes version `version` under `export_dir`; returns its path.

    The label names, in output order, go to assets/labels.txt beside the model.
    """
    final = os.path.join(export_dir, str(version))
    tmp = os.path.join(export_dir, f"{_TMP_PREFIX}{version}-{os.getpid()}")
    os.makedirs(export_dir, exist_ok=True)
    _remove_abandoned_exports(export_dir)
    module = ServingModule(task, tokenizer, model)
    tf.saved_model.save(module, tmp, signatures={SIGNATURE: module.serve})
    if task.label_names:
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        with open(os.path.join(tmp, "assets", LABELS_FILE), "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in task.label_names))
    if os.path.exists(final):
        # Moved aside, not deleted in place: a kill mid-delete would leave a partial version.
        replaced = os.path.join(export_dir, f"{_TMP_PREFIX}replaced-{version}-{os.getpid()}")
        os.rename(final, replaced)
        os.rename(tmp, final)
        shutil.rmtree(replaced)
    else:
        os.rename(tmp, final)
    inputs = "text, text_pair" if task.pairs else "text"
    outputs = ", ".join(sorted(module.serve.structured_outputs))
    logging.info("Exported serving model to %s (signature %r: %s -> %s).", final, SIGNATURE, inputs, outputs)
    return final


def is_complete(path: str) -> bool:
    """Whether `path` holds a whole SavedModel: its graph and its variables' index."""
    return os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isfile(
        os.path.join(path, "variables", "variables.index")
    )


def complete_exports(export_dir: str) -> list[str]:
    """The complete versions under `export_dir`, newest first."""
    if not os.path.isdir(export_dir):
        return []
    versions = sorted((int(name) for name in os.listdir(export_dir) if name.isdigit()), reverse=True)
    return [os.path.join(export_dir, str(v)) for v in versions if is_complete(os.path.join(export_dir, str(v)))]


def latest_export(export_dir: str) -> str | None:
    """The highest complete version under `export_dir`, or None."""
    return next(iter(complete_exports(export_dir)), None)
