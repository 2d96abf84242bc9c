"""CSV (with a header line) and JSON Lines files of labelled texts.

A record that cannot be read (a missing field, a label other than 0 or 1,
broken JSON, an unclosed quote) stops the run naming the file and line.
"""

import csv
import json

from trainer.data import examples
from trainer.data.examples import DataError, Examples, TextReport, parse_label, plural


def read_table(path: str, source: str, text_column: str, label_column: str, seq_length: int) -> Examples:
    report = TextReport(path, seq_length)
    read = _read_csv if source == "csv" else _read_jsonl
    rows = read(path, text_column, label_column, report)
    report.log(plural(len(rows), "review"))
    return report.examples(rows)


def _read_csv(path: str, text_column: str, label_column: str, report: TextReport) -> list[tuple[str, str, int]]:
    """Rows of a CSV file with a header line; invalid UTF-8 is repaired field by field."""
    previous_limit = csv.field_size_limit(examples.MAX_REVIEW_BYTES)
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


def _csv_rows(reader, path: str, text_column: str, label_column: str, report: TextReport) -> list[tuple[str, str, int]]:
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
            problem = f"missing field(s) {absent}: {plural(len(record), 'field')}, the header has {len(names)}"
        elif len(record) > len(names):
            problem = f"{len(record)} fields, the header has {len(names)} (a text with an unquoted comma?)"
        if problem:
            spans = f"; the record runs on to line {last} (an unclosed quote?)" if last > first else ""
            raise DataError(f"{where}: {problem}{spans}.")
        label = parse_label(record[label_index], where)
        text = report.text(record[text_index])
        if text is not None:
            rows.append((where, text, label))
    return rows


def _read_jsonl(path: str, text_column: str, label_column: str, report: TextReport) -> list[tuple[str, str, int]]:
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
                label = parse_label(record[label_column], where)
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


def table_format(path: str) -> str | None:
    """csv or jsonl by the file name's ending, or None."""
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    return None
