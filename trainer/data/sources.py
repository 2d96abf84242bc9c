"""Data sources: labelled texts from TFDS, an aclImdb tree or archive, CSV or JSONL, split for training.

Every source yields in-memory `Examples` (IMDb is ~33 MB of text); a seeded
permutation then splits train into train and validation, the same way for
every source. The rules on which paths fit which source live here, once.
"""

import os

from absl import logging
import numpy as np

from trainer.config import DataConfig
from trainer.data.aclimdb import ARCHIVE_SUFFIXES, read_aclimdb
from trainer.data.examples import DataError, Examples, Splits
from trainer.data.tables import Columns, read_table, table_format
from trainer.data.tfds_source import read_tfds

__all__ = ["DataError", "Examples", "Splits", "load_splits", "resolve_source", "split"]


def load_splits(data_config: DataConfig, seed: int, tfds_data_dir: str | None = None) -> Splits:
    """Reads the configured source and holds out a seeded validation split of train."""
    source = resolve_source(data_config)
    seq_length = data_config.seq_length
    columns = Columns(
        data_config.text_column, data_config.text_pair_column, data_config.label_column, data_config.label_delimiter
    )
    if source == "tfds":
        train, test = read_tfds(data_config.tfds_name, tfds_data_dir, seq_length, columns[:3])
    elif source == "aclimdb":
        train, test = read_aclimdb(data_config.path, seq_length, data_config.label_source)
    else:
        train = read_table(data_config.path, source, columns, seq_length)
        test = None
        if data_config.test_path:
            test_source = table_format(data_config.test_path) if data_config.source == "auto" else source
            test = read_table(data_config.test_path, test_source or source, columns, seq_length)
    usable, fraction = len(train), data_config.validation_fraction
    train, validation = split(train, fraction, seed)
    if not len(train) or (fraction > 0 and not len(validation)):
        raise DataError(
            f"--config.data.validation_fraction={fraction} of {usable} training examples leaves {len(train)} "
            f"for training and {len(validation)} for validation: both need at least one."
        )
    if data_config.max_examples:
        train, validation = (subsample(x, data_config.max_examples, seed) for x in (train, validation))
        test = subsample(test, data_config.max_examples, seed) if test is not None else None
    logging.info(
        "Data from %s: %d train, %d validation, %s test examples.",
        source,
        len(train),
        len(validation),
        len(test) if test is not None else "no",
    )
    return Splits(train, validation, test)


def resolve_source(data_config: DataConfig) -> str:
    """Turns source 'auto' into a concrete source by looking at `path`; checks the paths fit it."""
    source, path, test_path = data_config.source, data_config.path, data_config.test_path
    if source == "tfds" and path:
        raise DataError(
            f"--config.data.source=tfds reads TFDS {data_config.tfds_name!r}, but --config.data.path={path} "
            "is set too: drop one of them."
        )
    resolved = _resolve_path_source(source, path)
    if test_path:
        if resolved in ("tfds", "aclimdb"):
            raise DataError(
                f"--config.data.test_path={test_path}: only csv and jsonl sources take a separate test file; "
                f"the {resolved} source brings its own test split."
            )
        if not os.path.exists(test_path):
            raise DataError(f"--config.data.test_path={test_path}: no such file.")
        if os.path.isdir(test_path):
            raise DataError(f"--config.data.test_path={test_path} is a directory; expected a .csv or .jsonl file.")
    if resolved in ("csv", "jsonl") and os.path.isdir(path):
        raise DataError(
            f"--config.data.path={path} is a directory, but --config.data.source={resolved} reads one file."
        )
    if data_config.label_source != "polarity" and resolved != "aclimdb":
        raise DataError(
            f"--config.data.label_source={data_config.label_source} reads the ratings in aclImdb file names; "
            f"the {resolved} source has its labels in --config.data.label_column."
        )
    if data_config.text_pair_column and resolved == "aclimdb":
        raise DataError(
            f"--config.data.text_pair_column={data_config.text_pair_column}: aclImdb reviews are single texts."
        )
    return resolved


def _resolve_path_source(source: str, path: str) -> str:
    if source == "tfds":
        return source
    if not path:
        if source == "auto":
            return "tfds"
        raise DataError(f"--config.data.source={source} needs --config.data.path.")
    if not os.path.exists(path):
        raise DataError(f"--config.data.path={path}: no such file or directory.")
    if source != "auto":
        return source
    lower = path.lower()
    if os.path.isdir(path) or lower.endswith(ARCHIVE_SUFFIXES):
        return "aclimdb"
    found = table_format(path)
    if found:
        return found
    raise DataError(
        f"--config.data.path={path}: cannot tell its format; expected an aclImdb directory, "
        "a .tar(.gz/.bz2/.xz) archive, a .csv or a .jsonl file (or set --config.data.source)."
    )


def split(examples: Examples, validation_fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Deterministic, seeded train/validation split."""
    order = np.random.default_rng(seed).permutation(len(examples))
    num_validation = int(round(len(examples) * validation_fraction))
    return examples.take(order[num_validation:]), examples.take(order[:num_validation])


def subsample(examples: Examples, cap: int, seed: int) -> Examples:
    """A seeded random subset of at most `cap` examples (both classes, unlike a prefix)."""
    if len(examples) <= cap:
        return examples
    return examples.take(np.random.default_rng(seed).permutation(len(examples))[:cap])
