"""Data sources: labelled texts from TFDS, an aclImdb tree or archive, CSV or JSONL.

Every source yields in-memory `Examples` (IMDb is ~33 MB of text); a seeded
permutation then splits train into train and validation, the same way for
every source.

Messy input is either repaired and counted, or rejected. Each source logs one
line saying how many reviews it read and what it did about the mess:

- a text that is empty, whitespace or markup only ("<br /><br />") carries no
  signal and is skipped;
- invalid UTF-8 (and lone surrogates) is decoded with U+FFFD replacement characters;
- a text longer than `max_text_chars` characters keeps its first and last
  halves of that budget: the tokenizer never looks further than seq_length
  tokens from either end, and a runaway "review" would otherwise sit in memory
  and be tokenized in full every epoch;
- files of an aclImdb tree or archive outside its layout (editor backups,
  .DS_Store, macOS ._ files) are ignored.

A record that cannot be read (a missing field, a label other than 0 or 1,
broken JSON), a truncated archive or an unreadable file stops the run with a
DataError naming the file and line or the archive member.
"""

import bz2
import csv
import dataclasses
import gzip
import json
import lzma
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
# A review: aclImdb/{train,test}/{pos,neg}/<name>.txt, hidden files (macOS "._0_9.txt") excepted.
_ACLIMDB_FILE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/([^/.][^/]*)\.txt$")
# The rest of the original archive: not reviews with a label, but not stray either.
_ACLIMDB_EXTRA = re.compile(
    r"(?:^|/)aclImdb/(?:README|imdb\.vocab|imdbEr\.txt|"
    r"(?:train|test)/(?:labeledBow\.feat|unsupBow\.feat|urls_(?:pos|neg|unsup)\.txt|unsup/[^/]+\.txt))$"
)
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# A review file, archive member or CSV field larger than this is not a review; reading
# it whole could exhaust memory.
MAX_REVIEW_BYTES = 64 << 20
# Texts longer than this many characters keep their first and last halves of it.
MIN_TEXT_CHARS = 200_000

