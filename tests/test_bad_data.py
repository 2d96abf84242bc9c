"""Messy data: every case is either repaired and counted in the source's log line, or
rejected with a DataError naming the file and line (or the archive member)."""

import json
import logging
import re
import tarfile
import time

import numpy as np
import pytest

from trainer import experiment
from trainer.data import examples, sources
from trainer.experiment import default_config
from trainer.tasks.registry import TASKS

from conftest import check_ok, check_refused, run_trainer, write_aclimdb

EMPTY_TEXTS = {
    "empty": "",
    "spaces": "   \n\t  \r\n",
    "line_breaks": "<br /><br />",
    "markup": "<p>&nbsp;</p>\n<div class='review'> </div>",
    "invisible": "\u200b\ufeff\u00a0",
}
OTHER_SCRIPTS = {
    "emoji": "Great film 🎬🍿😀 — loved it 👍🏽",
    "japanese": "素晴らしい映画でした。",
    "russian": "Отличный фильм, очень трогательный.",
    "arabic": "فيلم رائع جدا",
    "zalgo": "Z̷̢a̵l̶g̸o̴ film",
}
MB = 1_000_000


def data_config(path, **values):
    config = default_config().data
    config.path = str(path)
    for key, value in values.items():
        config[key] = value
    return config


def read(path, caplog, **values) -> tuple[sources.Splits, str]:
    """The splits of `path` (no validation split) and the source's summary log line."""
    with caplog.at_level(logging.INFO, logger="absl"):
        splits = sources.load_splits(data_config(path, validation_fraction=0.0, **values), seed=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Read ")]
    caplog.clear()
    assert len(lines) >= 1, "no summary line logged"
    return splits, "\n".join(lines)


def binary_task():
    """The default config's task (binary): sources keep labels as read; the task checks and encodes them."""
    parsed = experiment.parse(default_config())
    return TASKS["binary"](None, parsed.model, parsed.data, parsed.task)


def encoded_labels(splits: sources.Splits) -> dict[str, list[float]]:
    """Each split's labels as the binary task encodes them, fitted on train as a run does (DataError if
    one does not fit, naming its file and line)."""
    task = binary_task()
    task.fit(splits.train.labels, splits.train.ids)
    present = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    return {
        name: task.encode_labels(split.labels, split.ids).tolist()
        for name, split in present.items()
        if split is not None and len(split)
    }


def by_id(examples: sources.Examples) -> dict[str, str]:
    return dict(zip(examples.ids, examples.texts))


def add_reviews(tree, reviews: dict[str, str | bytes]) -> None:
    """Writes reviews at paths relative to the aclImdb directory, e.g. 'train/pos/x_9.txt'."""
    for name, contents in reviews.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents if isinstance(contents, bytes) else contents.encode("utf-8"))


def archive_of(tree, path, mode="w:gz"):
    with tarfile.open(path, mode) as archive:
        archive.add(tree, arcname="aclImdb")
    return path


@pytest.fixture
def tree(tmp_path):
    """A fresh aclImdb tree: 4 train and 2 test reviews per class."""
    return write_aclimdb(tmp_path / "data", {"train": 4, "test": 2})


# ----- texts -----


def test_empty_whitespace_and_markup_only_reviews_are_skipped_and_counted(tree, caplog):
    add_reviews(tree, {f"train/pos/{name}_9.txt": text for name, text in EMPTY_TEXTS.items()})
    add_reviews(tree, {"test/neg/empty_1.txt": ""})
    splits, log = read(tree, caplog)
    assert len(splits.train) == 8 and len(splits.test) == 4
    assert all(examples.has_content(text) for text in splits.train.texts)
    assert log == f"Read 8 train and 4 test reviews from {tree}: 6 empty or whitespace/markup-only reviews skipped."


def test_has_content_keeps_short_and_odd_but_real_texts():
    for text in ["ok", "<3", "10/10", "😀", "a < b > c", "&", ";)", *OTHER_SCRIPTS.values()]:
        assert examples.has_content(text), text
    for text in EMPTY_TEXTS.values():
        assert not examples.has_content(text), text


