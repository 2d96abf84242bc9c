"""experiments.report and experiments.compare end to end: PNG figures, report.md, frozen vs fine-tuned."""

import json
import re
import shutil
import struct
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from configs import minilm_imdb_frozen
from experiments import compare, report

from conftest import REPO, SMOKE_CONFIG, check_ok, read_scalars, subprocess_env

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
        [sys.executable, "-m", module, *flags],
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


def check_report(output_dir, runs: dict[str, object]) -> str:
    """Every figure of every run is a PNG of its fixed size; the table equals each metrics.json."""
    markdown = (output_dir / "report.md").read_text()
    rows = metrics_rows(markdown)
    for name, run_dir in runs.items():
        for figure in ("curves.png", "confusion_matrix.png", "roc_curve.png"):
            assert png_size(output_dir / name / figure) == report.pixel_size(figure)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        for split in ("validation", "test"):
            row = rows.pop((name, split))
            assert int(row["step"]) == metrics["step"]
            for key, heading in report.TABLE_COLUMNS:
                if key == "num_examples":
                    assert int(row[heading]) == metrics[split][key]
                else:  # Printed with 4 decimals.
                    assert float(row[heading]) == pytest.approx(metrics[split][key], abs=5e-5), (name, split, key)
    assert not rows, f"unexpected rows {list(rows)}"
    # Links are relative and point at the files written.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 3 * len(runs) + (len(runs) > 1)
    for link in links:
        assert not link.startswith("/") and (output_dir / link).is_file(), link
    return markdown


def test_report_of_a_mirrored_run(trained_run, tmp_path):
    output_dir = tmp_path / "report"
    flags = (f"--runs={trained_run.model_dir}", "--names=mirrored", f"--output_dir={output_dir}")
    process = check_ok(run_module("experiments.report", *flags))
    assert "Wrote" in process.stderr
    markdown = check_report(output_dir, {"mirrored": trained_run.model_dir})
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