_TAG = re.compile(r"<[^<>]*>")
_ENTITY = re.compile(r"&(?:[a-zA-Z][a-zA-Z0-9]*|#[0-9]+|#[xX][0-9a-fA-F]+);")
# A character that shows something: not whitespace, a control or format character, a
# variation selector or a replacement character.
_VISIBLE = re.compile(
    "[^\\s\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\ufff9-\ufffd]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def max_text_chars(seq_length: int) -> int:
    """Characters of a text kept: far more than seq_length tokens can span from either end."""
    return max(MIN_TEXT_CHARS, 400 * seq_length)


def has_content(text: str) -> bool:
    """False for a text that is empty, whitespace, invisible characters or HTML markup only."""
    if _VISIBLE.search(text) is None:
        return False
    if "<" in text or "&" in text:
        return _VISIBLE.search(_ENTITY.sub("", _TAG.sub("", text))) is not None
    return True


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class _Report:
    """Counts what reading one source skipped, repaired or ignored; logs one summary line."""

    def __init__(self, where: str, seq_length: int):
        self.where = where
        self.max_chars = max_text_chars(seq_length)
        self.skipped = self.repaired = self.cut = self.stray = 0

    def text(self, text: str, invalid_utf8: bool = False) -> str | None:
        """The text to keep, repaired and cut to size, or None for one without content."""
        text, surrogates = _SURROGATE.subn("\ufffd", text)
        if not has_content(text):
            self.skipped += 1
            return None
        if invalid_utf8 or surrogates:
            self.repaired += 1
        if len(text) > self.max_chars:
            half = self.max_chars // 2
            text = f"{text[:half]} {text[-half:]}"
            self.cut += 1
        return text

    def decode(self, data: bytes) -> str | None:
        """`text` of UTF-8 bytes (a byte order mark dropped)."""
        try:
            text, invalid = data.decode("utf-8"), False
        except UnicodeDecodeError:
            text, invalid = data.decode("utf-8", errors="replace"), True
        return self.text(text.removeprefix("\ufeff"), invalid)

    def problems(self) -> list[str]:
        problems = []
        if self.skipped:
            problems.append(f"{_plural(self.skipped, 'empty or whitespace/markup-only review')} skipped")
        if self.repaired:
            problems.append(f"{self.repaired} with invalid UTF-8 decoded with replacement characters")
        if self.cut:
            problems.append(
                f"{self.cut} longer than {self.max_chars} characters cut to their first and last {self.max_chars // 2}"
            )
        if self.stray:
            problems.append(f"{_plural(self.stray, 'stray file')} ignored")
        return problems

    def log(self, what: str) -> None:
        problems = self.problems()
        logging.info("Read %s from %s%s", what, self.where, ": " + ", ".join(problems) + "." if problems else ".")

    def examples(self, rows: list[tuple[str, str, int]], where: str | None = None) -> Examples:
        if not rows:
            skipped = f" ({self.problems()[0]})" if self.skipped else ""
            raise DataError(f"{where or self.where}: no examples found{skipped}.")
        ids, texts, labels = zip(*rows)
        return Examples(
            texts=np.array(texts, dtype=object),
            labels=np.array(labels, dtype=np.int32),
            ids=np.array(ids, dtype=object),
        )


def load_splits(data_config: ml_collections.ConfigDict, seed: int, tfds_data_dir: str | None = None) -> Splits:
    """Reads the configured source and holds out a seeded validation split of train."""
    source = resolve_source(data_config)
    seq_length = data_config.seq_length
    if source == "tfds":
        train, test = _load_tfds(data_config.tfds_name, tfds_data_dir, seq_length)
    elif source == "aclimdb":
        train, test = _load_aclimdb(data_config.path, seq_length)
    else:
        columns = (data_config.text_column, data_config.label_column, seq_length)
        train = _read_table(data_config.path, source, *columns)
        test = None
        if data_config.test_path:
            test_source = _table_format(data_config.test_path) if data_config.source == "auto" else source
            test = _read_table(data_config.test_path, test_source or source, *columns)
    classes = np.unique(train.labels)
    if len(classes) < 2:
        logging.warning(
            "All %d training examples have label %d: the classifier has nothing to tell apart.",
            len(train),
            classes[0],
        )
    usable, fraction = len(train), data_config.validation_fraction
    train, validation = split(train, fraction, seed)
    if not len(train) or (fraction > 0 and not len(validation)):
        raise DataError(
            f"--config.data.validation_fraction={fraction} of {usable} training examples leaves {len(train)} "
            f"for training and {len(validation)} for validation: both need at least one."
        )
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
    if os.path.isdir(path) or lower.endswith(_ARCHIVE_SUFFIXES):
        return "aclimdb"
    table_format = _table_format(path)
    if table_format:
        return table_format
    raise DataError(
        f"--config.data.path={path}: cannot tell its format; expected an aclImdb directory, "
        "a .tar(.gz/.bz2/.xz) archive, a .csv or a .jsonl file (or set --config.data.source)."
    )


def _table_format(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    return None


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


# ----- aclImdb -----


def _load_aclimdb(path: str, seq_length: int) -> tuple[Examples, Examples | None]:
    """Reads aclImdb/{train,test}/{pos,neg}/*.txt from a directory or a tar archive."""
    report = _Report(path, seq_length)
    rows: dict[str, list[tuple[str, str, int]]] = {"train": [], "test": []}
    found: dict[str, str] = {}  # example id -> file or member name
    for name, match, data in _aclimdb_files(path, report):
        split_name, polarity, stem = match.groups()
        example_id = f"{split_name}/{polarity}/{stem}"
        if example_id in found:
            raise DataError(
                f"--config.data.path={path}: {found[example_id]} and {name} are both review {example_id}; "
                "remove one of them."
            )
        found[example_id] = name
        text = report.decode(data)
        if text is not None:
            rows[split_name].append((example_id, text, int(polarity == "pos")))
    if not any(example_id.startswith("train/") for example_id in found):
        raise DataError(
            f"--config.data.path={path}: no aclImdb/train/pos/*.txt or aclImdb/train/neg/*.txt files; "
            "expected the layout of the original aclImdb_v1.tar.gz archive."
        )
    for split_rows in rows.values():
        split_rows.sort()
    report.log(f"{len(rows['train'])} train and {len(rows['test'])} test reviews")
    train = report.examples(rows["train"], f"{path} (train)")
    has_test = any(example_id.startswith("test/") for example_id in found)
    test = report.examples(rows["test"], f"{path} (test)") if has_test else None
    return train, test


def _aclimdb_files(path: str, report: _Report):
    """Yields (file or member name, name match, contents) for each review of a directory or
    tar archive; counts the stray files."""
    if os.path.isdir(path):
        yield from _aclimdb_directory_files(path, report)
        return
    last = None  # The last member read: where a truncated archive broke off.
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                match = _ACLIMDB_FILE.search(member.name)
                if match and member.isfile():
                    if member.size > MAX_REVIEW_BYTES:
                        raise DataError(_too_large(f"{path}: member {member.name}", member.size))
                    yield member.name, match, archive.extractfile(member).read()
                elif not member.isdir() and not _ACLIMDB_EXTRA.search(member.name):
                    report.stray += 1
                last = member.name
            _check_archive_end(archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        where = f"after member {last}" if last else "at its start"
        raise DataError(
            f"--config.data.path={path}: not a readable tar archive (truncated or corrupt {where}: {e})."
        ) from e


def _aclimdb_directory_files(path: str, report: _Report):
    root = os.path.abspath(path)
    # Either the aclImdb directory itself or its parent; of a parent, only aclImdb/ is read.
    if os.path.isdir(os.path.join(root, "aclImdb")):
        root = os.path.join(root, "aclImdb")

    def unreadable(error: OSError):
        raise DataError(f"--config.data.path={path}: cannot read {error.filename} ({error.strerror}).")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        for filename in sorted(filenames):
            full = os.path.join(dirpath, filename)
            name = "aclImdb/" + os.path.relpath(full, root).replace(os.sep, "/")
            match = _ACLIMDB_FILE.search(name)
            if match:
                yield full, match, _read_file(full)
            elif not _ACLIMDB_EXTRA.search(name):
                report.stray += 1


def _read_file(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_REVIEW_BYTES:
            raise DataError(_too_large(path, size))
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}).") from e


def _too_large(where: str, size: int) -> str:
    return (
        f"{where} is {size / 2**20:.0f} MiB; a review is at most {MAX_REVIEW_BYTES >> 20} MiB. "
        "Remove it or move it out of the data."
    )


def _check_archive_end(archive: tarfile.TarFile) -> None:
    """Raises if the archive stops short of its end-of-archive marker.

    tarfile ends its iteration quietly when the data stops at a member
    boundary, so a truncated archive would pass for a smaller one.
    """
    fileobj = archive.fileobj
    # The read that ended the iteration must have been a whole block (the marker's zeros).
    if fileobj.tell() != archive.offset + tarfile.BLOCKSIZE:
        raise tarfile.ReadError("unexpected end of data")
    if isinstance(fileobj, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)):
        # Reading to the end makes the decompressor check the stream's end and checksum.
        while fileobj.read(1 << 20):
            pass
    else:
        fileobj.seek(archive.offset)
        if fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            raise tarfile.ReadError("no end-of-archive marker where the members end")


# ----- CSV and JSONL -----


def _read_table(path: str, source: str, text_column: str, label_column: str, seq_length: int) -> Examples:
    report = _Report(path, seq_length)
    read = _read_csv if source == "csv" else _read_jsonl
    rows = read(path, text_column, label_column, report)
    report.log(_plural(len(rows), "review"))
    return report.examples(rows)


_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


def _parse_label(value, where: str) -> int:
    """0 or 1, given as a number or a string ("1", "1.0"); anything else is an error."""
    if isinstance(value, str):
        label = _LABELS.get(value.strip())
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        label = int(value)
    else:
        label = None
    if label is None:
        raise DataError(f"{where}: label {value!r} is not 0 or 1.")
    return label


def _read_csv(path: str, text_column: str, label_column: str, report: _Report) -> list[tuple[str, str, int]]:
    """Rows of a CSV file with a header line; invalid UTF-8 is repaired field by field."""
    previous_limit = csv.field_size_limit(MAX_REVIEW_BYTES)
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.reader(f)
            try:
                return _csv_rows(reader, path, text_column, label_column, report)
            except csv.Error as e:
                hint = " (an unclosed quote?)" if "field limit" in str(e) else ""
                raise DataError(f"{path}:{reader.line_num}: {e}{hint}.") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}).") from e
    finally:
        csv.field_size_limit(previous_limit)


