"""Labelled examples in memory, and the repairs every source applies to raw texts.

Messy input is either repaired and counted, or rejected. Each source logs one
line saying how many texts it read and what it did about the mess:

- a text that is empty, whitespace or markup only ("<br /><br />") carries no
  signal and is skipped;
- invalid UTF-8 (and lone surrogates) is decoded with U+FFFD replacement characters;
- a text longer than `max_text_chars` characters keeps its first and last
  halves of that budget: the tokenizer never looks further than seq_length
  tokens from either end, and a runaway "review" would otherwise sit in memory
  and be tokenized in full every epoch.

A record that cannot be read stops the run with a DataError naming the file
and line or the archive member.
"""

import dataclasses
import re

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.errors import UserError

MAX_REVIEW_BYTES = 64 << 20
# A streamed record's list of labels (a JSON list) travels as one string joined by this.
LIST_SEPARATOR = "\x1f"
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


class DataError(UserError):
    """Data cannot be read; the message names the file, flag or value at fault."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """Labelled texts (or text pairs), index-aligned.

    Labels are as the source gives them (numbers, strings, or lists of them for
    several labels per text); the task turns them into what it trains on, naming
    the example's id (file and line for tables) when one does not fit.
    """

    texts: np.ndarray  # object array of str
    labels: np.ndarray  # object array: each example's label as read
    ids: np.ndarray  # object array of str: a stable name for each example
    text_pairs: np.ndarray | None = None  # object array of str: the second text of pair tasks

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Examples":
        pairs = self.text_pairs[indices] if self.text_pairs is not None else None
        return Examples(self.texts[indices], self.labels[indices], self.ids[indices], pairs)


def object_array(values: list) -> np.ndarray:
    """A 1-D object array of `values`, lists kept as elements (np.array would make them a dimension)."""
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array


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


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class TextReport:
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
            problems.append(f"{plural(self.skipped, 'empty or whitespace/markup-only review')} skipped")
        if self.repaired:
            problems.append(f"{self.repaired} with invalid UTF-8 decoded with replacement characters")
        if self.cut:
            problems.append(
                f"{self.cut} longer than {self.max_chars} characters cut to their first and last {self.max_chars // 2}"
            )
        if self.stray:
            problems.append(f"{plural(self.stray, 'stray file')} ignored")
        return problems

    def log(self, what: str) -> None:
        problems = self.problems()
        logging.info("Read %s from %s%s", what, self.where, ": " + ", ".join(problems) + "." if problems else ".")

    def examples(self, rows: list[tuple], where: str | None = None) -> Examples:
        """Examples of rows (id, text, label) or, for pairs, (id, text, pair, label)."""
        if not rows:
            skipped = f" ({self.problems()[0]})" if self.skipped else ""
            raise DataError(f"{where or self.where}: no examples found{skipped}.")
        columns = list(zip(*rows))
        ids, texts, labels = columns[0], columns[1], columns[-1]
        return Examples(
            texts=np.array(texts, dtype=object),
            labels=object_array(list(labels)),
            ids=np.array(ids, dtype=object),
            text_pairs=np.array(columns[2], dtype=object) if len(columns) == 4 else None,
        )


# ----- the same repairs as TensorFlow ops, for streamed records -----

# Markup and entities do not count as content; what remains must show something.
_MARKUP_PATTERN = r"<[^<>]*>|&(?:[a-zA-Z][a-zA-Z0-9]*|#[0-9]+|#[xX][0-9a-fA-F]+);"
_INVISIBLE_PATTERN = r"[\s\x{00}-\x{1f}\x{7f}-\x{9f}\x{ad}\x{200b}-\x{200f}\x{2060}-\x{206f}\x{feff}\x{fffd}]*"


def _repaired_op(text: tf.Tensor, max_bytes: int) -> tf.Tensor:
    """Invalid UTF-8 replaced, a leading byte order mark dropped, a runaway text cut to both ends."""
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
    text = tf.strings.regex_replace(text, "^\ufeff", "")
    half = max_bytes // 2
    tail_start = tf.maximum(tf.strings.length(text) - half, 0)
    cut = tf.strings.join([tf.strings.substr(text, 0, half), tf.strings.substr(text, tail_start, half)], " ")
    # A cut can split a character: repair again.
    cut = tf.strings.unicode_transcode(cut, "UTF-8", "UTF-8", errors="replace")
    return tf.where(tf.strings.length(text) > max_bytes, cut, text)


def _shows_something_op(text: tf.Tensor) -> tf.Tensor:
    without_markup = tf.strings.regex_replace(text, _MARKUP_PATTERN, "")
    return tf.logical_not(tf.strings.regex_full_match(without_markup, _INVISIBLE_PATTERN))


def clean_record(record: dict[str, tf.Tensor], max_bytes: int, pairs: bool) -> dict[str, tf.Tensor]:
    """A streamed record's texts repaired as TextReport repairs them; `keep` is false for a record whose
    text (or pair) has no content, which the in-memory sources skip too."""
    text, pair = (_repaired_op(record[column], max_bytes) for column in ("text", "text_pair"))
    keep = _shows_something_op(text) & (_shows_something_op(pair) if pairs else True)
    return {**record, "text": text, "text_pair": pair, "keep": keep}
