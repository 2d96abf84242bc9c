"""Streamed sources: sharded CSV, JSONL and TFRecord files on any filesystem, read by tf.data, never whole.

`data.path` names a file, a glob (`gs://bucket/reviews-*.csv.gz`) or a
comma-separated list of them; every file goes through `tf.io.gfile` and
tf.data's readers, so local paths, `gs://` and every filesystem TensorFlow
has (the tests use `ram://`) work alike. Files ending in `.gz` are read as
gzip. A prepared directory (trainer/data/prepared.py) is a stream of token
ids instead of texts.

Each record gets a key: its file's name and its record number in the file,
or the value of `data.id_column`. The train/validation split hashes the key
(Fingerprint64, stable across machines and versions), so every worker and
every restart agree on it without reading the data first; `data.validation_path`
names separate validation files instead.

Records come out as string tensors {key, text, text_pair, label}, texts repaired like the
in-memory sources repair them (invalid UTF-8 replaced, markup-only texts dropped, runaway
texts cut to both ends); the task turns the label strings into targets (Task.label_encoder).
"""

import csv
import dataclasses
import functools
import json
import os
import re
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.config import DataConfig
from trainer.data import examples as examples_lib
from trainer.data import prepared
from trainer.data.examples import LIST_SEPARATOR, DataError, Examples
from trainer.data.tables import Columns

STREAM_FORMATS = ("csv", "jsonl", "tfrecord")
# CsvDataset's default is 4 MiB per open file (twice over when gzipped); the label sample opens every
# shard at once, so a corpus of large shards would cost hundreds of MB.
_CSV_BUFFER_BYTES = 1 << 18
# Above this many bytes a single local csv/jsonl file is streamed rather than read into memory.
IN_MEMORY_LIMIT_BYTES = 256 << 20
_SPLIT_BUCKETS = 1 << 20
# JSON lines are parsed in Python, this many per call.
_JSON_BATCH = 256
_GLOB_CHARACTERS = "*?["
# A JSON line's parse error travels with it under this key.
_ERROR = "\0error"


def expand_paths(path: str, flag: str) -> list[str]:
    """The files `path` names: comma-separated items, each a file or a glob. Raises DataError naming
    the item that matches nothing."""
    files: list[str] = []
    for item in (part.strip() for part in path.split(",")):
        if not item:
            continue
        if any(character in item for character in _GLOB_CHARACTERS):
            try:
                matched = sorted(tf.io.gfile.glob(item))
            except tf.errors.OpError as e:
                raise DataError(f"{flag}={item}: cannot list it ({e.message}).") from None
            if not matched:
                raise DataError(f"{flag}={item}: the glob matches no file.")
            files += matched
        elif not tf.io.gfile.exists(item):
            raise DataError(f"{flag}={item}: no such file.")
        elif tf.io.gfile.isdir(item):
            raise DataError(f"{flag}={item} is a directory; name its files (a glob such as {item}/*.csv).")
        else:
            files.append(item)
    if not files:
        raise DataError(f"{flag} names no file.")
    return files


def file_format(name: str) -> tuple[str | None, str]:
    """(csv | jsonl | tfrecord | None, "GZIP" | "") by the file name's ending."""
    lower = name.lower()
    compression = "GZIP" if lower.endswith(".gz") else ""
    lower = lower.removesuffix(".gz")
    for suffixes, found in ((".csv",), "csv"), ((".jsonl", ".json"), "jsonl"), ((".tfrecord", ".tfrec"), "tfrecord"):
        if lower.endswith(suffixes):
            return found, compression
    return None, compression


def is_streamed_path(path: str, source: str) -> bool:
    """Whether `data.streaming=auto` streams `path`: several shards, a remote path, TFRecord, or a file
    too large to read whole into memory (the in-memory path is exact and fast for small local data)."""
    if source == "tfrecord" or "," in path or "://" in path or any(c in path for c in _GLOB_CHARACTERS):
        return True
    found, _ = file_format(path)
    if found == "tfrecord":
        return True
    return found is not None and os.path.isfile(path) and os.path.getsize(path) > IN_MEMORY_LIMIT_BYTES