def test_invalid_utf8_is_replaced_and_counted(tree, caplog):
    add_reviews(
        tree,
        {
            "train/pos/latin1_9.txt": "Caf\xe9 scene was great".encode("latin-1"),
            "train/neg/binary_1.txt": bytes(range(256)) * 4,
            "train/neg/bom_2.txt": b"\xef\xbb\xbfA dull film",
        },
    )
    splits, log = read(tree, caplog)
    texts = by_id(splits.train)
    assert texts["train/pos/latin1_9"] == "Caf\ufffd scene was great"
    assert "\ufffd" in texts["train/neg/binary_1"]
    assert texts["train/neg/bom_2"] == "A dull film"  # A byte order mark is not an error.
    assert log == (
        f"Read 11 train and 4 test reviews from {tree}: 2 with invalid UTF-8 decoded with replacement characters."
    )


def test_emoji_and_other_scripts_are_kept_unchanged_and_not_counted(tree, caplog):
    add_reviews(tree, {f"train/pos/{name}_10.txt": text for name, text in OTHER_SCRIPTS.items()})
    splits, log = read(tree, caplog)
    texts = by_id(splits.train)
    for name, text in OTHER_SCRIPTS.items():
        assert texts[f"train/pos/{name}_10"] == text
    assert log == f"Read 13 train and 4 test reviews from {tree}."


