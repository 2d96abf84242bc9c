r"""Training throughput per GPU and its scaling over 1..N GPUs (MirroredStrategy), for machines with GPUs.

  python benchmarks/gpu_scaling.py                      # every visible GPU, the default modes
  python benchmarks/gpu_scaling.py --gpu_counts=1,2,4 --modes=bf16_xla --seq_lengths=128,512
  python benchmarks/gpu_scaling.py --dry_run --num_gpus=8   # print the plan, run nothing

Needs TensorFlow's CUDA build (`pip install 'tensorflow[and-cuda]==2.21.0'`,
see BUILD.md). For each GPU count k, mode and sequence length it runs
benchmarks/trainer_bench.py --measure=train --strategy=mirrored in a process
of its own, with CUDA_VISIBLE_DEVICES set to the first k GPUs and a global
batch of --per_gpu_batch x k (the per-GPU work stays fixed: weak scaling).
Scaling efficiency = (examples/s per GPU with k GPUs) / (examples/s with 1 GPU).
Without a visible GPU it stops at once and says so.
"""

from collections.abc import Sequence
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile

from absl import app, flags, logging
import bench_common
import bench_report

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)
EXIT_NO_GPU = 3

flags.DEFINE_list("modes", ["fp16", "fp16_xla", "bf16", "bf16_xla"], "trainer_bench.py training modes.")
flags.DEFINE_list("seq_lengths", ["128"], "Sequence lengths.")
flags.DEFINE_integer("num_buckets", 1, "data.num_buckets (1 = no bucketing).")
flags.DEFINE_list("gpu_counts", [], "GPU counts to run (default: 1, 2, 4, ... and the number visible).")
flags.DEFINE_integer("num_gpus", None, "Skip detection and assume this many GPUs (with --dry_run: plan for them).")
flags.DEFINE_integer("per_gpu_batch", 32, "Batch per GPU; the global batch is this x the GPU count.")
flags.DEFINE_integer("warmup_steps", 2, "Leading steps not timed.")
flags.DEFINE_integer("timed_steps", 30, "Timed steps.")
flags.DEFINE_string(
    "archive", os.path.join(_REPO, "..", "shared", "data", "aclImdb_train.tar.gz"), "The aclImdb tar archive."
)
flags.DEFINE_string("reviews", None, "A reviews JSONL to use instead of sampling --archive.")
flags.DEFINE_integer("sample_size", 8192, "Reviews sampled from --archive.")
flags.DEFINE_integer("seed", 42, "Seed of the sample.")
flags.DEFINE_multi_string("override", [], "Config overrides key=value passed to trainer_bench.py.")
flags.DEFINE_enum(
    "model_name",
    "MiniLM-L6-H384",
    sorted({name for name, _, _ in bench_report.H200_PEER}),
    "The model the run trains (the default config's, or what --override makes of it): the H200 reference "
    "rows of the report compare this model only.",
)
flags.DEFINE_string("results_dir", os.path.join(_HERE, "results"), "Where the report, records and logs go.")
flags.DEFINE_integer("timeout_seconds", 3600, "A single measurement running longer fails.")
flags.DEFINE_bool("dry_run", False, "Print the measurements and their commands; run nothing.")

FLAGS = flags.FLAGS


class NoGpuError(RuntimeError):
    """TensorFlow sees no GPU."""


def visible_gpus() -> int:
    """GPUs TensorFlow sees, asked in a child process so this one never initialises CUDA."""
    probe = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    if process.returncode != 0:
        lines = [line for line in process.stderr.splitlines() if line.strip()]
        raise NoGpuError(f"TensorFlow failed to start: {' | '.join(lines[-3:]) or 'no output'}")
    return int(process.stdout.strip().splitlines()[-1])


def no_gpu_message() -> str:
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    restriction = f" (CUDA_VISIBLE_DEVICES={devices!r})" if devices is not None else ""
    return (
        f"no GPU visible to TensorFlow{restriction}: tf.config.list_physical_devices('GPU') is empty. "
        "This benchmark measures multi-GPU scaling and needs NVIDIA GPUs with their driver and TensorFlow's "
        "CUDA build: pip install 'tensorflow[and-cuda]==2.21.0' (see BUILD.md). On a CPU-only machine run "
        "benchmarks/run_all.py instead."
    )


def default_gpu_counts(total: int) -> list[int]:
    """1, 2, 4, ... up to `total`, and `total` itself."""
    counts, k = [], 1
    while k < total:
        counts.append(k)
        k *= 2
    return [*counts, total]