def _head(path: str, compression: str, size: int = 1 << 16) -> str:
    """The first `size` bytes of a file (decompressed), as text: enough for a header or a first record."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read(size)
        if compression:
            data = zlib.decompressobj(wbits=31).decompress(data, size)
    except (tf.errors.OpError, zlib.error) as e:
        raise DataError(f"{path}: cannot read it ({getattr(e, 'message', e)}).") from None
    return data.decode("utf-8", "replace").removeprefix("\ufeff")


@dataclasses.dataclass(frozen=True)
class StreamSource:
    """Sharded files of one format, and where each record keeps its text, pair, label and id."""

    files: tuple[str, ...]
    format: str
    compression: str
    columns: Columns
    id_column: str = ""
    # CSV: the header every shard shares. TFRecord: the label feature's kind.
    header: tuple[str, ...] = ()
    label_kind: str = ""
    flag: str = "--config.data.path"
    # Prepared shards: their sequence length and the fingerprint of the tokenizer that made them.
    seq_length: int = 0
    tokenizer: str = ""

    @classmethod
    def open_prepared(cls, path: str, flag: str, split: str, data_config: DataConfig) -> "StreamSource | None":
        """The shards of one split of a prepared directory (None when it has none), checked against the
        data config the run has."""
        metadata = prepared.read_metadata(path, flag)
        prepared.check_data(metadata, path, flag, data_config)
        files = prepared.split_files(path, metadata, split)
        if not files:
            return None
        missing = [name for name in files if not tf.io.gfile.exists(name)]
        if missing:
            raise DataError(f"{flag}={path}: the shard {missing[0]} that {prepared.METADATA_FILE} lists is missing.")
        return cls(
            files,
            "prepared",
            "",
            Columns("", "", ""),
            flag=flag,
            seq_length=metadata["seq_length"],
            tokenizer=metadata["tokenizer"],
        )

    @classmethod
    def open(cls, path: str, flag: str, columns: Columns, id_column: str = "", source: str = "auto") -> "StreamSource":
        """Lists the files and checks that every shard has the schema the config asks for (its header,
        or its first record); raises DataError naming the shard."""
        files = expand_paths(path, flag)
        formats = {file_format(name) for name in files}
        named = source if source in STREAM_FORMATS else None
        found = {kind for kind, _ in formats}
        if named is None and (None in found or len(found) > 1):
            raise DataError(
                f"{flag}={path}: cannot stream {', '.join(sorted(str(f) for f in found))} files together; "
                "expected shards of one format: .csv, .jsonl or .tfrecord (each optionally .gz)."
            )
        kind = named or found.pop()
        compressions = {compression for _, compression in formats}
        if len(compressions) > 1:
            raise DataError(f"{flag}={path}: mixes gzipped and plain shards; use one or the other.")
        source = cls(tuple(files), kind, compressions.pop(), columns, id_column, flag=flag)
        return source._checked()

    def _wanted(self) -> list[str]:
        return [*self.columns.names(), *([self.id_column] if self.id_column else [])]

    def _checked(self) -> "StreamSource":
        if self.format == "csv":
            headers = {name: self._csv_header(name) for name in self.files}
            first = headers[self.files[0]]
            for name, header in headers.items():
                missing = [column for column in self._wanted() if column not in header]
                if missing:
                    raise DataError(
                        f"{name}: no column(s) {missing} in its header {list(header)}. Set "
                        "--config.data.text_column / text_pair_column / label_column / id_column."
                    )
                if header != first:
                    raise DataError(f"{name}: its header {list(header)} differs from {self.files[0]}'s {list(first)}.")
            return dataclasses.replace(self, header=first)
        if self.format == "tfrecord":
            kinds = {name: self._tfrecord_label_kind(name) for name in self.files}
            first = kinds[self.files[0]]
            for name, kind in kinds.items():
                if kind != first:
                    raise DataError(f"{name}: its label feature is {kind}, but {self.files[0]}'s is {first}.")
            return dataclasses.replace(self, label_kind=first)
        for name in self.files:
            self._first_json(name)
        return self

    def _csv_header(self, name: str) -> tuple[str, ...]:
        line = _head(name, self.compression).split("\n", 1)[0]
        return tuple(field.strip() for field in next(csv.reader([line]), []))

    def _first_json(self, name: str) -> None:
        line = next((line for line in _head(name, self.compression).split("\n") if line.strip()), "")
        if not line:
            return
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}:1: not valid JSON ({e}).") from None
        missing = [key for key in self._wanted() if not isinstance(record, dict) or key not in record]
        if missing:
            raise DataError(f"{name}:1: missing key(s) {missing}. Set --config.data.text_column / label_column.")

    def _tfrecord_label_kind(self, name: str) -> str:
        try:
            first = next(iter(tf.data.TFRecordDataset(name, self.compression).take(1)), None)
        except tf.errors.OpError as e:
            raise DataError(f"{name}: cannot read it as TFRecord ({e.message.splitlines()[0]}).") from None
        if first is None:
            return "none"
        example = tf.train.Example.FromString(first.numpy())
        features = example.features.feature
        missing = [key for key in self._wanted() if key not in features]
        if missing:
            raise DataError(f"{name}: its first tf.train.Example has no feature(s) {missing}.")
        return features[self.columns.label].WhichOneof("kind")

    # ----- records -----

    def read_file(self, name: tf.Tensor) -> tf.data.Dataset:
        """The records of one file, {key, text, text_pair, label} strings, in file order."""
        base = tf.strings.regex_replace(name, r"^.*/", "")
        if self.format == "csv":
            selected = sorted({self.header.index(column) for column in self._wanted()})
            records = tf.data.experimental.CsvDataset(
                name,
                [""] * len(selected),
                header=True,
                compression_type=self.compression,
                buffer_size=_CSV_BUFFER_BYTES,
                select_cols=selected,
            ).map(lambda *fields: dict(zip([self.header[i] for i in selected], fields)))
        elif self.format == "jsonl":
            records = (
                tf.data.TextLineDataset(name, self.compression)
                .filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
                .batch(_JSON_BATCH)
                .map(self._parse_json_lines)
                .unbatch()
            )
        elif self.format == "prepared":
            parse = functools.partial(prepared.parse, seq_length=self.seq_length)
            return tf.data.TFRecordDataset(name).map(parse)  # Keys as the source gave them.
        else:
            records = tf.data.TFRecordDataset(name, self.compression).map(self._parse_example)
        return records.enumerate(start=1).map(lambda number, record: self._named(record, base, number))

    def _named(self, record: dict, base: tf.Tensor, number: tf.Tensor) -> dict[str, tf.Tensor]:
        where = tf.strings.join([base, ":", tf.strings.as_string(number)])
        if _ERROR in record:
            message = tf.strings.join([self.flag, ": ", where, ": ", record[_ERROR]])
            with tf.control_dependencies([tf.debugging.Assert(tf.equal(record[_ERROR], ""), [message])]):
                where = tf.identity(where)
        key = record[self.id_column] if self.id_column else where
        pair = record[self.columns.pair] if self.columns.pair else tf.constant("")
        return {"key": key, "text": record[self.columns.text], "text_pair": pair, "label": record[self.columns.label]}

    def _parse_json_lines(self, lines: tf.Tensor) -> dict[str, tf.Tensor]:
        wanted = self._wanted()
        delimiter = self.columns.label_delimiter or LIST_SEPARATOR

        def parse(batch: np.ndarray) -> list[np.ndarray]:
            columns: list[list[bytes]] = [[] for _ in range(len(wanted) + 1)]
            for line in batch:
                error = ""
                try:
                    record = json.loads(line.decode("utf-8", "replace"))
                except json.JSONDecodeError as e:
                    record, error = {}, f"not valid JSON ({e})"
                if not error and (not isinstance(record, dict) or any(key not in record for key in wanted)):
                    error = f"expected a JSON object with the keys {wanted}"
                columns[-1].append(error.encode())
                for values, key in zip(columns, wanted):
                    value = record.get(key, "") if isinstance(record, dict) else ""
                    if isinstance(value, list):
                        value = delimiter.join(str(item) for item in value)
                    values.append(("" if value is None else str(value)).encode("utf-8", "replace"))
            return [np.array(values, dtype=object) for values in columns]

        parsed = tf.numpy_function(parse, [lines], [tf.string] * (len(wanted) + 1), stateful=False)
        return {key: tf.reshape(value, [-1]) for key, value in zip([*wanted, _ERROR], parsed)}

    def _parse_example(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        kinds = {"bytes_list": tf.string, "int64_list": tf.int64, "float_list": tf.float32}
        label_dtype = kinds.get(self.label_kind, tf.string)
        spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="") for key in self._wanted()}
        spec[self.columns.label] = tf.io.FixedLenFeature([], label_dtype)
        record = tf.io.parse_single_example(serialized, spec)
        label = record[self.columns.label]
        if label_dtype == tf.int64:
            label = tf.strings.as_string(label)
        elif label_dtype == tf.float32:
            whole = tf.equal(label, tf.round(label))
            label = tf.where(whole, tf.strings.as_string(tf.cast(label, tf.int64)), tf.strings.as_string(label))
        record[self.columns.label] = label
        return record


def _reason(error: tf.errors.OpError) -> str:
    """An OpError's message in one short line, without TensorFlow's function and op names."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", " ".join(error.message.split()))
    return message[:200]


