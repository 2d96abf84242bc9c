"""experiments.report and experiments.compare end to end: PNG figures, report.md, frozen vs fine-tuned."""

import json
import re
import shutil
import struct
import subprocess
import zlib

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from configs import minilm_imdb_frozen
from experiments import compare, report

from conftest import PYTHON, REPO, SMOKE_CONFIG, check_ok, read_scalars, subprocess_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, which must come first; the whole image must decode."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert header[12:16] == b"IHDR", f"{path} has no IHDR chunk first"
    width, height = struct.unpack(">II", header[16:24])
    pixels = matplotlib.image.imread(path)  # Checks every chunk's CRC and the compressed data.
    assert pixels.shape[:2] == (height, width) and np.ptp(pixels) > 0, f"{path} is blank or does not decode"
    return width, height


def run_module(module: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PYTHON, "-m", module, *flags],
        env=subprocess_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def metrics_rows(markdown: str) -> dict[tuple[str, str], dict[str, str]]:
    """The final metrics table of report.md: {(run, split): {heading: cell}}."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| run | split |"))
    headings = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(headings, (cell.strip() for cell in line.strip("|").split("|"))))
        rows[(cells["run"], cells["split"])] = cells
    return rows


def markdown_headings(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("| run | split |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


BINARY_FIGURES = ("curves.png", "confusion_matrix.png", "roc_curve.png")


def check_table(rows: dict, name: str, metrics: dict) -> None:
    """The (name, split) rows equal metrics.json: a column for every number it has, "n/a" where it has none."""
    for split in ("validation", "test"):
        if split not in metrics:
            continue
        row = rows.pop((name, split))
        assert int(row["step"]) == metrics["step"]
        for key, heading in report.TABLE_COLUMNS:
            value = metrics[split].get(key)
            if heading not in row:
                assert value is None, (name, split, key, "has a value but no column")
            elif value is None:
                assert row[heading] == "n/a", (name, split, key)
            elif key == "num_examples":
                assert int(row[heading]) == value
            else:  # Printed with 4 decimals.
                assert float(row[heading]) == pytest.approx(value, abs=5e-5), (name, split, key)


def check_report(output_dir, runs: dict[str, object], figures: dict[str, dict] | None = None) -> str:
    """Every figure of every run is a PNG of its documented size; the table equals each metrics.json.

    `figures`: {run name: {figure file: (width, height)}}; the binary figures at their fixed sizes by default.
    """
    markdown = (output_dir / "report.md").read_text()
    rows = metrics_rows(markdown)
    if figures is None:
        figures = {name: {figure: report.pixel_size(figure) for figure in BINARY_FIGURES} for name in runs}
    for name, run_dir in runs.items():
        for figure, size in figures[name].items():
            assert png_size(output_dir / name / figure) == size, (name, figure)
        check_table(rows, name, json.loads((run_dir / "metrics.json").read_text()))
    assert not rows, f"unexpected rows {list(rows)}"
    # Links are relative and point at the files written, and only at those.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    expected = {f"{name}/{figure}" for name, run_figures in figures.items() for figure in run_figures}
    assert set(links) == expected | ({"comparison.png"} if len(runs) > 1 else set())
    assert len(links) == len(set(links))
    for link in links:
        assert not link.startswith("/") and (output_dir / link).is_file(), link
    return markdown


def test_report_of_a_mirrored_run(trained_run, tmp_path):
    output_dir = tmp_path / "report"
    flags = (f"--runs={trained_run.model_dir}", "--names=mirrored", f"--output_dir={output_dir}")
    process = check_ok(run_module("experiments.report", *flags))
    assert "Wrote" in process.stderr
    markdown = check_report(output_dir, {"mirrored": trained_run.model_dir})
    headings = markdown_headings(markdown)
    for heading in ("accuracy", "F1", "ROC-AUC", "precision", "recall", "loss", "examples"):
        assert heading in headings
    assert not {"macro-F1", "micro-F1", "MAE", "Pearson"} & set(headings)
    assert "| `task.type` | `binary` |" in markdown
    assert not (output_dir / "comparison.png").exists()
    assert "| `model.encoder` | `bert` |" in markdown and "| `train.steps` | `60` |" in markdown
    assert "Confusion matrix and ROC curve on the test split" in markdown
    # The curves come from the same points TensorBoard shows.
    run = report.load_run(str(trained_run.model_dir), "mirrored")
    assert run.train["loss"] == read_scalars(trained_run.model_dir / "train")["loss"]
    assert sorted(run.validation["accuracy"]) == [30, 60] and sorted(run.test["accuracy"]) == [60]


def test_report_without_events_or_metrics_fails_with_the_path(trained_run, tmp_path):
    no_events = tmp_path / "no_events"
    no_events.mkdir()
    shutil.copy(trained_run.model_dir / "metrics.json", no_events)
    process = run_module("experiments.report", f"--runs={no_events}", f"--output_dir={tmp_path / 'out'}")
    assert process.returncode == 2, process.stderr[-2000:]
    assert f"{no_events} has no training events" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "out" / "report.md").exists()

    no_metrics = tmp_path / "no_metrics"
    shutil.copytree(trained_run.model_dir / "train", no_metrics / "train")
    with pytest.raises(report.ReportError, match=f"{no_metrics} has no metrics.json"):
        report.load_run(str(no_metrics), "x")
    with pytest.raises(report.ReportError, match="share a basename"):
        report.run_names(["a/run", "b/run"], None)


def encoder_weights(model_dir, step: int) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{step}"))
    names = [name for name in reader.get_variable_to_shape_map() if name.startswith("model/encoder/")]
    assert names
    return {name: reader.get_tensor(name) for name in names}


@pytest.mark.slow
def test_compare_trains_frozen_and_finetuned_from_the_same_weights(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "frozen_vs_finetuned"
    flags = (
        f"--model_dir={model_dir}",
        f"--config={SMOKE_CONFIG}",
        f"--config.model.vocab_path={vocab_path}",
        f"--config.data.path={imdb_dir}",
        "--config.train.steps=10",
        "--config.train.eval_every_steps=5",
        # Keeps the step-0 checkpoint for the weight comparison.
        "--config.train.keep_checkpoints=5",
        "--strategy=one_device",
        "--frozen_config.model.head_hidden_size=16",
    )
    log = check_ok(run_module("experiments.compare", *flags)).stderr
    assert "[frozen] Model: bert encoder (frozen)" in log
    assert re.search(r"Frozen vs fine-tuned on the test split: frozen accuracy \d\.\d{4} .* finetuned accuracy", log)
    runs = {name: model_dir / name for name in compare.RUNS}
    check_report(model_dir / "report", runs)
    assert png_size(model_dir / "report" / "comparison.png") == report.pixel_size("comparison.png")

    configs = {name: json.loads((run_dir / "config.json").read_text()) for name, run_dir in runs.items()}
    assert configs["frozen"]["model"]["freeze_encoder"] and not configs["finetuned"]["model"]["freeze_encoder"]
    assert configs["frozen"]["model"]["head_hidden_size"] == 16
    assert configs["finetuned"]["model"]["head_hidden_size"] == 0
    assert configs["frozen"]["train"]["learning_rate"] == minilm_imdb_frozen.get_config().train.learning_rate
    assert configs["finetuned"]["train"]["learning_rate"] == 3e-3  # configs/smoke.py
    for config in configs.values():
        del config["model"]["freeze_encoder"], config["model"]["head_hidden_size"], config["train"]["learning_rate"]
    assert configs["frozen"] == configs["finetuned"]

    start = {name: encoder_weights(run_dir, 0) for name, run_dir in runs.items()}
    end = {name: encoder_weights(run_dir, 10) for name, run_dir in runs.items()}
    assert start["frozen"].keys() == start["finetuned"].keys()
    for name, value in start["frozen"].items():
        np.testing.assert_array_equal(value, start["finetuned"][name], err_msg=f"{name} starts differently")
        np.testing.assert_array_equal(value, end["frozen"][name], err_msg=f"frozen {name} changed")
    changed = [name for name, value in start["finetuned"].items() if not np.array_equal(value, end["finetuned"][name])]
    assert len(changed) > len(start["finetuned"]) // 2, changed

    # The same command again: nothing is retrained, the report is rewritten.
    (model_dir / "report" / "report.md").unlink()
    again = check_ok(run_module("experiments.compare", *flags)).stderr
    assert again.count("finished before with the same flags: not run again") == 2
    assert "Starting the" not in again
    assert (model_dir / "report" / "report.md").exists()


def test_compare_flags_pass_through_except_those_it_sets():
    pass_through = ["--config=c.py", "--config.train.learning_rate", "0.1", "--config.model.head_hidden_size=4", "-v=1"]
    frozen = compare.run_flags("frozen", pass_through, "m", 32, 1e-3)
    assert frozen == [
        "--config=c.py",
        "-v=1",
        "--model_dir=m/frozen",
        "--config.model.freeze_encoder=true",
        "--config.model.head_hidden_size=32",
        "--config.train.learning_rate=0.001",
    ]
    finetuned = compare.run_flags("finetuned", pass_through, "m", 32, 1e-3)
    assert finetuned == [*pass_through, "--model_dir=m/finetuned", "--config.model.freeze_encoder=false"]
    assert compare.flag_value(["--task_index", "1", "--task_index=0"], "task_index") == "0"
    for refused in ("--mode=train", "--config.model.freeze_encoder", "--noconfig.model.freeze_encoder"):
        with pytest.raises(compare.CompareError, match="sets --"):
            compare.check_pass_through([refused])


# ----- every task type, from run directories written by hand (no training) -----

STEPS_PER_EPOCH, FINAL_STEP = 20, 40


def write_events(log_dir, scalars: dict[str, dict[int, float]]) -> None:
    """TensorBoard scalar events in `log_dir`, as trainer.main's summary writers leave them."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for tag, points in scalars.items():
            for step, value in points.items():
                tf.summary.scalar(tag, value, step=step)
    writer.flush()
    writer.close()


