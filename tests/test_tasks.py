"""Task types beyond binary sentiment: labels, pair packing, metrics against numpy/scipy, runs end to end."""

import json
import random
import shutil

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import smoke
from trainer import experiment
from trainer.data import sources
from trainer.data.examples import DataError
from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.models.tokenizer import Truncation
from trainer.tasks import labels
from trainer.tasks import metrics as task_metrics
from trainer.tasks.base import Predictions
from trainer.tasks.registry import TASKS, build_task

from conftest import (
    NEGATIVE_WORDS,
    NEUTRAL_WORDS,
    POSITIVE_WORDS,
    check_ok,
    check_refused,
    in_process_outputs,
    run_trainer,
    serve_outputs_in_fresh_process,
    snapshot,
)

# ----- pair packing -----


def vocab_ids(vocab_path: str) -> dict[str, int]:
    with open(vocab_path) as f:
        return {token.rstrip("\n"): i for i, token in enumerate(f)}


LONG = "good great wonderful excellent love brilliant"  # 6 tokens


@pytest.mark.slow
@pytest.mark.parametrize(
    "first,second,seq_length,kind,kept_first,kept_second",
    [
        # Room for both: nothing is cut.
        ("good great", "bad", 8, "head", "good great", "bad"),
        # Budget 5: the longer first segment is cut to 3 (5 - 2), the second kept whole.
        (LONG, "bad awful", 8, "head", "good great wonderful", "bad awful"),
        (LONG, "bad awful", 8, "tail", "excellent love brilliant", "bad awful"),
        # Both long, budget 6: 3 each; budget 7: the first keeps the odd token (ties cut the second).
        (LONG, "bad awful terrible boring hate dull", 9, "head", "good great wonderful", "bad awful terrible"),
        (
            LONG,
            "bad awful terrible boring hate dull",
            10,
            "head",
            "good great wonderful excellent",
            "bad awful terrible",
        ),
        # head_tail per segment: 4 of the first = round(4 * 0.5) = 2 from the start, 2 from the end; 3 of
        # the second = round(1.5) = 2 (halves round to even, as for one text) from the start, 1 from the end.
        (LONG, "bad awful terrible boring hate dull", 10, "head_tail", "good great love brilliant", "bad awful dull"),
        # A short first segment leaves the rest of the budget to the second.
        ("fun", "bad awful terrible boring hate dull", 8, "head", "fun", "bad awful terrible boring"),
    ],
)
def test_pairs_are_packed_token_by_token(vocab_path, first, second, seq_length, kind, kept_first, kept_second):
    ids = vocab_ids(vocab_path)
    tokenizer = WordPieceTokenizer(vocab_path, seq_length, truncation=Truncation(kind, 0.5))
    out = tokenizer(tf.constant([first]), tf.constant([second]))
    a, b = ([ids[w] for w in text.split()] for text in (kept_first, kept_second))
    expected = [ids["[CLS]"], *a, ids["[SEP]"], *b, ids["[SEP]"]]
    padding = seq_length - len(expected)
    assert out["input_word_ids"].numpy()[0].tolist() == expected + [ids["[PAD]"]] * padding
    assert out["input_type_ids"].numpy()[0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * padding
    assert out["input_mask"].numpy()[0].tolist() == [1] * len(expected) + [0] * padding
    lengths = tokenizer.lengths(tf.constant([first]), tf.constant([second]))
    assert lengths.numpy().tolist() == [len(expected)]


# ----- labels -----


def test_label_vocabulary_is_sorted_numerically_for_numbers_and_checked():
    ids = np.array([f"t.csv:{i}" for i in range(2, 7)], dtype=object)
    names = labels.names_of(np.array([10, "2", 2.0, 7, "1"], dtype=object), ids)
    assert labels.vocabulary(names, ids) == ("1", "2", "7", "10")
    with pytest.raises(DataError, match=r"t\.csv:4: label 'sports' is a word, but t\.csv:2 has a number"):
        labels.names_of(np.array([1, 2, "sports"], dtype=object), ids)
    with pytest.raises(DataError, match=r"--config.task.labels: \['9'\] have no training example"):
        labels.vocabulary(names, ids, given=("1", "2", "7", "10", "9"))
    with pytest.raises(DataError, match=r"--config.task.num_classes=3, but the training data have 4 labels"):
        labels.vocabulary(names, ids, num_classes=3)
    with pytest.raises(DataError, match=r"t\.csv:3: label '3' is not among the training data's labels"):
        labels.indices(labels.names_of(np.array([1, 3], dtype=object), ids), ids, ("1", "2"))
    multi = labels.names_of(np.array([["b", "a"], [], ["c"]], dtype=object), ids[:3], several=True)
    np.testing.assert_array_equal(labels.multi_hot(multi, ids[:3], ("a", "b", "c")), [[1, 1, 0], [0, 0, 0], [0, 0, 1]])


# ----- heads -----


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_mean"])
def test_every_pooling_trains_the_whole_encoder_and_only_unused_weights_get_zero_gradients(vocab_path, pooling):
    config = smoke.get_config()
    config.model.vocab_path = vocab_path
    config.model.pooling = pooling
    task = build_task(experiment.parse(config))
    task.prepare_labels(None, ("0", "1"), None)
    model = task.build_model()
    features = task.build_tokenizer()(tf.constant(["great fun film", "dull awful mess"]))
    loss, _, _, gradients = task.train_step(
        model, features, tf.constant([1.0, 0.0]), tf.ones([2]), global_batch_size=2, scale_loss=lambda x: x
    )
    assert np.isfinite(loss.numpy())
    unused = {v.name for v, g in zip(model.trainable_variables, gradients) if not np.any(g.numpy())}
    # Mean pooling reads the token vectors, not the pooled [CLS]: only the pooler goes untrained.
    assert all("pooler" in name for name in unused), unused
    assert bool(unused) == (pooling == "mean")


# ----- metrics against numpy and scipy -----


def make_task(task_type: str, label_names=(), **task_values):
    config = experiment.default_config()
    config.task.type = task_type
    config.task.labels = tuple(label_names)
    config.task.update(task_values)
    parsed = experiment.parse(config)
    return TASKS[task_type](None, parsed.model, parsed.data, parsed.task)


def run_metrics(task, labels_, outputs, weights, predictions: bool = False):
    metrics = task.build_metrics(evaluation=True)
    labels_, outputs, weights = (tf.constant(v) for v in (labels_, outputs, weights))
    task.update_metrics(metrics, labels_, outputs, task.per_example_loss(labels_, outputs), weights)
    real = weights.numpy() > 0
    collected = Predictions(labels_.numpy()[real], outputs.numpy()[real]) if predictions else None
    return task.aggregate(metrics, collected)


def test_multiclass_metrics_match_numpy():
    rng = np.random.default_rng(0)
    names = ("1", "2", "3", "4", "7", "8", "9", "10")
    true = rng.integers(0, 8, 300).astype(np.int32)
    logits = rng.normal(size=(300, 8)).astype(np.float32) + 2.5 * np.eye(8, dtype=np.float32)[true]
    weights = (rng.random(300) > 0.1).astype(np.float32)
    results = run_metrics(make_task("multiclass", names), true, logits, weights)
    keep = weights > 0
    predicted, actual = logits[keep].argmax(axis=1), true[keep]
    counts = np.zeros((8, 8), int)
    np.add.at(counts, (actual, predicted), 1)
    assert results["confusion_matrix"] == {"labels": list(names), "counts": counts.tolist()}
    assert results["accuracy"] == pytest.approx(np.mean(predicted == actual))
    f1 = []
    for c in range(8):
        tp, fp, fn = counts[c, c], counts[:, c].sum() - counts[c, c], counts[c].sum() - counts[c, c]
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        assert results["per_class"][names[c]]["f1"] == pytest.approx(f1[-1])
    assert results["macro_f1"] == pytest.approx(np.mean(f1))
    stars = np.array([float(n) for n in names])
    assert results["mae"] == pytest.approx(np.mean(np.abs(stars[predicted] - stars[actual])))
    assert results["within_one"] == pytest.approx(np.mean(np.abs(stars[predicted] - stars[actual]) <= 1))
    assert results["num_examples"] == keep.sum()


def test_regression_metrics_match_scipy():
    rng = np.random.default_rng(1)
    true = rng.uniform(1, 10, 400).astype(np.float32)
    predicted = (true + rng.normal(scale=1.5, size=400)).astype(np.float32)
    weights = (rng.random(400) > 0.2).astype(np.float32)
    results = run_metrics(make_task("regression"), true, predicted, weights, predictions=True)
    keep = weights > 0
    t, p = true[keep].astype(np.float64), predicted[keep].astype(np.float64)
    assert results["mse"] == pytest.approx(np.mean((p - t) ** 2), rel=1e-5)
    assert results["mae"] == pytest.approx(np.mean(np.abs(p - t)), rel=1e-5)
    assert results["pearson"] == pytest.approx(stats.pearsonr(t, p).statistic, abs=1e-4)
    assert results["spearman"] == pytest.approx(stats.spearmanr(t, p).statistic, abs=1e-9)
    assert results["within_one"] == pytest.approx(np.mean(np.abs(p - t) <= 1))
    ties = np.array([3.0, 1.0, 2.0, 3.0, 2.0, 3.0])
    np.testing.assert_allclose(task_metrics.ranks(ties), stats.rankdata(ties))


def test_multilabel_metrics_match_numpy():
    rng = np.random.default_rng(2)
    names = ("action", "comedy", "drama")
    true = (rng.random((250, 3)) < 0.4).astype(np.float32)
    logits = (rng.normal(size=(250, 3)) + 2.0 * (2 * true - 1)).astype(np.float32)
    weights = (rng.random(250) > 0.1).astype(np.float32)
    results = run_metrics(make_task("multilabel", names, threshold=0.5), true, logits, weights)
    keep = weights > 0
    t, chosen = true[keep] > 0, 1 / (1 + np.exp(-logits[keep])) >= 0.5
    tp, fp, fn = (chosen & t).sum(0), (chosen & ~t).sum(0), (~chosen & t).sum(0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    assert results["macro_f1"] == pytest.approx(f1.mean())
    assert results["micro_f1"] == pytest.approx(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    for i, name in enumerate(names):
        positives, negatives = logits[keep][t[:, i], i], logits[keep][~t[:, i], i]
        pairs = positives[:, None] - negatives[None, :]
        exact = np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0)
        assert results["per_label"][name]["auc"] == pytest.approx(exact, abs=0.02)
        assert results["per_label"][name]["f1"] == pytest.approx(f1[i])


# ----- TFDS by name, offline -----


def test_tfds_pair_and_topic_datasets_are_read_by_their_feature_table(tmp_path):
    config = experiment.default_config()
    config.data.source = "tfds"
    with tfds.testing.mock_data(num_examples=20):
        config.data.tfds_name = "glue/mrpc"
        splits = sources.load_splits(experiment.parse(config).data, seed=0, tfds_data_dir=str(tmp_path))
        assert splits.train.text_pairs is not None and len(splits.test) == 20
        assert set(splits.train.labels) <= {"equivalent", "not_equivalent"}
        config.data.tfds_name = "ag_news_subset"
        splits = sources.load_splits(experiment.parse(config).data, seed=0, tfds_data_dir=str(tmp_path))
        assert splits.train.text_pairs is None
        assert set(splits.train.labels) <= {"World", "Sports", "Business", "Sci/Tech"}


# ----- every task type end to end: train under MirroredStrategy, export, serve without the project -----


def write_multilabel(path, count: int = 120):
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(count):
            words, tags = [rng.choice(NEUTRAL_WORDS) for _ in range(6)], []
            if rng.random() < 0.5:
                tags.append("praise")
                words += rng.sample(POSITIVE_WORDS, 2)
            if rng.random() < 0.5:
                tags.append("complaint")
                words += rng.sample(NEGATIVE_WORDS, 2)
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": tags}) + "\n")


def write_pairs(path, count: int = 120):
    rng = random.Random(1)
    with open(path, "w") as f:
        f.write("first,second,label\n")
        for _ in range(count):
            same = rng.random() < 0.5
            a_positive = rng.random() < 0.5
            b_positive = a_positive == same
            a = " ".join(rng.sample(POSITIVE_WORDS if a_positive else NEGATIVE_WORDS, 3))
            b = " ".join(rng.sample(POSITIVE_WORDS if b_positive else NEGATIVE_WORDS, 3))
            f.write(f"{a},{b},{'same' if same else 'different'}\n")


TEXTS = ["A wonderful, moving film.", "Dull, boring and awful.", "the plot"]
PAIRS = ["great fun", "awful mess", "good"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multiclass", "regression", "multilabel", "pair"])
def test_each_task_type_trains_exports_and_serves_the_same_outputs(kind, tmp_path, vocab_path, imdb_dir):
    data, flags, pairs = imdb_dir, [f"--config.task.type={kind}"], None
    if kind in ("multiclass", "regression"):
        flags += ["--config.data.label_source=rating"]
    if kind == "multilabel":
        data = tmp_path / "tags.jsonl"
        write_multilabel(data)
    if kind == "pair":
        data, pairs = tmp_path / "pairs.csv", PAIRS
        write_pairs(data)
        flags = [
            "--config.task.type=binary",
            "--config.data.text_column=first",
            "--config.data.text_pair_column=second",
        ]
    model_dir = tmp_path / "run"
    common = (
        "--strategy=mirrored",
        "--num_cpu_devices=2",
        "--config.train.steps=10",
        "--config.model.pooling=cls_mean",
    )
    check_ok(run_trainer(model_dir, vocab_path, data, *common, *flags))
    metrics = json.loads((model_dir / "metrics.json").read_text())["validation"]
    recorded = json.loads((model_dir / "config.json").read_text())["task"]["labels"]
    export = model_dir / "export" / "10"
    if kind == "multiclass":
        assert recorded == ["1", "2", "3", "4", "7", "8", "9", "10"] and "macro_f1" in metrics
    if kind == "regression":
        assert recorded == [] and {"mse", "spearman", "within_one"} <= set(metrics)
    if kind in ("multiclass", "multilabel", "pair"):
        assert (export / "assets" / "labels.txt").read_text().split() == recorded
    served = serve_outputs_in_fresh_process(export, TEXTS, tmp_path, pairs)
    here = in_process_outputs(model_dir, TEXTS, pairs)
    assert set(served) == set(here)
    for name, values in here.items():
        if values.dtype.kind in "OSU":
            assert served[name] == [v.decode() for v in values.tolist()], name
        else:
            np.testing.assert_allclose(np.array(served[name]), values, atol=1e-5, err_msg=name)
    if kind == "pair":
        one_text = run_trainer(model_dir, vocab_path, data, "--mode=predict", "--text=great fun", *flags)
        check_refused(one_text, r"this model takes text pairs")
        both = check_ok(
            run_trainer(model_dir, vocab_path, data, "--mode=predict", "--text=great fun\tawful mess", *flags)
        )
        assert both.stdout.split("\t")[0] in ("same", "different")
        serve = tf.saved_model.load(str(export)).signatures["serving_default"]
        with pytest.raises(tf.errors.InvalidArgumentError, match="this model takes text pairs"):
            serve(text=tf.constant(["a", "b"]), text_pair=tf.constant(["c"]))
    if kind == "multiclass":
        # The labels survive a resume; another vocabulary for the same model_dir is refused untouched.
        check_ok(run_trainer(model_dir, vocab_path, data, *common, *flags, "--config.train.steps=12"))
        assert json.loads((model_dir / "config.json").read_text())["task"]["labels"] == recorded
        before = snapshot(model_dir)
        reordered = "--config.task.labels=('10', '9', '8', '7', '4', '3', '2', '1')"
        refused = run_trainer(model_dir, vocab_path, data, *common, *flags, "--config.train.steps=14", reordered)
        check_refused(refused, r"was trained with the labels \['1', '2'.*but this run has \['10', '9'")
        assert snapshot(model_dir) == before


# ----- bad input: one line, exit 2, nothing written -----

PAIR_COLUMNS = ("--config.data.text_column=first", "--config.data.text_pair_column=second")


@pytest.mark.slow
def test_bad_labels_and_pairs_are_refused_naming_file_and_line(tmp_path, vocab_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(json.dumps({"text": f"good film {i}", "label": i % 2 or "sports"}) + "\n" for i in range(20))
    )
    pairs = tmp_path / "pairs.csv"
    write_pairs(pairs, 40)
    cases = [
        (
            mixed,
            ["--config.task.type=multiclass"],
            r"mixed\.jsonl:\d+: label '(1|sports)' is a (number|word), but .*mixed\.jsonl:\d+ has a (word|number)",
        ),
        (
            pairs,
            ["--config.task.type=multiclass", "--config.task.num_classes=3", *PAIR_COLUMNS],
            r"--config.task.num_classes=3, but the training data have 2 labels",
        ),
        (
            pairs,
            ["--config.task.type=multiclass", "--config.task.labels=('same', 'different', 'other')", *PAIR_COLUMNS],
            r"--config.task.labels: \['other'\] have no training example",
        ),
        (
            pairs,
            ["--config.data.text_column=first", "--config.data.text_pair_column=hypothesis"],
            r"missing column\(s\) \['hypothesis'\]",
        ),
    ]
    for data, flags, message in cases:
        model_dir = tmp_path / "run"
        model_dir.mkdir(exist_ok=True)
        check_refused(run_trainer(model_dir, vocab_path, data, "--strategy=default", *flags), message)
        assert list(model_dir.iterdir()) == []
        shutil.rmtree(model_dir)