def test_a_1mb_review_is_kept_cut_to_its_ends_quickly(tree, caplog):
    head, tail = "Opening words. ", " Closing verdict: great."
    huge = head + "word " * ((MB - len(head) - len(tail)) // 5) + tail
    add_reviews(tree, {"train/pos/huge_10.txt": huge})
    start = time.monotonic()
    splits, log = read(tree, caplog)
    assert time.monotonic() - start < 5
    kept = by_id(splits.train)["train/pos/huge_10"]
    limit = examples.max_text_chars(128)
    assert len(kept) == limit + 1
    assert kept.startswith(head) and kept.endswith(tail)
    assert log == (
        f"Read 9 train and 4 test reviews from {tree}: "
        f"1 longer than {limit} characters cut to their first and last {limit // 2}."
    )


def test_a_review_below_the_cut_is_kept_whole(tree, caplog):
    text = "fine " * (examples.max_text_chars(128) // 5)
    add_reviews(tree, {"train/pos/long_8.txt": text})
    splits, _ = read(tree, caplog)
    assert by_id(splits.train)["train/pos/long_8"] == text


def test_a_review_file_too_large_to_be_one_is_rejected_by_name(tree, monkeypatch):
    monkeypatch.setattr(examples, "MAX_REVIEW_BYTES", 1000)
    add_reviews(tree, {"train/neg/runaway_1.txt": "x" * 2000})
    with pytest.raises(sources.DataError, match=r"runaway_1\.txt is 0 MiB; a review is at most 0 MiB"):
        sources.load_splits(data_config(tree), seed=0)


def test_only_empty_reviews_is_an_error_that_says_so(tmp_path):
    add_reviews(tmp_path / "aclImdb", {"train/pos/0_9.txt": "", "train/neg/0_1.txt": "<br />"})
    with pytest.raises(sources.DataError, match=r"\(train\): no examples found \(2 empty or whitespace/markup-only"):
        sources.load_splits(data_config(tmp_path), seed=0)


# ----- aclImdb trees and archives -----

STRAY = {
    ".DS_Store": b"\x00\x00\x00\x01Bud1",
    "train/notes.txt": "my notes",
    "train/pos/._0_9.txt": b"\x00\x05\x16\x07 AppleDouble",
    "train/pos/3_9.txt~": "editor backup",
    "train/neg/nested/5_2.txt": "a review one folder too deep",
}
ORIGINAL_EXTRAS = {
    "README": "Large Movie Review Dataset",
    "imdb.vocab": "the\nand\n",
    "imdbEr.txt": "0.1\n",
    "train/labeledBow.feat": "0 0:1\n",
    "train/unsupBow.feat": "0 0:1\n",
    "train/urls_pos.txt": "http://www.imdb.com/title/tt0453418/usercomments\n",
    "train/urls_unsup.txt": "http://www.imdb.com/title/tt0453418/usercomments\n",
    "train/unsup/0_0.txt": "An unlabelled review.",
    "test/urls_neg.txt": "http://www.imdb.com/title/tt0453418/usercomments\n",
}


@pytest.mark.parametrize("form", ["directory", "parent directory", "archive"])
def test_stray_files_are_ignored_and_counted_but_not_the_original_extras(tree, tmp_path, caplog, form):
    add_reviews(tree, {**STRAY, **ORIGINAL_EXTRAS})
    path = {"directory": tree, "parent directory": tree.parent}.get(form)
    if path is None:
        path = archive_of(tree, tmp_path / "aclImdb_v1.tar.gz")
    (tree.parent / "unrelated.txt").write_text("outside aclImdb/: not part of the data")
    splits, log = read(path, caplog)
    assert len(splits.train) == 8 and len(splits.test) == 4
    assert not [i for i in splits.train.ids if "unsup" in i or "._" in i]
    assert log == f"Read 8 train and 4 test reviews from {path}: 5 stray files ignored."


def test_everything_at_once_is_counted_in_one_line(tree, caplog):
    add_reviews(
        tree,
        {"train/pos/e_9.txt": "", "train/neg/b_1.txt": b"\xff bad", "test/pos/h_9.txt": "ok " * MB, **STRAY},
    )
    _, log = read(tree, caplog)
    limit = examples.max_text_chars(128)
    assert log == (
        f"Read 9 train and 5 test reviews from {tree}: 1 empty or whitespace/markup-only review skipped, "
        f"1 with invalid UTF-8 decoded with replacement characters, 1 longer than {limit} characters cut to their "
        f"first and last {limit // 2}, 5 stray files ignored."
    )


def test_the_same_review_twice_is_rejected_naming_both_files(tree):
    name = sorted(p.name for p in (tree / "train" / "pos").iterdir())[0]
    add_reviews(tree, {f"copy/aclImdb/train/pos/{name}": "a copy"})
    with pytest.raises(
        sources.DataError, match=rf"copy/aclImdb/train/pos/{name} and .*/aclImdb/train/pos/{name} are both"
    ):
        sources.load_splits(data_config(tree), seed=0)


def test_an_unreadable_review_file_is_named(tree):
    (tree / "train" / "pos" / "dangling_9.txt").symlink_to(tree / "nowhere.txt")
    with pytest.raises(sources.DataError, match=r"dangling_9\.txt: cannot read it \(No such file or directory\)"):
        sources.load_splits(data_config(tree), seed=0)


@pytest.mark.parametrize("mode,suffix", [("w:gz", "tar.gz"), ("w", "tar"), ("w:bz2", "tar.bz2"), ("w:xz", "tar.xz")])
def test_an_archive_truncated_anywhere_is_rejected_naming_it(tree, tmp_path, mode, suffix):
    whole = archive_of(tree, tmp_path / f"whole.{suffix}", mode)
    data = whole.read_bytes()
    with tarfile.open(whole) as archive:
        list(archive)
        end = archive.offset  # Where the end-of-archive marker starts (uncompressed).
    # Every cut that loses a member, including cuts at member boundaries, where tarfile
    # itself would just stop early.
    cuts = sorted({1, 100, 511, 512, *range(0, len(data), max(1, len(data) // 60))})
    cuts = [cut for cut in cuts if cut < (end + 512 if mode == "w" else len(data))]
    assert len(cuts) > 20
    broken = tmp_path / f"broken.{suffix}"
    for cut in cuts:
        broken.write_bytes(data[:cut])
        with pytest.raises(sources.DataError, match=rf"broken\.{re.escape(suffix)}: not a readable tar archive"):
            sources.load_splits(data_config(broken), seed=0)


def test_a_truncated_archive_names_the_member_where_it_broke_off(tree, tmp_path):
    whole = archive_of(tree, tmp_path / "whole.tar", "w")
    with tarfile.open(whole) as archive:
        members = archive.getmembers()
    # Cut exactly at the start of the 6th member's header: tarfile alone reads 5 members and stops.
    broken = tmp_path / "broken.tar"
    broken.write_bytes(whole.read_bytes()[: members[5].offset])
    with pytest.raises(sources.DataError) as error:
        sources.load_splits(data_config(broken), seed=0)
    message = str(error.value)
    assert f"--config.data.path={broken}: not a readable tar archive" in message
    assert f"truncated or corrupt after member {members[4].name}" in message


def test_a_member_too_large_to_be_a_review_is_rejected_by_name(tree, tmp_path, monkeypatch):
    add_reviews(tree, {"train/neg/runaway_1.txt": "x" * 2000})
    path = archive_of(tree, tmp_path / "a.tar.gz")
    monkeypatch.setattr(examples, "MAX_REVIEW_BYTES", 1000)
    with pytest.raises(sources.DataError, match=r"a\.tar\.gz: member aclImdb/train/neg/runaway_1\.txt is 0 MiB"):
        sources.load_splits(data_config(path), seed=0)


def test_a_zip_or_other_file_named_like_an_archive_is_rejected(tmp_path):
    path = tmp_path / "aclImdb_v1.tar.gz"
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(sources.DataError, match=r"aclImdb_v1\.tar\.gz: not a readable tar archive"):
        sources.load_splits(data_config(path), seed=0)


# ----- CSV -----


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_csv_empty_invalid_and_long_texts_are_handled_and_counted(tmp_path, caplog):
    long_text = "great " * (MB // 6)
    path = write(
        tmp_path / "reviews.csv",
        b"\xef\xbb\xbftext,label\n"  # Excel's byte order mark before the header.
        b'"Fine, really",1\n'
        b",0\n"
        b'"<br /><br />",1\n'
        b"Caf\xe9 was bad,0\n"
        b'"Multi\nline",1\n'
        b"\n" + f'"{long_text}",1\n'.encode() + "😀 素晴らしい,1\n".encode(),
    )
    splits, log = read(path, caplog)
    texts = by_id(splits.train)
    limit = examples.max_text_chars(128)
    assert texts[f"{path}:2"] == "Fine, really"
    assert texts[f"{path}:5"] == "Caf\ufffd was bad"
    assert texts[f"{path}:6"] == "Multi\nline"
    assert len(texts[f"{path}:9"]) == limit + 1  # Line 8 is blank; a 1 MB field is fine.
    assert texts[f"{path}:10"] == "😀 素晴らしい"
    assert sorted(splits.train.labels) == ["0", "1", "1", "1", "1"]  # As read.
    assert sorted(encoded_labels(splits)["train"]) == [0, 1, 1, 1, 1]
    assert log == (
        f"Read 5 records from {path}: 2 empty or whitespace/markup-only reviews skipped, 1 with invalid UTF-8 "
        f"decoded with replacement characters, 1 longer than {limit} characters cut to their first and last "
        f"{limit // 2}."
    )


@pytest.mark.parametrize(
    "body,message",
    [
        ("text,label\nfine,1\njust text\n", r"bad\.csv:3: missing field\(s\) \['label'\]: 1 field, the header has 2"),
        ("label,text\n1,fine\n0\n", r"bad\.csv:3: missing field\(s\) \['text'\]"),
        (
            "label,text\n1,fine\n0,Great, fun film\n",
            r"bad\.csv:3: 3 fields, the header has 2 \(a text with an unquoted comma\?\)",
        ),
        (
            'text,label\nfine,1\n"unclosed quote,1\nnext,0\nlast,1\n',
            r"bad\.csv:3: missing field\(s\) \['label'\].*the record runs on to line 5 \(an unclosed quote\?\)",
        ),
        ("text,label\nfine,1\nnot fine,\n", r"bad\.csv:3: the label is empty"),
        ("text,label\nfine,1\nnot fine,0.5\n", r"bad\.csv:3: label '0\.5' is not 0 or 1"),
        ("text,label\nfine,1\nnot fine,1e9\n", r"bad\.csv:3: label '1e9' is not 0 or 1"),
        ("text,label\nfine,1\nnot fine,nan\n", r"bad\.csv:3: label 'nan' is a word, but .*bad\.csv:2 has a number"),
        ("text,label\nfine,1\n\n\nnot fine,neg\n", r"bad\.csv:5: label 'neg' is a word, but .*bad\.csv:2 has a number"),
        (
            b"text,label\nfine,1\nnot fine,\xff\n",
            r"bad\.csv:3: label '\\udcff' is a word, but .*bad\.csv:2 has a number",
        ),
        ("review,stars\nfine,1\n", r"bad\.csv: missing column\(s\) \['text', 'label'\]; found \['review', 'stars'\]"),
        ("", r"bad\.csv: missing column\(s\) \['text', 'label'\]; found None"),
    ],
)
def test_csv_records_that_cannot_be_read_are_rejected_with_file_and_line(tmp_path, body, message):
    path = write(tmp_path / "bad.csv", body)
    # Reading rejects what cannot be read; the task, fitting on the training labels, what is no label.
    with pytest.raises(sources.DataError, match=message):
        encoded_labels(sources.load_splits(data_config(path, validation_fraction=0.0), seed=0))


def test_csv_labels_may_be_written_as_floats_and_padded(tmp_path):
    path = write(tmp_path / "ok.csv", "text,label\na,1.0\nb, 0 \nc,0.0\nd,1\n")
    splits = sources.load_splits(data_config(path, validation_fraction=0.0), seed=0)
    labels = encoded_labels(splits)["train"]
    assert dict(zip(splits.train.texts, labels)) == {"a": 1, "b": 0, "c": 0, "d": 1}


def test_a_csv_field_beyond_the_size_limit_names_the_line(tmp_path, monkeypatch):
    monkeypatch.setattr(examples, "MAX_REVIEW_BYTES", 1000)
    path = write(tmp_path / "bad.csv", 'text,label\nfine,1\n"' + "x" * 2000 + '",0\n')
    with pytest.raises(sources.DataError, match=r"bad\.csv:3: field larger than field limit \(1000\)"):
        sources.load_splits(data_config(path), seed=0)


def test_csv_reading_leaves_the_global_field_limit_alone(tmp_path):
    import csv

    before = csv.field_size_limit()
    sources.load_splits(
        data_config(write(tmp_path / "ok.csv", "text,label\na,1\nb,0\n"), validation_fraction=0.0), seed=0
    )
    assert csv.field_size_limit() == before


# ----- JSONL -----


def jsonl(*records) -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in records) + b"\n"


def test_jsonl_empty_invalid_and_null_texts_are_handled_and_counted(tmp_path, caplog):
    path = write(
        tmp_path / "reviews.jsonl",
        b"\xef\xbb\xbf"
        + jsonl(
            {"text": "Great", "label": 1},
            {"text": "", "label": 0},
            {"text": None, "label": 1},
            b'{"text": "Caf\xe9 bad", "label": 0}',
            {"text": "lone \ud800 surrogate", "label": 1},
            b"",
            {"text": "😀 素晴らしい", "label": 1.0},
            {"text": "  <br/>  ", "label": "0"},
        ),
    )
    splits, log = read(path, caplog)
    texts = by_id(splits.train)
    assert texts[f"{path}:1"] == "Great"
    assert texts[f"{path}:4"] == "Caf\ufffd bad"
    assert texts[f"{path}:5"] == "lone \ufffd surrogate"
    assert texts[f"{path}:7"] == "😀 素晴らしい"
    labels = dict(zip(splits.train.ids, encoded_labels(splits)["train"]))
    assert labels == {f"{path}:1": 1, f"{path}:4": 0, f"{path}:5": 1, f"{path}:7": 1}  # 1.0 on line 7.
    assert log == (
        f"Read 4 records from {path}: 3 empty or whitespace/markup-only reviews skipped, "
        "2 with invalid UTF-8 decoded with replacement characters."
    )


@pytest.mark.parametrize(
    "line,message",
    [
        (b'{"text": "x", "label": 2}', r"bad\.jsonl:2: label 2 is not 0 or 1"),
        (b'{"text": "x", "label": "yes"}', r"bad\.jsonl:2: label 'yes' is a word, but .*bad\.jsonl:1 has a number"),
        (b'{"text": "x", "label": true}', r"bad\.jsonl:2: label True is not a number or a string"),
        (b'{"text": "x", "label": null}', r"bad\.jsonl:2: label None is not a number or a string"),
        (b'{"text": "x", "label": [1]}', r"bad\.jsonl:2: label \[1\] is not a number or a string"),
        (b'{"text": "x", "label": NaN}', r"bad\.jsonl:2: label nan is not a finite number"),
        (b'{"text": "x"}', r"bad\.jsonl:2: missing key\(s\) \['label'\]"),
        (b'{"text": 42, "label": 1}', r"bad\.jsonl:2: 'text' is a int, not a string"),
        (b'["x", 1]', r"bad\.jsonl:2: expected a JSON object with keys \['text', 'label'\]"),
        (b'{"text": "x", "label": 1', r"bad\.jsonl:2: not valid JSON"),
        (b"\xff\xfe{}", r"bad\.jsonl:2: not valid JSON"),
    ],
)
def test_jsonl_records_that_cannot_be_read_are_rejected_with_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", jsonl({"text": "fine", "label": 1}, line))
    with pytest.raises(sources.DataError, match=message):
        encoded_labels(sources.load_splits(data_config(path, validation_fraction=0.0), seed=0))


def test_a_json_array_file_gets_a_hint(tmp_path):
    path = write(tmp_path / "reviews.json", json.dumps([{"text": "a", "label": 1}], indent=1))
    with pytest.raises(sources.DataError, match=r"reviews\.json:1: not valid JSON .* expected JSON Lines"):
        sources.load_splits(data_config(path), seed=0)


# ----- paths and sources that do not fit together -----


def test_csv_source_given_a_directory_is_rejected(tmp_path):
    with pytest.raises(sources.DataError, match=r"--config.data.path=.* is a directory, but --config.data.source=csv"):
        sources.load_splits(data_config(tmp_path, source="csv"), seed=0)


def test_test_file_with_an_aclimdb_source_is_rejected(tree, tmp_path):
    test_path = write(tmp_path / "test.csv", "text,label\na,1\n")
    with pytest.raises(sources.DataError, match=r"test_path=.*test\.csv: only csv and jsonl sources"):
        sources.load_splits(data_config(tree, test_path=str(test_path)), seed=0)


@pytest.mark.parametrize("name,message", [("missing.csv", "no such file"), ("folder", "is a directory")])
def test_missing_or_directory_test_file_is_rejected(tmp_path, name, message):
    (tmp_path / "folder").mkdir()
    train = write(tmp_path / "train.csv", "text,label\na,1\nb,0\n")
    with pytest.raises(sources.DataError, match=rf"--config.data.test_path=.*{name}:? {message}"):
        sources.load_splits(data_config(train, test_path=str(tmp_path / name)), seed=0)


def test_a_test_file_of_the_other_format_is_read_by_its_own_extension(tmp_path, caplog):
    train = write(tmp_path / "train.csv", "text,label\na,1\nb,0\n")
    test = write(tmp_path / "test.jsonl", jsonl({"text": "c", "label": 1}, {"text": "", "label": 0}))
    splits, log = read(train, caplog, test_path=str(test))
    assert list(splits.test.texts) == ["c"]
    assert encoded_labels(splits)["test"] == [1]
    assert log == (
        f"Read 2 records from {train}.\nRead 1 record from {test}: 1 empty or whitespace/markup-only review skipped."
    )


def test_a_single_class_training_set_is_warned_about(tmp_path, caplog):
    path = write(tmp_path / "ones.csv", "text,label\na,1\nb,1\n")
    splits = sources.load_splits(data_config(path, validation_fraction=0.0), seed=0)
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert encoded_labels(splits)["train"] == [1, 1]
    assert "All 2 training examples have label 1" in caplog.text
    # Two classes: nothing to warn about.
    caplog.clear()
    splits = sources.load_splits(
        data_config(write(tmp_path / "both.csv", "text,label\na,1\nb,0\n"), validation_fraction=0.0), seed=0
    )
    with caplog.at_level(logging.WARNING, logger="absl"):
        encoded_labels(splits)
    assert "training examples have label" not in caplog.text


@pytest.mark.parametrize("fraction,lines", [(0.1, 3), (0.9, 1)])
def test_a_validation_fraction_that_leaves_a_split_empty_is_rejected(tmp_path, fraction, lines):
    path = write(tmp_path / "few.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(lines)))
    with pytest.raises(sources.DataError, match=rf"validation_fraction={fraction} of {lines} training examples"):
        sources.load_splits(data_config(path, validation_fraction=fraction), seed=0)


# ----- end to end -----


@pytest.mark.slow
def test_trainer_trains_on_a_messy_tree_and_logs_the_counts(tmp_path, vocab_path):
    tree = write_aclimdb(tmp_path / "data", {"train": 24, "test": 8})
    rng = np.random.default_rng(0)
    add_reviews(
        tree,
        {
            "train/pos/empty_9.txt": "",
            "train/neg/markup_1.txt": "<br /><br />  ",
            "train/neg/binary_2.txt": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
            "train/pos/emoji_10.txt": "Great fun 🎬🍿😀, wonderful!",
            "train/pos/huge_10.txt": "great fun " * (MB // 10),
            "test/neg/scripts_1.txt": "Отличный? 素晴らしい? No: awful.",
            **STRAY,
        },
    )
    process = check_ok(
        run_trainer(
            tmp_path / "run",
            vocab_path,
            tree,
            "--strategy=default",
            "--config.train.steps=3",
            "--config.train.log_every_steps=1",
        )
    )
    limit = examples.max_text_chars(32)
    assert (
        f"Read 51 train and 17 test reviews from {tree}: 2 empty or whitespace/markup-only reviews skipped, "
        f"1 with invalid UTF-8 decoded with replacement characters, 1 longer than {limit} characters cut to "
        f"their first and last {limit // 2}, 5 stray files ignored." in process.stderr
    ), process.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").exists()


def test_a_bad_label_in_a_held_out_split_stops_the_run_before_training(tmp_path, vocab_path):
    """Labels are encoded as batches are made; those of the validation and test splits are checked up front,
    not when they are first evaluated (the test file's after training)."""
    train = write(tmp_path / "train.csv", "text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))
    test = write(tmp_path / "test.csv", "text,label\na great film,1\na dull film,maybe\n")
    process = run_trainer(tmp_path / "run", vocab_path, train, f"--config.data.test_path={test}")
    check_refused(process, rf"{re.escape(str(test))}:3: label 'maybe' is not 0 or 1")
    assert "Training steps" not in process.stderr
    assert not (tmp_path / "run").exists()


def test_log_line_is_written_through_absl(tree, caplog):
    # The summary goes to the `absl` logger, which pytest's caplog (and absl's handler) see.
    with caplog.at_level(logging.INFO, logger="absl"):
        sources.load_splits(data_config(tree), seed=0)
    assert any(r.name == "absl" and r.getMessage().startswith("Read ") for r in caplog.records)