def floats(results: dict) -> dict[str, float]:
    return {key: value for key, value in results.items() if isinstance(value, float)}


def write_run(
    path, task_type: str, labels: list[str], splits: dict[str, dict], train_tags: tuple[str, ...], config=None
) -> object:
    """A finished run directory: config.json, metrics.json and the train/, eval/ and eval_test/ events."""
    path.mkdir(parents=True)
    if config is None:
        config = {
            "task": {"type": task_type, "labels": labels, "threshold": 0.5},
            "model": {"encoder": "bert", "pooling": "mean", "freeze_encoder": False},
            "data": {"source": "csv", "path": "data.csv", "text_pair_column": "hypothesis", "seq_length": 64},
            "train": {"batch_size": 8, "steps": FINAL_STEP, "learning_rate": 3e-4},
            "seed": 7,
        }
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    metrics = {**splits, "step": FINAL_STEP, "steps_per_epoch": STEPS_PER_EPOCH, "examples_trained": 8 * FINAL_STEP}
    # trainer/run_dir.py writes sorted keys, so per-class and per-label results come in name order.
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    train = {
        tag: {step: float(rng.uniform(0.2, 0.9)) for step in range(5, FINAL_STEP + 1, 5)}
        for tag in ("loss", *train_tags, "learning_rate", "examples_per_second")
    }
    train["epoch"] = {step: step / STEPS_PER_EPOCH for step in range(5, FINAL_STEP + 1, 5)}
    write_events(path / "train", train)
    validation = floats(splits["validation"])
    # An earlier evaluation, then the final one whose numbers metrics.json holds.
    write_events(
        path / "eval",
        {tag: {STEPS_PER_EPOCH: value * 0.9, FINAL_STEP: value} for tag, value in validation.items()},
    )
    if "test" in splits:
        write_events(path / "eval_test", {tag: {FINAL_STEP: value} for tag, value in floats(splits["test"]).items()})
    return path


