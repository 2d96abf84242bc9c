"""Data sources: labelled texts from TFDS, an aclImdb tree or archive, CSV or JSONL.

Every source yields in-memory `Examples` (IMDb is ~33 MB of text); a seeded
permutation then splits train into train and validation, the same way for
every source.
"""

import csv
import dataclasses
import json
import os
import re
import socket
import tarfile
import urllib.parse
import zlib

from absl import logging
import ml_collections
import numpy as np

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
_ACLIMDB_FILE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/([^/]+)\.txt$")


class DataError(ValueError):
    """Data cannot be read; the message names the file, flag or value at fault."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """Labelled texts, index-aligned."""

    texts: np.ndarray  # object array of str
    labels: np.ndarray  # int32, 0 or 1
    ids: np.ndarray  # object array of str: a stable name for each example

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Examples":
        return Examples(self.texts[indices], self.labels[indices], self.ids[indices])


@dataclasses.dataclass(frozen=True)
class Splits:
    train: Examples
    validation: Examples
    test: Examples | None


def load_splits(data_config: ml_collections.ConfigDict, seed: int, tfds_data_dir: str | None = None) -> Splits:
    """Reads the configured source and holds out a seeded validation split of train."""
    source = resolve_source(data_config)
    if source == "tfds":
        train, test = _load_tfds(data_config.tfds_name, tfds_data_dir)
    elif source == "aclimdb":
        train, test = _load_aclimdb(data_config.path)
    else:
        read = _read_csv if source == "csv" else _read_jsonl
        train = read(data_config.path, data_config.text_column, data_config.label_column)
        test = None
        if data_config.test_path:
            test = read(data_config.test_path, data_config.text_column, data_config.label_column)
    train, validation = split(train, data_config.validation_fraction, seed)
    if data_config.max_examples:
        train, validation = (_subsample(x, data_config.max_examples, seed) for x in (train, validation))
        test = _subsample(test, data_config.max_examples, seed) if test is not None else None
    logging.info(
        "Data from %s: %d train, %d validation, %s test examples.",
        source,
        len(train),
        len(validation),
        len(test) if test is not None else "no",
    )
    return Splits(train, validation, test)


def resolve_source(data_config: ml_collections.ConfigDict) -> str:
    """Turns source 'auto' into a concrete source by looking at `path`."""
    source, path = data_config.source, data_config.path
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
    if os.path.isdir(path) or lower.endswith((".tar.gz", ".tgz", ".tar")):
        return "aclimdb"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    raise DataError(
        f"--config.data.path={path}: cannot tell its format; expected an aclImdb directory, "
        "a .tar.gz archive, a .csv or a .jsonl file (or set --config.data.source)."
    )


def split(examples: Examples, validation_fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Deterministic, seeded train/validation split."""
    order = np.random.default_rng(seed).permutation(len(examples))
    num_validation = int(round(len(examples) * validation_fraction))
    return examples.take(order[num_validation:]), examples.take(order[:num_validation])


def _subsample(examples: Examples, cap: int, seed: int) -> Examples:
    """A seeded random subset of at most `cap` examples (both classes, unlike a prefix)."""
    if len(examples) <= cap:
        return examples
    return examples.take(np.random.default_rng(seed).permutation(len(examples))[:cap])


def _make_examples(rows: list[tuple[str, str, int]], where: str) -> Examples:
    if not rows:
        raise DataError(f"{where}: no examples found.")
    ids, texts, labels = zip(*rows)
    return Examples(
        texts=np.array(texts, dtype=object),
        labels=np.array(labels, dtype=np.int32),
        ids=np.array(ids, dtype=object),
    )