@dataclasses.dataclass(frozen=True)
class Stream:
    """One split of a streamed source: its files and which records (by the hash of their key) it keeps."""

    source: StreamSource
    name: str
    # Records whose key hashes below this share of the buckets are validation; the rest train.
    validation_fraction: float = 0.0
    part: str = "all"  # all | train | validation
    seq_length: int = 128

    @property
    def files(self) -> tuple[str, ...]:
        return self.source.files

    def keeps(self, key: tf.Tensor) -> tf.Tensor:
        if self.part == "all":
            return tf.constant(True)
        held_out = tf.strings.to_hash_bucket_fast(key, _SPLIT_BUCKETS) < round(
            self.validation_fraction * _SPLIT_BUCKETS
        )
        return held_out if self.part == "validation" else tf.logical_not(held_out)

    def records(self, files: tf.data.Dataset, parallel: bool = True) -> tf.data.Dataset:
        """The kept, cleaned records of `files`, interleaved a few files at a time in a fixed order.

        A file the reader cannot get through (a damaged gzip stream or TFRecord frame, a CSV row with
        the wrong number of fields) fails the iteration: tf.data's ignore_errors cannot step over such a
        spot (it reads the same error again, or the file again), so it is never skipped.
        """
        cycle = min(len(self.files), 8)
        records = files.interleave(
            self.source.read_file,
            cycle_length=cycle,
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE if parallel else None,
            deterministic=True,
        )
        records = records.filter(lambda record: self.keeps(record["key"]))
        if self.source.format == "prepared":
            return records  # Cleaned and tokenized when they were prepared.
        max_bytes = examples_lib.max_text_chars(self.seq_length)
        pairs = bool(self.source.columns.pair)
        cleaned = records.map(
            lambda record: examples_lib.clean_record(record, max_bytes, pairs),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return cleaned.filter(lambda record: record["keep"])

    def failed_shard(self, error: tf.errors.OpError) -> str:
        """Which shard a read `error` came from and why, found by reading each file to its end."""
        for name in self.files:
            try:
                for _ in self.source.read_file(tf.constant(name)):
                    pass
            except tf.errors.OpError as e:
                return f"{name} is unreadable ({_reason(e)})"
        return f"a shard failed ({_reason(error)})"

    def sample(self, count: int) -> Examples:
        """The first `count` kept records, taken round-robin over all files: what the task learns the label
        vocabulary (and a regression's target scale) from, without a pass over the whole source."""
        files = tf.data.Dataset.from_tensor_slices(list(self.files))
        records = files.interleave(self.source.read_file, cycle_length=len(self.files), block_length=1)
        records = records.filter(lambda record: self.keeps(record["key"])).take(count)
        try:
            rows = [(r["key"].decode(), r["label"].decode("utf-8", "replace")) for r in records.as_numpy_iterator()]
        except tf.errors.OpError as e:
            raise DataError(
                f"{self.source.flag}: {self.failed_shard(e)}, found while reading the label sample: repair or "
                "remove the shard."
            ) from None
        if not rows:
            raise DataError(f"{self.source.flag}: the {self.name} split of {len(self.files)} file(s) has no records.")
        keys, labels_read = zip(*rows)
        delimiter = self.source.columns.label_delimiter or LIST_SEPARATOR
        values = [label.split(delimiter) if delimiter in label else label for label in labels_read]
        logging.info("Label sample: the first %d %s records, read from every file.", len(rows), self.name)
        return Examples(
            texts=np.array([""] * len(rows), dtype=object),
            labels=examples_lib.object_array(values),
            ids=np.array(keys, dtype=object),
        )
