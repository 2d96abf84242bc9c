"""End to end through `python -m trainer.main`: train, evaluate, resume, export, predict."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from trainer.serving import export

from conftest import (
    check_ok,
    in_process_probabilities,
    read_scalars,
    run_trainer,
    serve_in_fresh_process,
)

TEXTS = [
    "A wonderful, brilliant film. I love it!",
    "Awful and boring; I hate this mess.",
    "",
    "the plot",
    "great " * 200,
    "ünïcödé 映画 🎬",
]


def test_mirrored_run_learns_and_writes_everything(trained_run):
    model_dir, log = trained_run.model_dir, trained_run.log
    assert "MirroredStrategy with 2 replica(s)" in log
    assert "global batch 8 = 4 per replica x 2 replicas" in log
    assert "examples/s  ETA" in log
    train = read_scalars(model_dir / "train")
    assert {"loss", "accuracy", "auc", "learning_rate", "examples_per_second"} <= set(train)
    losses = [train["loss"][step] for step in sorted(train["loss"])]
    assert losses[-1] < 0.8 * losses[0], losses
    evaluation = read_scalars(model_dir / "eval")
    assert sorted(evaluation["accuracy"]) == [30, 60]
    assert {"loss", "auc"} <= set(evaluation)
    # Test-set results have their own run, so they never overwrite validation points.
    assert sorted(read_scalars(model_dir / "eval_test")["accuracy"]) == [60]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["step"] == 60
    assert metrics["validation"]["accuracy"] == pytest.approx(evaluation["accuracy"][60])
    assert metrics["validation"]["num_examples"] == 32 and metrics["test"]["num_examples"] == 40
    assert metrics["test"]["accuracy"] >= 0.8, metrics
    config = json.loads((model_dir / "config.json").read_text())
    assert config["train"]["steps"] == 60 and config["train"]["eval_every_steps"] == 30
    assert (model_dir / "export" / "60" / "saved_model.pb").exists()
    assert not [name for name in os.listdir(model_dir / "export") if name.startswith(".tmp")]


@pytest.mark.slow
def test_one_device_run_lowers_the_loss(tmp_path, vocab_path, imdb_archive):
    check_ok(run_trainer(tmp_path, vocab_path, imdb_archive, "--strategy=one_device", "--config.train.steps=60"))
    losses = read_scalars(tmp_path / "train")["loss"]
    assert losses[60] < 0.9 * losses[5], losses
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["accuracy"] >= 0.8


def test_export_reloads_in_a_fresh_process_with_the_same_probabilities(trained_run, tmp_path):
    probabilities = np.array(serve_in_fresh_process(trained_run.model_dir / "export" / "60", TEXTS, tmp_path))
    assert probabilities.shape == (len(TEXTS),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    np.testing.assert_allclose(probabilities, in_process_probabilities(trained_run.model_dir, TEXTS), atol=1e-5)
    assert probabilities[0] > 0.5 > probabilities[1]


def test_export_serves_long_batches_in_length_chunks_with_the_same_results(trained_run):
    """Sorted by length and cut into chunks, a batch gives exactly what one padded call gives,
    in the caller's order; and the graph needs no XLA, so any TensorFlow runtime can serve it."""
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "actor", "boring", "great", "the", "and"]
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 40))) for _ in range(3 * export.CHUNK_SIZE + 5)]
    export_path = trained_run.model_dir / "export" / "60"
    served = tf.saved_model.load(str(export_path)).signatures[export.SIGNATURE](text=tf.constant(texts))
    np.testing.assert_allclose(served["probability"], in_process_probabilities(trained_run.model_dir, texts), atol=1e-5)
    graph = saved_model_pb2.SavedModel.FromString((export_path / "saved_model.pb").read_bytes())
    functions = graph.meta_graphs[0].graph_def.library.function
    assert functions and not [f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]


def test_predict_prints_label_and_probability(trained_run, tmp_path, vocab_path, imdb_dir):
    texts_file = tmp_path / "reviews.txt"
    texts_file.write_text("Terrible, dull and weak.\n\nGreat fun, excellent acting!\n")
    process = check_ok(
        run_trainer(
            trained_run.model_dir,
            vocab_path,
            imdb_dir,
            "--mode=predict",
            f"--text={TEXTS[0]}",
            f"--input_file={texts_file}",
        )
    )
    lines = [line.split("\t") for line in process.stdout.strip().splitlines()]
    assert [line[2] for line in lines] == [TEXTS[0], "Terrible, dull and weak.", "Great fun, excellent acting!"]
    labels = [line[0] for line in lines]
    assert labels == ["positive", "negative", "positive"]
    probabilities = [float(line[1]) for line in lines]
    expected = in_process_probabilities(trained_run.model_dir, [line[2] for line in lines])
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_evaluate_mode_reproduces_the_test_metrics(trained_run, tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "copy"
    shutil.copytree(trained_run.model_dir, model_dir)
    before = json.loads((model_dir / "metrics.json").read_text())
    check_ok(run_trainer(model_dir, vocab_path, imdb_dir, "--mode=evaluate", "--strategy=one_device"))
    after = json.loads((model_dir / "metrics.json").read_text())
    assert after["step"] == 60
    for name in ("accuracy", "loss", "auc"):
        assert after["test"][name] == pytest.approx(before["test"][name], abs=1e-5)


def test_export_mode_writes_a_version_from_the_checkpoint(trained_run, tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "copy"
    shutil.copytree(trained_run.model_dir, model_dir, ignore=shutil.ignore_patterns("export"))
    check_ok(run_trainer(model_dir, vocab_path, imdb_dir, "--mode=export"))
    assert os.listdir(model_dir / "export") == ["60"]