def device_ids(count: int) -> str:
    """CUDA_VISIBLE_DEVICES for the first `count` GPUs of those this process may use."""
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in allowed.split(",") if d.strip()] if allowed else [str(i) for i in range(count)]
    return ",".join(ids[:count])


def measurement_plan(total: int, reviews: str) -> list[tuple[dict, list[str], str]]:
    """(description, trainer_bench.py flags, CUDA_VISIBLE_DEVICES) of each run."""
    counts = [int(c) for c in FLAGS.gpu_counts] or default_gpu_counts(total)
    too_many = [c for c in counts if c > total]
    if too_many:
        raise app.UsageError(f"--gpu_counts {too_many} exceed the {total} visible GPU(s).")
    plan = []
    for seq_length in (int(s) for s in FLAGS.seq_lengths):
        for mode in FLAGS.modes:
            for count in counts:
                describe = {"side": "gpu", "kind": "train", "mode": mode, "seq_length": seq_length, "gpus": count}
                flags_ = [
                    "--measure=train",
                    "--side=gpu",
                    "--strategy=mirrored",
                    f"--mode={mode}",
                    f"--seq_length={seq_length}",
                    f"--buckets={FLAGS.num_buckets}",
                    f"--batch_size={FLAGS.per_gpu_batch * count}",
                    f"--warmup_steps={FLAGS.warmup_steps}",
                    f"--timed_steps={FLAGS.timed_steps}",
                    f"--bucketed_timed_steps={FLAGS.timed_steps}",
                    # TensorFlow's own thread defaults: the host feeds the GPUs.
                    "--threads=0",
                    f"--reviews={reviews}",
                    *(f"--override={o}" for o in FLAGS.override),
                ]
                plan.append((describe, flags_, device_ids(count)))
    return plan


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    total = FLAGS.num_gpus
    if total is None:
        try:
            total = visible_gpus()
        except NoGpuError as e:
            logging.error("%s", e)
            sys.exit(EXIT_NO_GPU)
    if total < 1:
        logging.error("%s", no_gpu_message())
        sys.exit(EXIT_NO_GPU)

    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S") + "-gpu"
    reviews = FLAGS.reviews or os.path.join(tempfile.mkdtemp(prefix="gpu-scaling-"), "reviews.jsonl")
    plan = measurement_plan(total, reviews)
    if FLAGS.dry_run:
        for describe, flags_, devices in plan:
            command = shlex.join([sys.executable, os.path.join(_HERE, "trainer_bench.py"), *flags_])
            print(f"{json.dumps(describe)}\n  CUDA_VISIBLE_DEVICES={devices} {command}")
        return
    if not FLAGS.reviews:
        bench_common.write_jsonl(reviews, bench_common.sample_reviews(FLAGS.archive, FLAGS.sample_size, FLAGS.seed))
    logs_dir = os.path.join(FLAGS.results_dir, f"{stamp}-logs")
    os.makedirs(logs_dir, exist_ok=True)
    records = []
    for index, (describe, flags_, devices) in enumerate(plan, start=1):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices, "TF_CPP_MIN_LOG_LEVEL": "2"}
        log_path = os.path.join(logs_dir, f"{index:02d}-{describe['mode']}-{describe['seq_length']}-{devices}.log")
        logging.info("[%d/%d] %s on GPUs %s ...", index, len(plan), json.dumps(describe), devices)
        command = [sys.executable, os.path.join(_HERE, "trainer_bench.py"), *flags_]
        for record in bench_common.run_measurement(command, env, log_path, FLAGS.timeout_seconds, describe):
            record = {**describe, **record}
            if "error" in record:
                logging.error("[%d/%d] failed: %s", index, len(plan), record["error"])
            else:
                logging.info("[%d/%d] %.1f examples/s", index, len(plan), record["headline"])
            records.append(record)
    bench_common.write_jsonl(os.path.join(FLAGS.results_dir, f"{stamp}.jsonl"), records)
    report = (
        f"## GPU scaling ({stamp})\n\n{bench_report.format_scaling(records)}\n"
        f"### Against one H200 running Hugging Face transformers on PyTorch (reference figures)\n\n"
        f"{bench_report.format_peer_reference(records, FLAGS.model_name)}"
    )
    with open(os.path.join(FLAGS.results_dir, f"{stamp}.md"), "w", encoding="utf-8") as f:
        f.write(report)
    sys.stdout.write(report)


if __name__ == "__main__":
    app.run(main)