def _load_aclimdb(path: str) -> tuple[Examples, Examples | None]:
    """Reads aclImdb/{train,test}/{pos,neg}/*.txt from a directory or a tar archive."""
    rows: dict[str, list[tuple[str, str, int]]] = {"train": [], "test": []}
    for match, data in _aclimdb_files(path):
        split_name, polarity, stem = match.groups()
        text = data.decode("utf-8", errors="replace")
        rows[split_name].append((f"{split_name}/{polarity}/{stem}", text, int(polarity == "pos")))
    if not rows["train"]:
        raise DataError(
            f"--config.data.path={path}: no aclImdb/train/pos/*.txt or aclImdb/train/neg/*.txt files; "
            "expected the layout of the original aclImdb_v1.tar.gz archive."
        )
    for split_rows in rows.values():
        split_rows.sort()
    train = _make_examples(rows["train"], path)
    test = _make_examples(rows["test"], path) if rows["test"] else None
    return train, test


def _aclimdb_files(path: str):
    """Yields (name match, contents) for each review file of a directory or tar archive."""
    if os.path.isdir(path):
        root = os.path.abspath(path)
        # Accept both the aclImdb directory itself and its parent.
        prefix = "" if os.path.isdir(os.path.join(root, "aclImdb")) else "aclImdb/"
        for dirpath, _, filenames in os.walk(root):
            for filename in filenames:
                full = os.path.join(dirpath, filename)
                match = _ACLIMDB_FILE.search(prefix + os.path.relpath(full, root).replace(os.sep, "/"))
                if match:
                    with open(full, "rb") as f:
                        yield match, f.read()
        return
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                match = _ACLIMDB_FILE.search(member.name)
                if match and member.isfile():
                    yield match, archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"--config.data.path={path}: not a readable tar archive ({e}).") from e


def _parse_label(value, where: str) -> int:
    text = str(value).strip()
    if text not in ("0", "1"):
        raise DataError(f"{where}: label {value!r} is not 0 or 1.")
    return int(text)


def _read_csv(path: str, text_column: str, label_column: str) -> Examples:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; found {reader.fieldnames}. Set "
                "--config.data.text_column / --config.data.label_column."
            )
        rows = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            rows.append((where, row[text_column] or "", _parse_label(row[label_column], where)))
    return _make_examples(rows, path)


def _read_jsonl(path: str, text_column: str, label_column: str) -> Examples:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e}).") from e
            missing = [c for c in (text_column, label_column) if c not in record]
            if missing:
                raise DataError(
                    f"{where}: missing key(s) {missing}. Set --config.data.text_column / --config.data.label_column."
                )
            rows.append((where, str(record[text_column]), _parse_label(record[label_column], where)))
    return _make_examples(rows, path)


def _load_tfds(name: str, data_dir: str | None) -> tuple[Examples, Examples | None]:
    import tensorflow_datasets as tfds  # Heavy import; only this source needs it.

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if name == "imdb_reviews":
            _check_reachable(IMDB_URL, name, data_dir)
        logging.info("Downloading and preparing TFDS %s into %s.", name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except Exception as e:  # TFDS raises many kinds; all mean "not available".
            raise DataError(_offline_message(name, data_dir, str(e))) from e
    splits = []
    for split_name in ("train", "test"):
        if split_name not in builder.info.splits:
            splits.append(None)
            continue
        rows = [
            (f"{split_name}/{i}", record["text"].decode("utf-8", errors="replace"), int(record["label"]))
            for i, record in enumerate(tfds.as_numpy(builder.as_dataset(split=split_name)))
        ]
        splits.append(_make_examples(rows, f"tfds:{name}/{split_name}"))
    return splits[0], splits[1]


def _check_reachable(url: str, name: str, data_dir: str | None, timeout: float = 5.0) -> None:
    """Fails within seconds, not after TFDS's retries, when the download host is unreachable."""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise DataError(_offline_message(name, data_dir, f"{parsed.hostname}:{port} unreachable: {e}")) from e


def _offline_message(name: str, data_dir: str | None, reason: str) -> str:
    return (
        f"TFDS dataset {name!r} is not prepared in --data_dir={data_dir or '~/tensorflow_datasets'} "
        f"and cannot be downloaded ({reason}). Either download {IMDB_URL} and pass it with "
        "--config.data.path=/path/to/aclImdb_v1.tar.gz (an extracted aclImdb directory works too), "
        "or prepare the TFDS dataset on a machine with internet and point --data_dir at it."
    )
