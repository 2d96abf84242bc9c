"""Classifies texts with an exported serving model."""

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the SavedModel)

from trainer.serving.export import SIGNATURE


def predict(export_path: str, texts: list[str], batch_size: int = 64) -> dict[str, np.ndarray]:
    """The serving signature's outputs for `texts` (e.g. {"probability": [N]}), in batches."""
    serve = tf.saved_model.load(export_path).signatures[SIGNATURE]
    batches: dict[str, list[np.ndarray]] = {}
    # At least one call, so that no texts still give every output (empty).
    for start in range(0, max(len(texts), 1), batch_size):
        batch = tf.constant(texts[start : start + batch_size], dtype=tf.string)
        for name, value in serve(text=batch).items():
            batches.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(values) for name, values in batches.items()}


def read_texts(path: str) -> list[str]:
    """One text per line; blank lines are skipped; invalid UTF-8 becomes U+FFFD."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
