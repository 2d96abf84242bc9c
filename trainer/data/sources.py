"""Data sources: labelled texts from TFDS, an aclImdb tree or archive, CSV, JSONL, TFRecord or prepared
token shards, split for training.

Small local sources are read whole into `Examples` (IMDb is ~33 MB of text),
where a seeded permutation splits train into train and validation and the
input plan is exact. Sharded, remote, TFRecord or large sources are streamed
(trainer/data/streams.py): their splits are `Stream`s, held out by a hash of
each record's key. The rules on which paths fit which source live here, once.
"""

import os

from absl import logging
import numpy as np

from trainer.config import DataConfig
from trainer.data import prepared, streams
from trainer.data.aclimdb import ARCHIVE_SUFFIXES, read_aclimdb
from trainer.data.examples import DataError, Examples, Splits
from trainer.data.streams import Stream, StreamSource
from trainer.data.tables import Columns, read_table, table_format
from trainer.data.tfds_source import read_tfds

__all__ = ["DataError", "Examples", "Splits", "is_streamed", "load_splits", "resolve_source", "split"]


def _columns(data_config: DataConfig) -> Columns:
    return Columns(
        data_config.text_column, data_config.text_pair_column, data_config.label_column, data_config.label_delimiter
    )


def is_streamed(data_config: DataConfig) -> bool:
    """Whether the configured source is read as a stream (see DataConfig.streaming)."""
    source, path = data_config.source, data_config.path
    if source in ("tfds", "aclimdb") or not path:
        return False
    if source == "prepared" or prepared.is_prepared(path):
        return True
    if data_config.streaming != "auto":
        return data_config.streaming == "on"
    return streams.is_streamed_path(path, source)


def has_examples(split: Examples | Stream | None) -> bool:
    """Whether a split exists (and, held in memory, is not empty)."""
    return split is not None and (isinstance(split, Stream) or len(split) > 0)


def label_examples(split: Examples | Stream, sample_size: int) -> Examples:
    """What the task learns its labels from: the examples, or a streamed split's first `sample_size` records
    (--config.data.label_sample)."""
    return split.sample(sample_size) if isinstance(split, Stream) else split


def _stream_splits(data_config: DataConfig) -> Splits:
    columns, id_column, source = _columns(data_config), data_config.id_column, data_config.source
    seq_length = data_config.seq_length

    def opened(path: str, flag: str) -> StreamSource:
        if source == "prepared" or prepared.is_prepared(path):
            if not prepared.is_prepared(path):
                raise DataError(f"{flag}={path} is not a directory of prepared shards (no {prepared.METADATA_FILE}).")
            return StreamSource.open_prepared(path, flag, "train", data_config)
        return StreamSource.open(path, flag, columns, id_column, source)

    train_source = opened(data_config.path, "--config.data.path")
    if train_source is None:
        raise DataError(f"--config.data.path={data_config.path} holds no prepared train split.")
    fraction = data_config.validation_fraction
    if data_config.validation_path:
        train = Stream(train_source, "train", seq_length=seq_length)
        validation = Stream(
            opened(data_config.validation_path, "--config.data.validation_path"), "validation", seq_length=seq_length
        )
    else:
        train = Stream(train_source, "train", fraction, "train" if fraction else "all", seq_length)
        validation = Stream(train_source, "validation", fraction, "validation", seq_length) if fraction else None
    if data_config.test_path:
        test_source = opened(data_config.test_path, "--config.data.test_path")
    elif train_source.format == "prepared":  # A prepared source's own test split, if it had one.
        test_source = StreamSource.open_prepared(data_config.path, "--config.data.path", "test", data_config)
    else:
        test_source = None
    test = Stream(test_source, "test", seq_length=seq_length) if test_source else None
    logging.info(
        "Streaming %d %s file(s) from %s: validation %s, test %s.",
        len(train_source.files),
        train_source.format,
        data_config.path,
        "from --config.data.validation_path" if data_config.validation_path else f"{fraction:.0%} by key hash",
        f"{len(test.files)} file(s)" if test else "none",
    )
    return Splits(train, validation, test)


def load_splits(data_config: DataConfig, seed: int, tfds_data_dir: str | None = None) -> Splits:
    """Reads the configured source and holds out a seeded validation split of train (streamed sources:
    opens them, reading nothing but their headers)."""
    if is_streamed(data_config):
        return _stream_splits(data_config)
    source = resolve_source(data_config)
    seq_length = data_config.seq_length
    columns = _columns(data_config)
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
    """Turns source 'auto' into a concrete source by looking at `path`; checks the paths fit it (every shard
    of a streamed source: its header or first record)."""
    source, path, test_path = data_config.source, data_config.path, data_config.test_path
    if data_config.validation_path and not is_streamed(data_config):
        raise DataError(
            "--config.data.validation_path is for streamed sources; an in-memory source holds out "
            "--config.data.validation_fraction of its training data (or set --config.data.streaming=on)."
        )
    if is_streamed(data_config):
        if source in ("tfds", "aclimdb"):
            raise DataError(
                f"--config.data.streaming=on: the {source} source is read into memory; use csv/jsonl/tfrecord."
            )
        return _stream_splits(data_config).train.source.format
    if source == "tfrecord":
        raise DataError("--config.data.source=tfrecord is always streamed: drop --config.data.streaming=off.")
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
    if prepared.looks_unfinished(path):
        raise DataError(
            f"--config.data.path={path} holds prepared shards but no {prepared.METADATA_FILE}: the prepare that "
            "wrote them was cut off. Run python -m trainer.prepare again."
        )
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
