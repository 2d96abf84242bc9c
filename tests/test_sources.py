"""Data sources, the seeded split and their error messages."""

import json
import socket
import tarfile

import numpy as np
import pytest

from trainer import experiment
from trainer.data import sources, tfds_source
from trainer.experiment import default_config
from trainer.tasks.registry import TASKS


def data_config(**values):
    config = default_config().data
    for key, value in values.items():
        config[key] = value
    return config


def binary_task():
    """The default config's task (binary): sources keep labels as read; the task checks and encodes them."""
    parsed = experiment.parse(default_config())
    return TASKS["binary"](None, parsed.model, parsed.data, parsed.task)


def test_aclimdb_directory_and_archive_read_the_same(imdb_dir, imdb_archive):
    splits = sources.load_splits(data_config(path=str(imdb_dir)), seed=1)
    from_archive = sources.load_splits(data_config(path=str(imdb_archive)), seed=1)
    for name in ("train", "validation", "test"):
        a, b = getattr(splits, name), getattr(from_archive, name)
        assert list(a.ids) == list(b.ids) and list(a.texts) == list(b.texts)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert len(splits.train) + len(splits.validation) == 160
    assert len(splits.validation) == 32  # 20% held out
    assert len(splits.test) == 40
    assert sorted(np.unique(splits.test.labels)) == [0, 1]
    assert np.sum(splits.test.labels) == 20
    # Ids name split, polarity and file; labels follow the polarity folder.
    for example_id, label in zip(splits.train.ids, splits.train.labels):
        assert example_id.startswith("train/pos/" if label == 1 else "train/neg/")
    assert any("<br />" in text for text in splits.train.texts)


def test_parent_directory_of_aclimdb_is_accepted(imdb_dir):
    splits = sources.load_splits(data_config(path=str(imdb_dir.parent)), seed=1)
    assert len(splits.test) == 40


def test_split_is_seeded_disjoint_and_complete(imdb_dir):
    first = sources.load_splits(data_config(path=str(imdb_dir)), seed=7)
    again = sources.load_splits(data_config(path=str(imdb_dir)), seed=7)
    other = sources.load_splits(data_config(path=str(imdb_dir)), seed=8)
    assert list(first.validation.ids) == list(again.validation.ids)
    assert set(first.validation.ids) != set(other.validation.ids)
    assert not set(first.train.ids) & set(first.validation.ids)
    assert len(set(first.train.ids) | set(first.validation.ids)) == 160


def test_max_examples_keeps_both_classes(imdb_dir):
    splits = sources.load_splits(data_config(path=str(imdb_dir), max_examples=10), seed=1)
    assert len(splits.train) == len(splits.validation) == len(splits.test) == 10
    assert 0 < splits.train.labels.sum() < 10


def test_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text('review,sentiment\n"Great, fun film",1\nDull mess,0\nLoved it,1\nBoring,0\nOk fine,1\n')
    jsonl_path = tmp_path / "reviews.jsonl"
    rows = [{"review": f"text {i}", "sentiment": (i + 1) % 2} for i in range(5)]
    jsonl_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for path in (csv_path, jsonl_path):
        config = data_config(path=str(path), text_column="review", label_column="sentiment", validation_fraction=0.4)
        splits = sources.load_splits(config, seed=0)
        assert len(splits.train) == 3 and len(splits.validation) == 2 and splits.test is None
        texts = sorted(list(splits.train.texts) + list(splits.validation.texts))
        if path is csv_path:
            assert "Great, fun film" in texts
        # Labels as read: CSV fields are strings, JSON numbers stay numbers.
        read = sorted(list(splits.train.labels) + list(splits.validation.labels))
        assert read == (["0", "0", "1", "1", "1"] if path is csv_path else [0, 0, 1, 1, 1])
        task = binary_task()
        task.fit(splits.train.labels, splits.train.ids)
        encoded = [task.encode_labels(s.labels, s.ids) for s in (splits.train, splits.validation)]
        assert all(e.dtype == np.float32 for e in encoded)
        assert sorted(np.concatenate(encoded).tolist()) == [0, 0, 1, 1, 1]


def test_csv_missing_column_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,stars\nhello,1\n")
    with pytest.raises(sources.DataError, match=r"missing column\(s\) \['label'\].*label_column"):
        sources.load_splits(data_config(path=str(path)), seed=0)


@pytest.mark.parametrize(
    "label,problem",
    [("2", "is not 0 or 1"), ("positive", r"is a word, but .*bad\.csv:2 has a number"), ("-1", "is not 0 or 1")],
)
def test_bad_label_names_file_and_line(tmp_path, label, problem):
    path = tmp_path / "bad.csv"
    path.write_text(f"text,label\nfine,1\nnot fine,{label}\n")
    # No validation split: both lines are training examples, which the task fits on and encodes as a run does.
    train = sources.load_splits(data_config(path=str(path), validation_fraction=0.0), seed=0).train
    task = binary_task()
    with pytest.raises(sources.DataError, match=rf"bad\.csv:3: label '{label}' {problem}"):
        task.fit(train.labels, train.ids)
        task.encode_labels(train.labels, train.ids)


def test_jsonl_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(sources.DataError, match=r"bad\.jsonl:2: not valid JSON"):
        sources.load_splits(data_config(path=str(path)), seed=0)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(sources.DataError, match=r"--config.data.path=.*nope: no such file"):
        sources.load_splits(data_config(path=str(tmp_path / "nope")), seed=0)


def test_directory_in_wrong_layout(tmp_path):
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews" / "a.txt").write_text("hello")
    with pytest.raises(sources.DataError, match=r"no aclImdb/train/pos/\*\.txt.*layout"):
        sources.load_splits(data_config(path=str(tmp_path / "reviews")), seed=0)


def test_truncated_archive(tmp_path, imdb_archive):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(imdb_archive.read_bytes()[:2000])
    with pytest.raises(sources.DataError, match=r"broken\.tar\.gz: not a readable tar archive"):
        sources.load_splits(data_config(path=str(broken)), seed=0)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"x")
    with pytest.raises(sources.DataError, match="cannot tell its format"):
        sources.load_splits(data_config(path=str(path)), seed=0)


def test_tfds_offline_fails_fast_with_what_to_download(tmp_path, monkeypatch):
    def unreachable(address, timeout=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(sources.DataError) as error:
        sources.load_splits(data_config(), seed=0, tfds_data_dir=str(tmp_path))
    message = str(error.value)
    assert "imdb_reviews" in message and str(tmp_path) in message
    assert tfds_source.IMDB_URL in message and "--config.data.path=" in message


def test_archive_members_outside_layout_are_ignored(tmp_path, imdb_dir):
    path = tmp_path / "extra.tar.gz"
    stray = tmp_path / "notes.txt"
    stray.write_text("not a review")
    with tarfile.open(path, "w:gz") as archive:
        archive.add(imdb_dir, arcname="aclImdb")
        archive.add(stray, arcname="aclImdb/train/notes.txt")
    splits = sources.load_splits(data_config(path=str(path)), seed=1)
    assert len(splits.train) + len(splits.validation) == 160
