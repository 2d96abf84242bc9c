"""Classifies texts with an exported serving model."""

from collections.abc import Callable

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the SavedModel)

from trainer.errors import UserError
from trainer.serving.export import SIGNATURE, complete_exports

Serve = Callable[..., dict[str, tf.Tensor]]


def load(export_path: str) -> Serve:
    """The serving signature of the SavedModel at `export_path`."""
    return tf.saved_model.load(export_path).signatures[SIGNATURE]


def load_newest(export_dir: str) -> tuple[str, Serve] | None:
    """The newest export under `export_dir` that loads, with its signature; None if none does.

    A version that is incomplete, or whose files do not load (a torn or corrupt
    saved_model.pb), is skipped with a warning for the next older one.
    """
    for path in complete_exports(export_dir):
        try:
            return path, load(path)
        except Exception as e:  # Parse, op and file errors all mean "this version cannot serve".
            logging.warning("Skipping the export %s: it does not load (%s).", path, str(e).splitlines()[0][:200])
    return None


def predict(
    serve: Serve, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """The serving signature's outputs for `texts` (and `text_pairs`, for a pair model), in batches:
    e.g. {"probability": [N]}."""
    batches: dict[str, list[np.ndarray]] = {}
    # At least one call, so that no texts still give every output (empty).
    for start in range(0, max(len(texts), 1), batch_size):
        inputs = {"text": tf.constant(texts[start : start + batch_size], dtype=tf.string)}
        if text_pairs is not None:
            inputs["text_pair"] = tf.constant(text_pairs[start : start + batch_size], dtype=tf.string)
        for name, value in serve(**inputs).items():
            batches.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(values) for name, values in batches.items()}


def split_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """Each text of a pair model split at its first tab into its two texts; raises UserError for one without."""
    pairs = []
    for text in texts:
        first, tab, second = text.partition("\t")
        if not tab:
            raise UserError(
                f"{text[:60]!r}: this model takes text pairs; give each as its two texts separated by a tab "
                "(--text=$'first\\tsecond', or two tab-separated columns in --input_file)."
            )
        pairs.append((first, second))
    return pairs


def read_texts(path: str) -> list[str]:
    """One text per line; blank lines are skipped; invalid UTF-8 becomes U+FFFD."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
