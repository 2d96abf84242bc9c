"""Labels as the sources give them -> what the tasks train on: the label vocabulary and its checks.

A label is a number or a string (or, for multi-label tasks, a list of them);
its name is its text, integers without a decimal point ("7", not "7.0"). The
vocabulary is `task.labels` when given, else the training data's names,
sorted (numerically when every name is a number). Every problem names the
example at fault: file and line for tables, the review for aclImdb.
"""

import math

import numpy as np
import tensorflow as tf

from trainer.data.examples import DataError

_BINARY = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


def name(value, where: str) -> str:
    """The name of one label value; raises DataError for what cannot be a label."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise DataError(f"{where}: label {value!r} is not a number or a string.")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{where}: label {value!r} is not a finite number.")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, np.floating):
        return name(float(value), where)
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: the label is empty.")
    return text


def is_number(text: str) -> bool:
    """Whether a label name reads as a finite number."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _sort_key(names: list[str]):
    return (lambda n: float(n)) if all(is_number(n) for n in names) else (lambda n: n)


def names_of(labels: np.ndarray, ids: np.ndarray, several: bool = False) -> list[list[str]]:
    """Each example's label names (one each, or a list of them with `several`), kinds checked.

    A column of numbers and words mixed is refused at its first example of the other kind.
    """
    result = []
    first_kind = None
    for value, where in zip(labels, ids):
        names = [name(v, where) for v in (value if several and isinstance(value, list) else [value])]
        for label in names:
            kind = "number" if is_number(label) else "word"
            if first_kind is None:
                first_kind = (kind, where)
            elif kind != first_kind[0]:
                raise DataError(
                    f"{where}: label {label!r} is a {kind}, but {first_kind[1]} has a {first_kind[0]}: "
                    "one label column holds one kind."
                )
        result.append(names)
    return result


def vocabulary(
    names: list[list[str]], ids: np.ndarray, given: tuple[str, ...] = (), num_classes: int = 0
) -> tuple[str, ...]:
    """The label names in output order: `given` (checked against the data), else the data's, sorted."""
    seen = {label for example in names for label in example}
    if given:
        if len(set(given)) < len(given):
            raise DataError(f"--config.task.labels={list(given)} names a label twice.")
        for example, where in zip(names, ids):
            unknown = [label for label in example if label not in given]
            if unknown:
                raise DataError(f"{where}: label {unknown[0]!r} is not one of --config.task.labels={list(given)}.")
        empty = [label for label in given if label not in seen]
        if empty:
            raise DataError(
                f"--config.task.labels: {empty} have no training example; every class needs some to be learned."
            )
        result = tuple(given)
    else:
        result = tuple(sorted(seen, key=_sort_key(list(seen))))
    if num_classes and num_classes != len(result):
        raise DataError(
            f"--config.task.num_classes={num_classes}, but the training data have {len(result)} labels "
            f"({', '.join(result[:10])}{', ...' if len(result) > 10 else ''})."
        )
    if len(result) < 2:
        raise DataError(f"The training data have only the label(s) {list(result)}: a classifier needs at least two.")
    return result


def indices(names: list[list[str]], ids: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    """int32 [N]: each example's label as an index into `vocab`; a name outside it is refused."""
    index = {label: i for i, label in enumerate(vocab)}
    result = np.empty(len(names), np.int32)
    for row, (example, where) in enumerate(zip(names, ids)):
        if example[0] not in index:
            raise DataError(f"{where}: label {example[0]!r} is not among the training data's labels {list(vocab)}.")
        result[row] = index[example[0]]
    return result


def multi_hot(names: list[list[str]], ids: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    """float32 [N, L]: 1 where the example has the label; a name outside `vocab` is refused."""
    index = {label: i for i, label in enumerate(vocab)}
    result = np.zeros((len(names), len(vocab)), np.float32)
    for row, (example, where) in enumerate(zip(names, ids)):
        for label in example:
            if label not in index:
                raise DataError(f"{where}: label {label!r} is not among the training data's labels {list(vocab)}.")
            result[row, index[label]] = 1.0
    return result


def binary(value, where: str) -> int:
    """0 or 1, given as a number or a string ("1", "1.0"); anything else is an error."""
    if isinstance(value, str):
        label = _BINARY.get(value.strip())
    elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and value in (0, 1):
        label = int(value)
    else:
        label = None
    if label is None:
        raise DataError(f"{where}: label {value!r} is not 0 or 1.")
    return label


def number(value, where: str) -> float:
    """A regression target: a finite number, given as one or as a string."""
    try:
        target = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        target = math.nan
    if isinstance(value, bool) or not math.isfinite(target):
        raise DataError(f"{where}: target {value!r} is not a finite number.")
    return target


# ----- the same rules as TensorFlow ops, for streamed data (one label string at a time) -----

_NUMBER = r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*"


def encode_binary(label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A 0/1 label string -> (float32 target, whether it is 0 or 1)."""
    stripped = tf.strings.strip(label)
    ok = tf.strings.regex_full_match(stripped, r"[01](\.0*)?")
    return tf.where(ok, tf.strings.to_number(tf.where(ok, stripped, "0")), 0.0), ok


def encode_number(label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A number string -> (float32 target, whether it reads as a finite number)."""
    ok = tf.strings.regex_full_match(label, _NUMBER)
    target = tf.strings.to_number(tf.where(ok, tf.strings.strip(label), "0"))
    ok &= tf.math.is_finite(target)
    return tf.where(ok, target, 0.0), ok


def lookup_table(vocab: tuple[str, ...]) -> tf.lookup.StaticHashTable:
    """Label name -> its index in `vocab` (-1 for a name outside it)."""
    initializer = tf.lookup.KeyValueTensorInitializer(list(vocab), tf.range(len(vocab), dtype=tf.int64))
    return tf.lookup.StaticHashTable(initializer, default_value=-1)


def encode_index(label: tf.Tensor, table: tf.lookup.StaticHashTable) -> tuple[tf.Tensor, tf.Tensor]:
    """A label name -> (int32 index into the vocabulary, whether it is in it)."""
    index = table.lookup(canonical(label))
    return tf.cast(tf.maximum(index, 0), tf.int32), index >= 0


def encode_multi_hot(
    label: tf.Tensor, table: tf.lookup.StaticHashTable, size: int, delimiter: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """Label names joined by `delimiter` -> (float32 [size] multi-hot, whether every name is known)."""
    names = tf.strings.split(label, delimiter)
    names = tf.boolean_mask(names, tf.strings.length(tf.strings.strip(names)) > 0)
    indices = table.lookup(canonical(names))
    ok = tf.reduce_all(indices >= 0)
    hot = tf.reduce_max(tf.one_hot(tf.maximum(indices, 0), size), axis=0)
    return tf.where(ok, tf.reshape(hot, [size]), tf.zeros([size])), ok


def canonical(label: tf.Tensor) -> tf.Tensor:
    """A label's name as `name` gives it: stripped, and a whole number without its decimal point."""
    label = tf.strings.strip(label)
    return tf.strings.regex_replace(label, r"^([-+]?\d+)\.0*$", r"\1")
