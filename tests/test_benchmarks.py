"""The benchmark suite's machinery (benchmarks/): fast checks only, no peer install, no long runs."""

import json
import pathlib
import random
import subprocess
import sys

import pytest

from conftest import REPO, make_review, subprocess_env

BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_common  # noqa: E402
import bench_report  # noqa: E402

# A random BERT small enough that every measurement takes seconds.
TINY_MODEL = (
    "model.pretrained_dir=",
    "model.bert.hidden_size=16",
    "model.bert.num_layers=1",
    "model.bert.num_heads=2",
    "model.bert.intermediate_size=32",
)


def _write_reviews(path: pathlib.Path, count: int = 192) -> pathlib.Path:
    rng = random.Random(0)
    # Lengths on both sides of the 16-token bucket, so that a bucketed run sees two lengths.
    reviews = [
        {"id": str(i), "text": make_review(rng, i % 2 == 0, length=rng.randint(3, 40)), "label": int(i % 2 == 0)}
        for i in range(count)
    ]
    bench_common.write_jsonl(str(path), reviews)
    return path


def _run(script: str, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or subprocess_env(),
        timeout=timeout,
    )


@pytest.mark.slow
def test_trainer_bench_quick_emits_one_record_per_measurement(tmp_path, vocab_path):
    reviews = _write_reviews(tmp_path / "reviews.jsonl")
    process = _run(
        "trainer_bench.py",
        "--measure=all",
        "--quick",
        "--modes=fp32",
        "--inference_precisions=fp32",
        "--seq_lengths=32",
        f"--reviews={reviews}",
        f"--logs_dir={tmp_path / 'logs'}",
        f"--override=model.vocab_path={vocab_path}",
        *(f"--override={o}" for o in TINY_MODEL),
    )
    assert process.returncode == 0, process.stderr[-3000:]
    records = [json.loads(line) for line in process.stdout.splitlines()]
    assert [(r["kind"], r.get("num_buckets")) for r in records] == [
        ("train", 1),
        ("train", 2),
        ("pipeline", 1),
        ("inference", None),
    ]
    for record in records:
        assert "error" not in record, record["error"]
        assert record["side"] == "trainer" and record["seq_length"] == 32
        assert record["headline"] > 0 and record["peak_rss_mb"] > 0
        assert record["unit"] == ("examples/s" if record["kind"] == "train" else "reviews/s")
    fixed, bucketed, pipeline, inference = records
    # Quick mode: 2 warm-up steps, then 3 timed steps; every logged step has a positive rate.
    assert fixed["timed_steps"] == 3 and fixed["warmup_steps"] == [1, 2]
    assert fixed["headline"] == fixed["median"] and fixed["compile_steps_logged"] == [1]
    assert all(rate > 0 for rate in fixed["step_rates"].values()) and len(fixed["step_rates"]) == 5
    # Bucketed: lengths 16 and 32, each compiled once and left out of the timing.
    assert bucketed["buckets"] == [16, 32]
    assert set(bucketed["compile_steps_logged"]) <= set(bucketed["warmup_steps"])
    assert bucketed["timed_steps"] >= 4
    assert bucketed["headline"] in (bucketed.get("epoch_mix"), bucketed["mean"])
    assert pipeline["mode"] == "tokenize+batch" and len(pipeline["pass_rates"]) == 1
    assert inference["mode"] == "fp32" and inference["timed_calls"] == 2 and inference["batch_size"] == 32
    # Each measurement left its log.
    assert len(list((tmp_path / "logs").glob("*.log"))) == 4


def _record(side, kind, mode, seq, headline, **extra) -> dict:
    unit = "examples/s" if kind == "train" else "reviews/s"
    return {
        "side": side,
        "kind": kind,
        "mode": mode,
        "seq_length": seq,
        "headline": headline,
        "unit": unit,
        "batch_size": 32,
        "peak_rss_mb": 1000.0,
        **extra,
    }