def multiclass_results(names: list[str], counts: np.ndarray, loss: float) -> dict:
    """What MulticlassClassificationTask.aggregate gives for these confusion counts (rows true)."""
    true_positives = np.diag(counts).astype(float)
    precision = true_positives / np.maximum(counts.sum(axis=0), 1)
    recall = true_positives / np.maximum(counts.sum(axis=1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    results = {
        "loss": loss,
        "accuracy": float(true_positives.sum() / counts.sum()),
        "macro_f1": float(f1.mean()),
        "num_examples": int(counts.sum()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": float(counts[i].sum()),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": {"labels": names, "counts": counts.astype(int).tolist()},
    }
    if all(name.isdigit() for name in names):
        values = np.array([float(name) for name in names])
        distance = np.abs(values[:, None] - values[None, :])
        results["mae"] = float((counts * distance).sum() / counts.sum())
        results["within_one"] = float(counts[distance <= 1].sum() / counts.sum())
    return results


def regression_results(seed: int, count: int = 300) -> dict:
    rng = np.random.default_rng(seed)
    true = rng.uniform(1, 10, count)
    predicted = true + rng.normal(0, 1.2, count)
    return {
        "loss": float(np.mean((true - predicted) ** 2) / 4),
        "mae": float(np.mean(np.abs(true - predicted))),
        "mse": float(np.mean((true - predicted) ** 2)),
        "pearson": float(np.corrcoef(true, predicted)[0, 1]),
        "spearman": float(np.corrcoef(np.argsort(np.argsort(true)), np.argsort(np.argsort(predicted)))[0, 1]),
        "within_one": float(np.mean(np.abs(true - predicted) <= 1)),
        "num_examples": count,
        "scatter": {"true": true.tolist(), "predicted": predicted.tolist()},
    }


def multilabel_results(names: list[str], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    per_label = {
        name: {
            "precision": float(rng.uniform(0.3, 0.9)),
            "recall": float(rng.uniform(0.3, 0.9)),
            "f1": float(rng.uniform(0.3, 0.9)),
            "auc": float(rng.uniform(0.6, 0.95)),
            "support": float(rng.integers(5, 50)),
        }
        for name in names
    }
    return {
        "loss": float(rng.uniform(1, 2)),
        "micro_f1": float(rng.uniform(0.4, 0.8)),
        "macro_f1": float(np.mean([values["f1"] for values in per_label.values()])),
        "auc": float(np.mean([values["auc"] for values in per_label.values()])),
        "num_examples": 120,
        "per_label": per_label,
    }


STARS = ["1", "2", "3", "4", "5"]
# Output order, not sorted: the figures and tables must follow it.
GENRES = ["drama", "comedy", "action", "horror", "science fiction and fantasy"]


@pytest.fixture
def typed_runs(tmp_path) -> dict[str, object]:
    """One hand-written run of each non-binary task type."""
    rng = np.random.default_rng(0)
    stars = np.diag([30, 25, 20, 25, 30]) + rng.integers(0, 6, (5, 5))
    return {
        "multiclass": write_run(
            tmp_path / "runs" / "multiclass",
            "multiclass",
            STARS,
            {
                "validation": multiclass_results(STARS, stars, 0.9),
                "test": multiclass_results(STARS, stars + np.eye(5, dtype=int), 0.95),
            },
            ("accuracy",),
        ),
        "regression": write_run(
            tmp_path / "runs" / "regression",
            "regression",
            [],
            {"validation": regression_results(1), "test": regression_results(2)},
            ("mae", "pearson"),
        ),
        "multilabel": write_run(
            tmp_path / "runs" / "multilabel",
            "multilabel",
            GENRES,
            {"validation": multilabel_results(GENRES, 3), "test": multilabel_results(GENRES, 4)},
            ("micro_f1", "macro_f1"),
        ),
    }


def class_rows(markdown: str, run_name: str) -> list[list[str]]:
    """The per-class (per-label) table in run `run_name`'s section: its rows' cells, heading first."""
    section = markdown.split(f"## Run `{run_name}`")[1].split("## Run")[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("| class |", "| label |")))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return [table[0], *table[2:]]


EXPECTED_FIGURES = {
    "multiclass": {
        "curves.png": report.pixel_size("curves.png"),
        "confusion_matrix.png": report.pixel_size("confusion_matrix.png", len(STARS)),
    },
    "regression": {"curves.png": report.pixel_size("curves.png"), "scatter.png": report.pixel_size("scatter.png")},
    "multilabel": {"curves.png": report.pixel_size("curves.png"), "per_label.png": report.pixel_size("per_label.png")},
}


@pytest.mark.parametrize("task_type", ["multiclass", "regression", "multilabel"])
def test_report_of_each_task_type(typed_runs, tmp_path, task_type):
    run_dir = typed_runs[task_type]
    output_dir = tmp_path / "report"
    runs = report.load_runs([str(run_dir)])
    assert runs[0].task_type == task_type
    report.write_report(runs, str(output_dir))
    markdown = check_report(output_dir, {task_type: run_dir}, {task_type: EXPECTED_FIGURES[task_type]})
    assert not (output_dir / "comparison.png").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    headings = markdown_headings(markdown)
    # Columns in the documented order, only those the run has.
    order = [heading for _, heading in report.TABLE_COLUMNS]
    assert headings[3:] == sorted(headings[3:], key=order.index)
    assert "F1" not in headings and "precision" not in headings
    assert f"| `task.type` | `{task_type}` |" in markdown
    assert "| `model.pooling` | `mean` |" in markdown and "| `data.text_pair_column` | `hypothesis` |" in markdown
    main_metric = {"multiclass": "accuracy", "regression": "mae", "multilabel": "macro_f1"}[task_type]
    assert runs[0].main_metric() == main_metric
    if task_type == "multiclass":
        assert {"accuracy", "macro-F1", "MAE", "within ±1", "examples"} <= set(headings)
        table = class_rows(markdown, task_type)
        assert table[0] == ["class", "precision", "recall", "F1", "support"]
        assert [row[0] for row in table[1:]] == STARS
        for row in table[1:]:
            expected = metrics["test"]["per_class"][row[0]]
            assert float(row[3]) == pytest.approx(expected["f1"], abs=5e-5)
            assert int(row[4]) == expected["support"]
        assert "| `task.labels` | `1, 2, 3, 4, 5` |" in markdown
        assert "Confusion matrix on the test split:" in markdown
    elif task_type == "regression":
        assert {"MAE", "MSE", "Pearson", "Spearman", "within ±1", "loss"} <= set(headings)
        assert "accuracy" not in headings and "Per-" not in markdown
        assert "Predicted against true values on the test split:" in markdown
        assert "`task.labels`" not in markdown  # Empty for regression.
    else:
        assert {"micro-F1", "macro-F1", "ROC-AUC"} <= set(headings)
        table = class_rows(markdown, task_type)
        assert table[0] == ["label", "precision", "recall", "F1", "ROC-AUC", "support"]
        assert [row[0] for row in table[1:]] == GENRES  # Output order, though metrics.json sorts them.
        for row in table[1:]:
            assert float(row[4]) == pytest.approx(metrics["test"]["per_label"][row[0]]["auc"], abs=5e-5)
        assert "mean of the labels' AUCs" in markdown
        assert "Per-label F1 and ROC-AUC on the test split:" in markdown


def test_multiclass_confusion_matrix_grows_with_the_classes(tmp_path):
    # Many long names: colour-only cells, the documented size.
    names = [f"category number {index:02d} of many" for index in range(15)]
    counts = np.diag(np.full(15, 9)) + np.random.default_rng(5).integers(0, 3, (15, 15))
    results = multiclass_results(names, counts, 1.5)
    run_dir = write_run(tmp_path / "topics", "multiclass", names, {"validation": results}, ("accuracy",))
    output_dir = tmp_path / "report"
    report.write_report(report.load_runs([str(run_dir)]), str(output_dir))
    size = report.pixel_size("confusion_matrix.png", 15)
    assert size == (15 * 30 + 340, 15 * 30 + 260)
    markdown = check_report(
        output_dir,
        {"topics": run_dir},
        {"topics": {"curves.png": report.pixel_size("curves.png"), "confusion_matrix.png": size}},
    )
    assert [row[0] for row in class_rows(markdown, "topics")[1:]] == names
    # Shortened in the config table, all there in the per-class table.
    assert "… (15 labels)" in markdown
    assert "Confusion matrix on the validation split:" in markdown

    # The size rule: the binary size for two classes, bigger cells up to 12, a capped grid.
    assert report.pixel_size("confusion_matrix.png", 2) == report.pixel_size("confusion_matrix.png")
    assert report.pixel_size("confusion_matrix.png", 3) == (520, 450)
    assert report.pixel_size("confusion_matrix.png", 12) == (12 * 60 + 340, 12 * 60 + 260)
    assert report.pixel_size("confusion_matrix.png", 500) == (3000 + 340, 3000 + 260)


@pytest.mark.slow
def test_comparison_of_a_multiclass_and_a_regression_run(typed_runs, tmp_path):
    output_dir = tmp_path / "report"
    names = ["stars", "score"]
    runs = report.load_runs([str(typed_runs["multiclass"]), str(typed_runs["regression"])], names)
    report.write_report(runs, str(output_dir))
    markdown = check_report(
        output_dir,
        dict(zip(names, (typed_runs["multiclass"], typed_runs["regression"]))),
        dict(zip(names, (EXPECTED_FIGURES["multiclass"], EXPECTED_FIGURES["regression"]))),
    )
    assert png_size(output_dir / "comparison.png") == report.pixel_size("comparison.png")
    assert "Bars: each run's final main metric" in markdown
    rows = metrics_rows(markdown)
    assert rows[("score", "test")]["accuracy"] == "n/a" and rows[("stars", "test")]["MSE"] == "n/a"


def test_report_of_a_binary_run_from_before_task_types(tmp_path):
    """A config.json without a task section and binary metrics: reported as binary, figures and all."""
    results = {
        "loss": 0.5,
        "accuracy": 0.8,
        "auc": 0.85,
        "precision": 0.75,
        "recall": 0.9,
        "f1": 0.818,
        "num_examples": 40,
        "confusion_matrix": {"true_positives": 18, "false_positives": 6, "true_negatives": 14, "false_negatives": 2},
        "roc_curve": {"threshold": [1.0, 0.5, 0.0], "fpr": [0.0, 0.3, 1.0], "tpr": [0.0, 0.9, 1.0]},
    }
    config = {"model": {"encoder": "bert"}, "train": {"steps": FINAL_STEP}, "seed": 1}
    run_dir = write_run(tmp_path / "old", "binary", [], {"validation": results}, ("accuracy", "auc"), config)
    output_dir = tmp_path / "report"
    runs = report.load_runs([str(run_dir)])
    assert runs[0].task_type == "binary" and runs[0].main_metric() == "accuracy"
    report.write_report(runs, str(output_dir))
    markdown = check_report(output_dir, {"old": run_dir})
    assert "| `task.type` | `binary (config.json from before task types)` |" in markdown
    assert "Confusion matrix and ROC curve on the validation split:" in markdown
    # Without config.json, the type comes from metrics.json.
    for task_type, kind in (("multiclass", "per_class"), ("multilabel", "per_label"), ("regression", "scatter")):
        assert report.infer_task_type({"validation": {kind: {}}}) == task_type
    assert report.infer_task_type({"test": results}) == "binary"


def hand_run(name: str, task_type: str | None, **splits: dict) -> report.Run:
    config = {"task": {"type": task_type}} if task_type else {"model": {"encoder": "bert"}}
    return report.Run(name, f"runs/{name}", {**splits, "step": 10}, config, {}, {}, {})


def test_compare_summary_line_of_each_task_type():
    def line(task_type, frozen: dict, finetuned: dict, split: str = "test") -> str:
        return compare._summary_line(
            {
                "frozen": hand_run("frozen", task_type, **{split: frozen}),
                "finetuned": hand_run("finetuned", task_type, **{"validation": finetuned, split: finetuned}),
            }
        )

    binary = line("binary", {"accuracy": 0.7, "auc": 0.8}, {"accuracy": 0.85, "auc": 0.9})
    assert binary == (
        "Frozen vs fine-tuned on the test split: frozen accuracy 0.7000 (ROC-AUC 0.8000), "
        "finetuned accuracy 0.8500 (ROC-AUC 0.9000); fine-tuning +15.00 points."
    )
    # A config.json from before task types is binary.
    assert line(None, {"accuracy": 0.7, "auc": 0.8}, {"accuracy": 0.85, "auc": 0.9}) == binary
    assert line("multiclass", {"accuracy": 0.5, "macro_f1": 0.4}, {"accuracy": 0.45, "macro_f1": 0.42}) == (
        "Frozen vs fine-tuned on the test split: frozen accuracy 0.5000 (macro-F1 0.4000), "
        "finetuned accuracy 0.4500 (macro-F1 0.4200); fine-tuning -5.00 points of accuracy (higher is better)."
    )
    assert line("multilabel", {"micro_f1": 0.6, "macro_f1": 0.5}, {"micro_f1": 0.7, "macro_f1": 0.55}).endswith(
        "finetuned micro-F1 0.7000 (macro-F1 0.5500); fine-tuning +10.00 points of micro-F1 (higher is better)."
    )
    # Lower is better: a negative change is an improvement. Validation when a run has no test split.
    regression = line("regression", {"mae": 0.9, "pearson": 0.5}, {"mae": 0.78, "pearson": 0.7}, "validation")
    assert regression == (
        "Frozen vs fine-tuned on the validation split: frozen MAE 0.9000 (Pearson 0.5000), "
        "finetuned MAE 0.7800 (Pearson 0.7000); fine-tuning -0.1200 MAE (lower is better)."
    )
    assert "no change to report" in line("regression", {"pearson": 0.5}, {"mae": 0.7})
