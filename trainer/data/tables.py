"""CSV (with a header line) and JSON Lines files of labelled texts.

A record that cannot be read (a missing field, broken JSON, an unclosed
quote) stops the run naming the file and line. Labels are kept as read (a
delimited CSV field as a list); the task checks them, naming the same line.
"""

import csv
import json
from typing import NamedTuple

from trainer.data import examples
from trainer.data.examples import DataError, Examples, TextReport, plural


class Columns(NamedTuple):
    """Where a record keeps its text, the second text of a pair (empty: none) and its label."""

    text: str
    pair: str
    label: str
    # CSV multilabel: the character between the labels of one field (empty: one label).
    label_delimiter: str = ""

    def names(self) -> list[str]:
        return [name for name in (self.text, self.pair, self.label) if name]


def read_table(path: str, source: str, columns: Columns, seq_length: int) -> Examples:
    report = TextReport(path, seq_length)
    read = _read_csv if source == "csv" else _read_jsonl
    rows = read(path, columns, report)
    report.log(plural(len(rows), "record"))
    return report.examples(rows)


def _row(where: str, texts: list, label, report: TextReport) -> tuple | None:
    """(id, text[, pair], label) with every text cleaned, or None if one has no content."""
    cleaned = [report.text(text if text is not None else "") for text in texts]
    if any(text is None for text in cleaned):
        return None
    return (where, *cleaned, label)


_COLUMN_FLAGS = "--config.data.text_column / text_pair_column / label_column"


def _read_csv(path: str, columns: Columns, report: TextReport) -> list[tuple]:
    """Rows of a CSV file with a header line; invalid UTF-8 is repaired field by field."""
    previous_limit = csv.field_size_limit(examples.MAX_REVIEW_BYTES)
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.reader(f)
            try:
                return _csv_rows(reader, path, columns, report)
            except csv.Error as e:
                hint = " (an unclosed quote?)" if "field limit" in str(e) else ""
                raise DataError(f"{path}:{reader.line_num}: {e}{hint}.") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}).") from e
    finally:
        csv.field_size_limit(previous_limit)


def _csv_rows(reader, path: str, columns: Columns, report: TextReport) -> list[tuple]:
    header = next((record for record in reader if record), None)
    names = [name.strip() for name in header or []]
    missing = [c for c in columns.names() if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {header}. Set {_COLUMN_FLAGS}.")
    text_indices = [names.index(c) for c in (columns.text, columns.pair) if c]
    label_index = names.index(columns.label)
    needed = sorted({*text_indices, label_index})
    rows = []
    start = reader.line_num + 1
    for record in reader:
        first, last, start = start, reader.line_num, reader.line_num + 1
        if not record:  # A blank line.
            continue
        where = f"{path}:{first}"
        problem = None
        if len(record) <= needed[-1]:
            absent = [names[i] for i in needed if i >= len(record)]
            problem = f"missing field(s) {absent}: {plural(len(record), 'field')}, the header has {len(names)}"
        elif len(record) > len(names):
            problem = f"{len(record)} fields, the header has {len(names)} (a text with an unquoted comma?)"
        if problem:
            spans = f"; the record runs on to line {last} (an unclosed quote?)" if last > first else ""
            raise DataError(f"{where}: {problem}{spans}.")
        label = record[label_index]
        if columns.label_delimiter:
            label = [part.strip() for part in label.split(columns.label_delimiter) if part.strip()]
        row = _row(where, [record[i] for i in text_indices], label, report)
        if row is not None:
            rows.append(row)
    return rows


def _read_jsonl(path: str, columns: Columns, report: TextReport) -> list[tuple]:
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
                record = _json_record(line, where, line_number == 1, columns)
                row = _row(where, [record[c] for c in (columns.text, columns.pair) if c], record[columns.label], report)
                if row is not None:
                    rows.append(row)
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}).") from e
    return rows


def _json_record(line: str, where: str, first_line: bool, columns: Columns) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        hint = ""
        if first_line and line.lstrip().startswith("["):
            hint = " It looks like a JSON array; expected JSON Lines, one object per line."
        raise DataError(f"{where}: not valid JSON ({e}).{hint}") from e
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with keys {columns.names()}.")
    missing = [c for c in columns.names() if c not in record]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}. Set {_COLUMN_FLAGS}.")
    for column in (columns.text, columns.pair):
        if column and not isinstance(record[column], (str, type(None))):
            raise DataError(f"{where}: {column!r} is a {type(record[column]).__name__}, not a string.")
    return record


def table_format(path: str) -> str | None:
    """csv or jsonl by the file name's ending, or None."""
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    return None