def _csv_rows(reader, path: str, text_column: str, label_column: str, report: _Report) -> list[tuple[str, str, int]]:
    header = next((record for record in reader if record), None)
    names = [name.strip() for name in header or []]
    missing = [c for c in (text_column, label_column) if c not in names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {header}. Set "
            "--config.data.text_column / --config.data.label_column."
        )
    text_index, label_index = names.index(text_column), names.index(label_column)
    rows = []
    start = reader.line_num + 1
    for record in reader:
        first, last, start = start, reader.line_num, reader.line_num + 1
        if not record:  # A blank line.
            continue
        where = f"{path}:{first}"
        problem = None
        if len(record) <= max(text_index, label_index):
            absent = [names[i] for i in sorted({text_index, label_index}) if i >= len(record)]
            problem = f"missing field(s) {absent}: {_plural(len(record), 'field')}, the header has {len(names)}"
        elif len(record) > len(names):
            problem = f"{len(record)} fields, the header has {len(names)} (a text with an unquoted comma?)"
        if problem:
            spans = f"; the record runs on to line {last} (an unclosed quote?)" if last > first else ""
            raise DataError(f"{where}: {problem}{spans}.")
        label = _parse_label(record[label_index], where)
        text = report.text(record[text_index])
        if text is not None:
            rows.append((where, text, label))
    return rows