CANNED = [
    _record("trainer", "train", "fp32", 128, 13.0, num_buckets=1, median=13.0, mean=12.8),
    _record("trainer", "train", "bf16_xla", 128, 26.0, num_buckets=1, median=26.0, mean=25.0),
    _record("peer", "train", "fp32", 128, 6.6, num_buckets=None, median=6.6, mean_padded_length=128.0),
    _record("peer", "train", "bf16", 128, 16.0, num_buckets=None, median=16.0, mean_padded_length=128.0),
    # At 512 the fixed-length run is faster here on purpose: the target counts only bucketed runs.
    _record("trainer", "train", "bf16", 512, 12.0, num_buckets=1, median=12.0),
    _record("trainer", "train", "bf16_xla", 512, 10.0, num_buckets=4, buckets=[128, 256, 384, 512], epoch_mix=10.0),
    {"side": "trainer", "kind": "train", "mode": "fp32", "seq_length": 512, "num_buckets": 4, "error": "exit 1: OOM"},
    _record("peer", "train", "bf16", 512, 4.0, num_buckets=None, median=4.0, mean_padded_length=505.0),
    _record("trainer", "pipeline", "tokenize+batch", 128, 600.0, num_buckets=1),
    _record("trainer", "inference", "fp32", 128, 60.0),
    _record("peer", "inference", "fp32", 128, 30.0),
    _record("peer", "inference", "bf16", 128, 50.0),
]


def test_targets_compare_against_the_peers_best_mode():
    targets = {t.name: t for t in bench_report.evaluate_targets(CANNED)}
    assert list(targets) == [
        "training, seq_length 128",
        "training, seq_length 512, bucketing on real IMDb lengths",
        "input pipeline vs training, seq_length 128",
        "inference, seq_length 128",
    ]
    train_128 = targets["training, seq_length 128"]
    assert train_128.ratio == pytest.approx(26.0 / 16.0) and train_128.status == "met"
    # Only the bucketed run counts at 512, and the failed one is ignored.
    train_512 = targets["training, seq_length 512, bucketing on real IMDb lengths"]
    assert train_512.ratio == pytest.approx(10.0 / 4.0) and train_512.required == 2.0
    assert "buckets 128/256/384/512" in train_512.detail
    pipeline = targets["input pipeline vs training, seq_length 128"]
    assert pipeline.ratio == pytest.approx(600.0 / 26.0) and pipeline.status == "met"
    inference = targets["inference, seq_length 128"]
    assert inference.ratio == pytest.approx(60.0 / 50.0) and inference.status == "NOT met"


def test_a_missing_side_is_not_measured_rather_than_met():
    only_trainer = [r for r in CANNED if r["side"] == "trainer"]
    targets = {t.name: t for t in bench_report.evaluate_targets(only_trainer)}
    assert targets["training, seq_length 128"].status == "not measured"
    assert targets["training, seq_length 128"].ratio is None
    assert targets["input pipeline vs training, seq_length 128"].status == "met"


def test_report_tables():
    report = bench_report.format_report(CANNED, "Speed benchmark", {"machine": "2 CPUs"})
    lines = report.splitlines()
    assert lines[0] == "## Speed benchmark" and "- machine: 2 CPUs" in lines
    for heading in (
        "### Training, seq_length 128, batch 32 (examples/s)",
        "### Training, seq_length 512, batch 32 (examples/s)",
        "### Input pipeline alone (tokenize + batch, reviews/s)",
        "### Inference (raw strings in, tokenization included, reviews/s)",
        "### Targets",
    ):
        assert heading in lines
    row = next(line for line in lines if line.startswith("| trainer | bf16 + XLA | fixed 128 |"))
    assert row.endswith("| 1.62x |") and "**26.0**" in row
    peer_row = next(line for line in lines if line.startswith("| peer | bf16 autocast | longest in batch (mean 505)"))
    assert peer_row.endswith("| 1.00x |")
    failed = next(line for line in lines if "failed: exit 1: OOM" in line)
    # A failed row keeps the table's 9 columns.
    assert failed.count("|") == 10
    assert "| 128 | 600.0 | 26.0 | 23.08x | 1000 |" in lines
    assert "| 128 | trainer | exported SavedModel, fp32 | 32 | 60.0 | 1000 | 1.20x |" in lines
    assert any(line.startswith("| inference, seq_length 128 | >= 1.5x | 1.20x | **NOT met** |") for line in lines)
    assert any(line.startswith("| training, seq_length 128 | >= 1.5x | 1.62x | **met** |") for line in lines)


