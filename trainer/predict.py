"""Classifies texts with an exported serving model."""

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the SavedModel)

from trainer.export import SIGNATURE


def predict(export_path: str, texts: list[str], batch_size: int = 64) -> list[float]:
    """Positive-class probability of each text."""
    serve = tf.saved_model.load(export_path).signatures[SIGNATURE]
    probabilities = []
    for start in range(0, len(texts), batch_size):
        batch = tf.constant(texts[start : start + batch_size], dtype=tf.string)
        probabilities.extend(serve(text=batch)["probability"].numpy().tolist())
    return probabilities


def read_texts(path: str) -> list[str]:
    """One text per line; blank lines are skipped; invalid UTF-8 becomes U+FFFD."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