def _read_jsonl(path: str, text_column: str, label_column: str, report: _Report) -> list[tuple[str, str, int]]:
    """One JSON object per line; invalid UTF-8 is repaired in the text."""
    rows = []
    try:
        with open(path, "rb") as f:
            for line_number, raw in enumerate(f, start=1):
                line = raw.decode("utf-8", errors="surrogateescape")
                if line_number == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue
                where = f"{path}:{line_number}"
                record = _json_record(line, where, line_number == 1, text_column, label_column)
                label = _parse_label(record[label_column], where)
                text = record[text_column]
                text = report.text(text) if text is not None else report.text("")
                if text is not None:
                    rows.append((where, text, label))
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}).") from e
    return rows


def _json_record(line: str, where: str, first_line: bool, text_column: str, label_column: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        hint = ""
        if first_line and line.lstrip().startswith("["):
            hint = " It looks like a JSON array; expected JSON Lines, one object per line."
        raise DataError(f"{where}: not valid JSON ({e}).{hint}") from e
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with keys {text_column!r} and {label_column!r}.")
    missing = [c for c in (text_column, label_column) if c not in record]
    if missing:
        raise DataError(
            f"{where}: missing key(s) {missing}. Set --config.data.text_column / --config.data.label_column."
        )
    if not isinstance(record[text_column], (str, type(None))):
        raise DataError(f"{where}: {text_column!r} is a {type(record[text_column]).__name__}, not a string.")
    return record


def _load_tfds(name: str, data_dir: str | None, seq_length: int) -> tuple[Examples, Examples | None]:
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
    report = _Report(f"TFDS {name}", seq_length)
    rows: dict[str, list[tuple[str, str, int]]] = {}
    for split_name in ("train", "test"):
        if split_name in builder.info.splits:
            rows[split_name] = []
            for i, record in enumerate(tfds.as_numpy(builder.as_dataset(split=split_name))):
                text = report.decode(record["text"])
                if text is not None:
                    rows[split_name].append((f"{split_name}/{i}", text, _parse_label(int(record["label"]), name)))
    report.log(" and ".join(f"{len(split_rows)} {split_name}" for split_name, split_rows in rows.items()) + " reviews")
    splits = [
        report.examples(rows[split_name], f"tfds:{name}/{split_name}") if split_name in rows else None
        for split_name in ("train", "test")
    ]
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