def test_rate_summary_weighs_steps_by_time():
    summary = bench_common.rate_summary([32, 32, 32], [1.0, 1.0, 4.0])
    assert summary["median"] == 32.0 and summary["min"] == 8.0 and summary["max"] == 32.0
    # All examples / all time, not the mean of the rates (24).
    assert summary["mean"] == pytest.approx(96 / 6)


@pytest.mark.slow
def test_iterator_teardown_times_every_build_of_a_distributed_iterator():
    process = _run("iterator_teardown.py", "--lifetimes=1", "--repeats=2", "--read_interval=0.1", timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    header = "| iterator lifetime | TensorFlow defaults | autotuning off | host memory | both |"
    assert header in process.stderr
    row = next(line for line in process.stderr.splitlines() if line.startswith("| 1 s |"))
    # Two measurements for each build: "a, b s".
    assert [len(cell.split(", ")) for cell in row.strip("| ").split(" | ")[1:]] == [2, 2, 2, 2]


def test_gpu_scaling_table():
    records = [
        {"mode": "bf16_xla", "seq_length": 128, "gpus": g, "batch_size": 32 * g, "headline": h, "peak_rss_mb": 900.0}
        for g, h in ((1, 400.0), (2, 760.0), (4, 1400.0))
    ]
    records.append({"mode": "bf16_xla", "seq_length": 128, "gpus": 8, "error": "timed out | after 3600 s"})
    table = bench_report.format_scaling(records).splitlines()
    assert table[2] == "| bf16_xla | 128 | 1 | 32 | 400.0 | 400.0 | 100% | 900 |"
    assert table[3] == "| bf16_xla | 128 | 2 | 64 | 760.0 | 380.0 | 95% | 900 |"
    assert table[4] == "| bf16_xla | 128 | 4 | 128 | 1400.0 | 350.0 | 88% | 900 |"
    assert table[5].startswith("| bf16_xla | 128 | 8 | failed: timed out \\| after 3600 s |")


def test_gpu_scaling_sets_the_best_1_gpu_rate_beside_the_h200_reference():
    records = [
        {"mode": mode, "seq_length": 128, "gpus": gpus, "batch_size": 256 * gpus, "headline": rate}
        for mode, gpus, rate in (("fp16", 1, 6000.0), ("bf16_xla", 1, 8667.0), ("bf16_xla", 2, 16000.0))
    ]
    records.append({"mode": "fp16_xla", "seq_length": 128, "gpus": 1, "batch_size": 256, "error": "out of memory"})
    table = bench_report.format_peer_reference(records, "MiniLM-L6-H384").splitlines()
    assert table[2] == "| MiniLM-L6-H384 | 128 | 256 | 13245.0 | 17334.0 | 8667.0 (bf16_xla) | 0.50x |"
    assert table[3] == "| BERT-base | 128 | 256 | 4101.0 | 5154.0 | not run | - |"
    assert table[5] == "| BERT-large | 128 | 256 | 1459.0 | - | not run | - |"
    # The same rates labelled as another model match none of the MiniLM row.
    assert "not run" in bench_report.format_peer_reference(records, "BERT-base").splitlines()[2]


@pytest.mark.slow
def test_gpu_scaling_without_gpu_fails_with_a_clear_message():
    # Hidden GPUs: the same outcome on a machine that has some.
    env = {**subprocess_env(), "CUDA_VISIBLE_DEVICES": ""}
    process = _run("gpu_scaling.py", env=env, timeout=300)
    assert process.returncode == 3, process.stderr[-2000:]
    assert "no GPU visible to TensorFlow" in process.stderr
    assert "tensorflow[and-cuda]" in process.stderr
    assert "Traceback" not in process.stderr


def test_gpu_scaling_plan(tmp_path):
    process = _run(
        "gpu_scaling.py",
        "--dry_run",
        "--num_gpus=3",
        "--modes=fp16_xla",
        "--per_gpu_batch=16",
        f"--reviews={tmp_path / 'reviews.jsonl'}",
        env={k: v for k, v in subprocess_env().items() if k != "CUDA_VISIBLE_DEVICES"},
    )
    assert process.returncode == 0, process.stderr[-2000:]
    lines = process.stdout.splitlines()
    plans = [json.loads(line) for line in lines[::2]]
    assert [p["gpus"] for p in plans] == [1, 2, 3]
    commands = lines[1::2]
    assert commands[1].strip().startswith("CUDA_VISIBLE_DEVICES=0,1 ")
    assert "--strategy=mirrored" in commands[2] and "--batch_size=48" in commands[2]
    assert all("--mode=fp16_xla" in c for c in commands)


def test_peer_env_help_installs_nothing(tmp_path):
    venv = tmp_path / "venv"
    process = subprocess.run(
        ["bash", str(BENCHMARKS / "peer_env.sh"), f"--venv={venv}", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode == 0 and "torch==2.13.0" in process.stdout and "transformers==" in process.stdout
    assert not venv.exists()
    bad = subprocess.run(
        ["bash", str(BENCHMARKS / "peer_env.sh"), "--bogus"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr


@pytest.mark.slow
def test_corpus_bench_builds_the_corpora_and_measures_every_format(tmp_path, imdb_archive, vocab_path):
    import csv
    import gzip

    work_dir, results = tmp_path / "work", tmp_path / "results"
    process = _run(
        "corpus_bench.py",
        f"--archive={imdb_archive}",
        "--sizes=400",
        "--num_shards=3",
        "--train_steps=3",
        "--batch_size=8",
        "--warmup_batches=1",
        "--timed_batches=4",
        f"--work_dir={work_dir}",
        f"--results_dir={results}",
        f"--trainer_flag=--config={REPO / 'configs' / 'smoke.py'}",
        f"--trainer_flag=--config.model.vocab_path={vocab_path}",
        # As in the shipped configs, which train by epochs: the benchmark sets the steps of its streamed runs.
        "--trainer_flag=--config.train.steps=0",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    # 400 reviews from the 160 of the archive: every copy has ids of its own, spread over the 3 shards.
    rows = []
    for shard in sorted((work_dir / "corpus-400-3" / "csv").glob("*.csv.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    assert len(rows) == 400 and len({row["id"] for row in rows}) == 400
    assert len({row["text"] for row in rows}) == 160
    (record,) = [json.loads(line) for line in next(results.glob("corpus-*.jsonl")).read_text().splitlines()]
    for fmt in ("csv.gz", "tfrecord", "prepared"):
        measured = record["pipeline"][fmt]
        assert "error" not in measured, measured
        # Every timed batch was full: the stream repeats, so 4 batches of 8 reviews.
        assert measured["timed_reviews"] == 32 and measured["reviews_per_second"] > 0
    train = record["train"]
    assert "error" not in train, train
    assert 0 < train["first_step_seconds"] < train["run_seconds"] and train["peak_rss_mb"] > 100
    report = next(results.glob("corpus-*.md")).read_text()
    assert "| 400 |" in report and "Failed measurements" not in report
