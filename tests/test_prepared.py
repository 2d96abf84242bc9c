"""Prepared token shards (trainer/prepare.py, trainer/data/prepared.py): written once, streamed with the
same batches as the raw text, and refused when they do not fit the run."""

import dataclasses
import json
import random
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from configs import smoke
from trainer import errors, experiment, prepare
from trainer.data import prepared, sources
from trainer.data.stream_input import StreamInput
from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.tasks import labels as labels_lib

from conftest import (
    PYTHON,
    REPO,
    SMOKE_CONFIG,
    check_ok,
    check_refused,
    make_review,
    run_trainer,
    snapshot,
    subprocess_env,
    write_vocab,
)

SEQ_LENGTH = 32


def write_reviews(path, count: int = 120, seed: int = 0) -> None:
    rng = random.Random(seed)
    rows = [f"{make_review(rng, i % 2 == 0, length=rng.randint(3, 40))},{int(i % 2 == 0)}" for i in range(count)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")


def config_for(vocab_path, data_path, **data_values):
    config = smoke.get_config()
    config.model.vocab_path = str(vocab_path)
    config.data.path = str(data_path)
    config.data.update(data_values)
    return config


def prepared_records(directory) -> list[dict]:
    metadata = prepared.read_metadata(str(directory), "--output")
    files = prepared.split_files(str(directory), metadata, "train")
    parse = lambda record: prepared.parse(record, metadata["seq_length"])  # noqa: E731
    return list(tf.data.TFRecordDataset(list(files)).map(parse).as_numpy_iterator())


def test_shards_hold_every_record_tokenized_as_the_tokenizer_does(tmp_path, vocab_path):
    data = tmp_path / "reviews.csv"
    write_reviews(data)
    config = experiment.validate(config_for(vocab_path, data), trains=False)
    metadata = prepare.prepare(config, str(tmp_path / "out"), num_shards=3)
    assert metadata["splits"]["train"]["records"] == 120 and len(metadata["splits"]["train"]["files"]) == 3
    assert metadata["seq_length"] == SEQ_LENGTH and metadata["truncation"] == "head" and not metadata["pairs"]
    records = prepared_records(tmp_path / "out")
    texts = {key: (text, label) for key, text, label in _source_rows(config)}
    assert sorted(r["key"].decode() for r in records) == sorted(texts)
    tokenizer = WordPieceTokenizer(vocab_path, SEQ_LENGTH)
    for record in records[:20]:
        text, label = texts[record["key"].decode()]
        expected = tokenizer(tf.constant([text]))
        for name in ("input_word_ids", "input_mask", "input_type_ids"):
            np.testing.assert_array_equal(record[name], expected[name][0].numpy(), err_msg=name)
        assert record["length"] == expected["input_mask"].numpy().sum()
        assert record["label"].decode() == str(label)


def _source_rows(config):
    """(id, text, label) of every example of the configured in-memory source."""
    data_config = dataclasses.replace(config.data, validation_fraction=0.0)
    examples = sources.load_splits(data_config, seed=0).train
    return zip(examples.ids, examples.texts, examples.labels)


def test_training_batches_from_prepared_shards_equal_those_from_the_raw_text(tmp_path, vocab_path):
    # One shard and one length bucket keep the raw stream's order: then every batch must match.
    data = tmp_path / "reviews.csv"
    write_reviews(data, count=90)
    raw_config = config_for(vocab_path, data, streaming="on")
    prepare.prepare(experiment.validate(raw_config, trains=False), str(tmp_path / "out"), num_shards=1)
    tokenizer = WordPieceTokenizer(vocab_path, SEQ_LENGTH)

    def batches(config) -> list:
        splits = sources.load_splits(experiment.parse(config).data, seed=0)
        stream_input = StreamInput(None, tokenizer, labels_lib.encode_binary, SEQ_LENGTH, 1, seed=3)
        make = stream_input.dataset_fn(splits.train, 8, training=True, consumed=2)
        return list(make(tf.distribute.InputContext()).take(15).as_numpy_iterator())

    raw = batches(raw_config)
    from_shards = batches(config_for(vocab_path, tmp_path / "out"))
    assert len(raw) == len(from_shards) == 15
    for (raw_features, raw_labels, _), (features, labels, _) in zip(raw, from_shards):
        np.testing.assert_array_equal(labels, raw_labels)
        for name, value in raw_features.items():
            np.testing.assert_array_equal(features[name], value, err_msg=name)


@pytest.mark.slow
def test_a_run_trains_from_prepared_shards_and_mismatches_are_refused_untouched(tmp_path, vocab_path):
    data = tmp_path / "reviews.csv"
    write_reviews(data)
    out = tmp_path / "out"
    command = [
        *PYTHON,
        "-m",
        "trainer.prepare",
        f"--config={SMOKE_CONFIG}",
        f"--config.model.vocab_path={vocab_path}",
    ]
    missing = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    check_refused(missing, r"--output is required")
    command += [f"--config.data.path={data}", f"--output={out}", "--num_shards=2"]
    done = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "train: 120 records in 2 shard(s)" in done.stderr, done.stderr[-3000:]
    model_dir = tmp_path / "run"
    run = check_ok(run_trainer(model_dir, vocab_path, out, "--config.train.steps=6", "--config.data.num_buckets=2"))
    assert "Streaming 2 prepared file(s)" in run.stderr
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == 6
    before = snapshot(model_dir)
    longer = run_trainer(model_dir, vocab_path, out, "--config.train.steps=8", "--config.data.seq_length=64")
    check_refused(longer, r"--config.data.path=.*out was prepared with seq_length 32, but this run's .* gives 64")
    other_vocab = tmp_path / "other_vocab.txt"
    other_vocab.write_text(write_vocab(tmp_path / "vocab.txt").read_text() + "zebra\n")
    refused = run_trainer(model_dir, other_vocab, out, "--config.train.steps=8")
    check_refused(refused, r"was tokenized by wordpiece-uncased:\w+, but this run's model tokenizes with wordpiece")
    assert snapshot(model_dir) == before


def test_outputs_that_would_lose_data_and_cut_off_prepares_are_named(tmp_path, vocab_path):
    data = tmp_path / "reviews.csv"
    write_reviews(data, count=20)
    config = experiment.validate(config_for(vocab_path, data), trains=False)
    out = tmp_path / "out"
    prepare.prepare(config, str(out), num_shards=2)
    with pytest.raises(errors.UserError, match=r"--output=.*out holds prepared shards already"):
        prepare.prepare(config, str(out), num_shards=2)
    with pytest.raises(errors.UserError, match=r"--output=.*reviews\.csv is a file"):
        prepare.prepare(config, str(data), num_shards=2)
    (out / "prepared.json").unlink()  # As a prepare cut off before its last write leaves it.
    with pytest.raises(errors.UserError, match=r"holds prepared shards but no prepared\.json: .* cut off"):
        experiment.validate(config_for(vocab_path, out))
    prepare.prepare(config, str(out), num_shards=2)  # Written over: its shards are ours.
    assert prepared.is_prepared(str(out))
