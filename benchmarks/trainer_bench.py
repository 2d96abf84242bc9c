r"""This trainer's side of the speed benchmark: training steps, input pipeline, exported-model inference.

Runs in the project's venv and uses only the trainer's public pieces: the
config from `experiment.default_config()` plus overrides, the task from the
task registry, `InputPlan`, `Trainer`, `strategy.create_strategy` and
`export.export`. Every measurement prints one JSON line on stdout; logs go
to stderr.

  # Everything, each measurement in a process of its own:
  python benchmarks/trainer_bench.py --measure=all --reviews=sample.jsonl
  # One measurement:
  python benchmarks/trainer_bench.py --measure=train --mode=bf16_xla --seq_length=512 \
      --num_buckets=4 --reviews=sample.jsonl

Training throughput is the trainer's own per-step `examples_per_second`
(TensorBoard, `train.log_every_steps=1`; its timer covers the train function
call, input included). Warm-up steps, left out: the first `--warmup_steps` and
every step that traced a new bucket length ("Compiled the train step for
length L" in the log).
"""

from collections.abc import Sequence
import logging as std_logging
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging
import bench_common

# name -> (train.precision, XLA)
MODES = {
    "fp32": ("float32", False),
    "fp32_xla": ("float32", True),
    "bf16": ("mixed_bfloat16", False),
    "bf16_xla": ("mixed_bfloat16", True),
    "fp16": ("mixed_float16", False),
    "fp16_xla": ("mixed_float16", True),
}
# Exported-model precisions: the Keras policy the serving model is built under.
INFERENCE_PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
MEASURES = ("all", "train", "pipeline", "inference", "export")

flags.DEFINE_enum("measure", "all", MEASURES, "What to measure; 'all' runs each measurement in its own process.")
flags.DEFINE_string("reviews", None, "JSONL of reviews ({'text', 'label'}), e.g. from benchmarks/run_all.py.")
flags.DEFINE_string("archive", None, "Without --reviews: sample --sample_size reviews from this aclImdb tar archive.")
flags.DEFINE_integer("sample_size", 4096, "Reviews sampled from --archive.")
flags.DEFINE_integer("seed", 42, "Seed of the sample from --archive.")
flags.DEFINE_bool("quick", False, "Tiny settings to smoke-test the machinery (flags given explicitly still win).")
flags.DEFINE_list("modes", ["fp32", "fp32_xla", "bf16", "bf16_xla"], f"--measure=all: training modes ({list(MODES)}).")
flags.DEFINE_list("seq_lengths", ["128", "512"], "--measure=all: sequence lengths.")
flags.DEFINE_list("num_buckets", ["1", "4"], "--measure=all: data.num_buckets values (1 = no bucketing).")
flags.DEFINE_list("inference_precisions", ["fp32", "bf16"], "--measure=all: exported-model precisions.")
flags.DEFINE_list("skip", [], "--measure=all: kinds to leave out (train, pipeline, inference).")
flags.DEFINE_enum("mode", "fp32", list(MODES), "--measure=train: the training mode.")
flags.DEFINE_enum("precision", "fp32", list(INFERENCE_PRECISIONS), "--measure=inference/export: the model precision.")
flags.DEFINE_integer("seq_length", 128, "data.seq_length of one measurement.")
flags.DEFINE_integer("buckets", 1, "data.num_buckets of one measurement.")
flags.DEFINE_integer("batch_size", 32, "Global training batch (train.batch_size).")
flags.DEFINE_integer("warmup_steps", 2, "Leading training steps left out of the timing.")
flags.DEFINE_integer("timed_steps", 20, "Timed training steps without bucketing.")
flags.DEFINE_integer("bucketed_timed_steps", 40, "Timed training steps with bucketing (enough to cover the buckets).")
flags.DEFINE_integer("pipeline_passes", 3, "Timed passes of the input pipeline over the sample (after one warm-up).")
flags.DEFINE_integer("inference_batch_size", 64, "Reviews per call of the exported model.")
flags.DEFINE_integer("inference_batches", 10, "Timed calls of the exported model (after 2 warm-up calls).")
flags.DEFINE_string("export_dir", None, "--measure=inference: a SavedModel to time (default: export one first).")
flags.DEFINE_integer("threads", 2, "TensorFlow intra- and inter-op threads (0 = TensorFlow's default).")
flags.DEFINE_enum("strategy", "one_device", ["one_device", "mirrored"], "tf.distribute strategy for training.")
flags.DEFINE_multi_string("override", [], "A config override key=value (e.g. model.bert.num_layers=2); repeatable.")
flags.DEFINE_string("logs_dir", None, "--measure=all: each measurement's log goes here (default: a temp dir).")
flags.DEFINE_integer("timeout_seconds", 3600, "--measure=all: a measurement running longer fails.")
flags.DEFINE_string("side", "trainer", "Side label in the records (gpu_scaling.py sets its own).")

FLAGS = flags.FLAGS

_QUICK = {
    "seq_lengths": ["64"],
    "modes": ["fp32", "bf16_xla"],
    "num_buckets": ["1", "2"],
    "inference_precisions": ["fp32", "bf16"],
    "timed_steps": 3,
    "bucketed_timed_steps": 4,
    "pipeline_passes": 1,
    "inference_batch_size": 32,
    "inference_batches": 2,
    "sample_size": 256,
}
# Flags an 'all' run hands to each of its measurement processes.
_FORWARDED = (
    "reviews",
    "batch_size",
    "warmup_steps",
    "timed_steps",
    "bucketed_timed_steps",
    "pipeline_passes",
    "inference_batch_size",
    "inference_batches",
    "threads",
    "strategy",
    "side",
)
_INFERENCE_WARMUP_CALLS = 2
_COMPILED = re.compile(r"Compiled the train step for length (\d+)")
_STEP_LOG = re.compile(r"^step (\d+)/\d+ ")


def _apply_quick() -> None:
    if not FLAGS.quick:
        return
    for name, value in _QUICK.items():
        if not FLAGS[name].present:
            FLAGS[name].value = value


def _set_override(config, assignment: str) -> None:
    """`key=value` onto the ConfigDict, the value parsed as the type of the current one."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise app.UsageError(f"--override={assignment}: expected key=value.")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    current = node[leaf]
    if isinstance(current, bool):
        value = raw.lower() in ("1", "true", "yes")
    elif isinstance(current, (int, float)):
        value = type(current)(raw)
    else:
        value = raw
    node[leaf] = value


def build_config(seq_length: int, num_buckets: int, precision: str, xla: bool, steps: int):
    """The default config (offline MiniLM) with the benchmark's settings and --override values, parsed."""
    from trainer import experiment

    config = experiment.default_config()
    config.data.seq_length = seq_length
    config.data.num_buckets = num_buckets
    config.train.batch_size = FLAGS.batch_size
    config.eval.batch_size = FLAGS.batch_size
    config.train.precision = precision
    config.train.jit_compile = "true" if xla else "false"
    config.train.steps = steps
    # Every step's throughput in TensorBoard; checkpoints only at step 0 and at the end.
    config.train.log_every_steps = 1
    config.train.checkpoint_every_steps = 1_000_000
    config.train.keep_checkpoints = 1
    for assignment in FLAGS.override:
        _set_override(config, assignment)
    return experiment.parse(config)


def _setup_tensorflow() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel("WARNING")
    if FLAGS.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)


def _load_reviews() -> list[dict]:
    if FLAGS.reviews:
        return bench_common.read_jsonl(FLAGS.reviews)
    if FLAGS.archive:
        return bench_common.sample_reviews(FLAGS.archive, FLAGS.sample_size, FLAGS.seed)
    raise app.UsageError("Pass --reviews=sample.jsonl (or --archive=aclImdb_train.tar.gz).")


def _examples(reviews: list[dict]):
    import numpy as np

    from trainer.data.sources import Examples

    return Examples(
        texts=np.array([r["text"] for r in reviews], dtype=object),
        labels=np.array([int(r["label"]) for r in reviews], dtype=np.int32),
        ids=np.array([str(r.get("id", i)) for i, r in enumerate(reviews)], dtype=object),
    )


class _CompileWatcher(std_logging.Handler):
    """Collects the training steps that traced a new bucket length, from the trainer's log.

    The trainer logs "Compiled the train step for length L" right after the
    call that traced, then "step N/M ..." for that call's last step.
    """

    def __init__(self):
        super().__init__()
        self.steps: list[int] = []
        self._pending = False

    def emit(self, record: std_logging.LogRecord) -> None:
        message = record.getMessage()
        if _COMPILED.search(message):
            self._pending = True
            return
        match = _STEP_LOG.match(message)
        if match and self._pending:
            self.steps.append(int(match.group(1)))
            self._pending = False


def _read_step_rates(log_dir: str) -> dict[int, float]:
    """Per-step `examples_per_second` from the TensorBoard event files in `log_dir`."""
    import tensorflow as tf

    rates: dict[int, float] = {}
    for name in sorted(os.listdir(log_dir)):
        if not name.startswith("events.out.tfevents"):
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                if value.tag == "examples_per_second":
                    rates[event.step] = float(tf.make_ndarray(value.tensor))
    return rates


def _input_plan(config, strategy, task):
    """The trainer's own input plan for `config`: the same buckets, token counts and batch plans."""
    from trainer.data.input_plan import InputPlan

    return InputPlan(
        strategy,
        task.build_tokenizer(),
        task.encode_labels,
        config.data.seq_length,
        config.data.num_buckets,
        config.seed,
        config.train.steps_per_loop,
    )


def measure_train() -> dict:
    import tf_keras

    from trainer import strategy as strategy_lib
    from trainer.config import check_batch_sizes
    from trainer.data import batching
    from trainer.run_dir import RunDirectory
    from trainer.tasks import registry
    from trainer.training import precision as precision_lib
    from trainer.training.loop import Trainer

    precision, xla = MODES[FLAGS.mode]
    buckets = batching.bucket_lengths(FLAGS.seq_length, FLAGS.buckets)
    timed = FLAGS.bucketed_timed_steps if len(buckets) > 1 else FLAGS.timed_steps
    # One extra step per further bucket length: those steps compile and are not timed.
    total_steps = FLAGS.warmup_steps + timed + len(buckets) - 1
    config = build_config(FLAGS.seq_length, FLAGS.buckets, precision, xla, total_steps)
    strategy = strategy_lib.create_strategy(FLAGS.strategy)
    check_batch_sizes(config, strategy.num_replicas_in_sync, f"--strategy={FLAGS.strategy}")
    tf_keras.utils.set_random_seed(config.seed)
    # Before the model is built: layers take their dtype from the global policy.
    precision_lib.set_policy(precision)
    examples = _examples(_load_reviews())
    watcher = _CompileWatcher()
    logging.get_absl_logger().addHandler(watcher)
    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as model_dir:
        task = registry.build_task(config)
        with strategy.scope():
            model = task.build_model()
        input_plan = _input_plan(config, strategy, task)
        steps_per_epoch = input_plan.steps_per_epoch(len(examples), config.train.batch_size)
        trainer = Trainer(
            config.train, config.distribute, task, model, strategy, input_plan, RunDirectory(model_dir), steps_per_epoch
        )
        start = time.time()
        trainer.train(examples, None)
        train_seconds = time.time() - start
        rates = _read_step_rates(os.path.join(model_dir, "train"))
    logging.get_absl_logger().removeHandler(watcher)
    lengths = input_plan.token_lengths(examples, "train")

    # The plan the trainer followed: which length each step was padded to.
    def plan(end_step: int) -> batching.BatchPlan:
        return input_plan.train_plan(lengths, config.train.batch_size, 0, end_step, [])

    planned_lengths = plan(total_steps).lengths
    step_lengths = {step: int(planned_lengths[step - 1]) for step in rates}
    first_of_length: dict[int, int] = {}
    for step in sorted(step_lengths):
        first_of_length.setdefault(step_lengths[step], step)
    compile_steps = set(watcher.steps)
    leading = set(range(1, FLAGS.warmup_steps + 1))
    # Every new length should show up in the log, and nothing else after the leading steps.
    if set(first_of_length.values()) - compile_steps or compile_steps - leading - set(first_of_length.values()):
        logging.warning(
            "Compiling steps in the log %s differ from the first step of each planned length %s: leaving out both.",
            sorted(compile_steps),
            sorted(first_of_length.values()),
        )
    warmup = leading | compile_steps | set(first_of_length.values())
    timed_steps = [step for step in sorted(rates) if step not in warmup]
    if not timed_steps:
        raise RuntimeError(f"No timed steps: {len(rates)} steps logged, warm-up {sorted(warmup)}.")
    batch = config.train.batch_size
    seconds = [batch / rates[step] for step in timed_steps]
    summary = bench_common.rate_summary([batch] * len(timed_steps), seconds)
    record = {
        "median": summary["median"],
        "mean": summary["mean"],
        "min": summary["min"],
        "max": summary["max"],
        "headline": summary["median"],
        "headline_basis": "median of timed steps",
    }
    if len(input_plan.buckets) > 1:
        record.update(_bucket_mix(step_lengths, timed_steps, seconds, plan, len(examples), batch))
        record["headline"] = record.get("epoch_mix") or summary["mean"]
        record["headline_basis"] = (
            "epoch bucket mix" if record.get("epoch_mix") else "mean over timed steps (all examples / all time)"
        )
    return {
        **record,
        "kind": "train",
        "mode": FLAGS.mode,
        "precision": precision,
        "xla": xla,
        "seq_length": FLAGS.seq_length,
        "num_buckets": FLAGS.buckets,
        "buckets": input_plan.buckets.tolist(),
        "batch_size": batch,
        "replicas": strategy.num_replicas_in_sync,
        "unit": "examples/s",
        "timed_steps": len(timed_steps),
        "warmup_steps": sorted(warmup),
        "compile_steps_logged": sorted(compile_steps),
        "step_rates": {str(step): round(rates[step], 3) for step in sorted(rates)},
        "train_seconds": round(train_seconds, 1),
        "compilations": trainer.compilations()["train"],
        "peak_rss_mb": round(bench_common.peak_rss_mb(), 1),
    }


def _bucket_mix(step_lengths, timed_steps, seconds, plan, num_examples: int, batch: int) -> dict:
    """Throughput over one epoch's mix of bucket lengths, from the mean step time per length.

    The timed steps are a short, random draw of buckets; weighting each
    length's mean step time by how many batches of it an epoch has gives the
    rate a full epoch would see.
    """
    import numpy as np

    from trainer.data import batching

    per_length: dict[int, list[float]] = {}
    for step, step_seconds in zip(timed_steps, seconds):
        per_length.setdefault(step_lengths[step], []).append(step_seconds)
    epoch_lengths, counts = np.unique(plan(batching.steps_per_epoch(num_examples, batch)).lengths, return_counts=True)
    epoch_counts = {int(length): int(count) for length, count in zip(epoch_lengths, counts)}
    mix = {
        "timed_steps_per_length": {str(k): len(v) for k, v in sorted(per_length.items())},
        "seconds_per_step_by_length": {str(k): round(float(np.mean(v)), 3) for k, v in sorted(per_length.items())},
        "epoch_batches_per_length": {str(k): v for k, v in sorted(epoch_counts.items())},
    }
    missing = sorted(set(epoch_counts) - set(per_length))
    if missing:
        mix["epoch_mix_missing_lengths"] = missing
        logging.warning("No timed step of length(s) %s: no epoch-mix estimate (raise the timed steps).", missing)
        return mix
    epoch_seconds = sum(count * np.mean(per_length[length]) for length, count in epoch_counts.items())
    mix["epoch_mix"] = sum(epoch_counts.values()) * batch / float(epoch_seconds)
    return mix


def measure_pipeline() -> dict:
    """Reviews/s through the training input pipeline alone (tokenize, gather, batch), no model."""
    import tensorflow as tf

    from trainer.data import batching
    from trainer.tasks import registry

    config = build_config(FLAGS.seq_length, FLAGS.buckets, "float32", False, 1)
    input_plan = _input_plan(config, tf.distribute.get_strategy(), registry.build_task(config))
    examples = _examples(_load_reviews())
    start = time.time()
    lengths = input_plan.token_lengths(examples, "train")
    length_seconds = time.time() - start
    plan = input_plan.train_plan(
        lengths, FLAGS.batch_size, 0, batching.steps_per_epoch(len(examples), FLAGS.batch_size), []
    )
    buckets = input_plan.buckets
    rates = []
    # The first pass traces the map function and warms the thread pools.
    for timed_pass in range(FLAGS.pipeline_passes + 1):
        dataset = input_plan.distribute(examples, plan)
        start = time.perf_counter()
        batches = sum(1 for _ in dataset)
        elapsed = time.perf_counter() - start
        if timed_pass:
            rates.append(batches * FLAGS.batch_size / elapsed)
    rates.sort()
    record = {
        "kind": "pipeline",
        "mode": "tokenize+batch",
        "seq_length": FLAGS.seq_length,
        "num_buckets": FLAGS.buckets,
        "batch_size": FLAGS.batch_size,
        "unit": "reviews/s",
        "headline": rates[len(rates) // 2],
        "headline_basis": f"median of {len(rates)} passes over {len(plan) * FLAGS.batch_size} reviews",
        "pass_rates": [round(r, 1) for r in rates],
        "peak_rss_mb": round(bench_common.peak_rss_mb(), 1),
    }
    if len(buckets) > 1:
        record["length_pass_reviews_per_second"] = len(examples) / length_seconds
    return record


def measure_export() -> None:
    """Builds the model under the precision's policy and exports a serving SavedModel to --export_dir."""
    import tf_keras

    from trainer.serving import export
    from trainer.tasks import registry
    from trainer.training import precision as precision_lib

    policy = INFERENCE_PRECISIONS[FLAGS.precision]
    config = build_config(FLAGS.seq_length, 1, policy, False, 1)
    tf_keras.utils.set_random_seed(config.seed)
    precision_lib.set_policy(policy)
    task = registry.build_task(config)
    export.export(task, task.build_tokenizer(), task.build_model(), FLAGS.export_dir, 0)


def measure_inference() -> dict:
    """Reviews/s of the exported model's serving signature on raw strings (tokenization included).

    The model is exported by a separate process first, so this process holds
    only what a serving client would: TensorFlow, tensorflow-text and the SavedModel.
    """
    with tempfile.TemporaryDirectory(prefix="trainer-bench-export-") as tmp:
        export_path = FLAGS.export_dir
        if export_path is None:
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--measure=export",
                f"--precision={FLAGS.precision}",
                f"--seq_length={FLAGS.seq_length}",
                f"--export_dir={tmp}",
                f"--threads={FLAGS.threads}",
                *(f"--override={o}" for o in FLAGS.override),
            ]
            # Its log joins ours on stderr; stdout stays for JSON records.
            subprocess.run(command, check=True, stdout=sys.stderr)
            export_path = os.path.join(tmp, "0")
        return _time_serving(export_path)


def _time_serving(export_path: str) -> dict:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

    serve = tf.saved_model.load(export_path).signatures["serving_default"]
    texts = [r["text"] for r in _load_reviews()]
    size = FLAGS.inference_batch_size
    calls = _INFERENCE_WARMUP_CALLS + FLAGS.inference_batches
    seconds = []
    for call in range(calls):
        # Consecutive slices of the sample, wrapping around.
        batch = [texts[(call * size + i) % len(texts)] for i in range(size)]
        start = time.perf_counter()
        serve(text=tf.constant(batch))["probability"].numpy()
        if call >= _INFERENCE_WARMUP_CALLS:
            seconds.append(time.perf_counter() - start)
    summary = bench_common.rate_summary([size] * len(seconds), seconds)
    return {
        "kind": "inference",
        "mode": FLAGS.precision,
        "seq_length": FLAGS.seq_length,
        "batch_size": size,
        "unit": "reviews/s",
        "median": summary["median"],
        "mean": summary["mean"],
        "headline": summary["mean"],
        "headline_basis": f"all reviews / all time over {len(seconds)} calls (strings in, tokenization included)",
        "timed_calls": len(seconds),
        "peak_rss_mb": round(bench_common.peak_rss_mb(), 1),
    }


def measurement_plan() -> list[tuple[dict, list[str]]]:
    """(description, command-line flags) of each measurement of an 'all' run, in run order."""
    plan = []
    seq_lengths = [int(s) for s in FLAGS.seq_lengths]
    for mode in FLAGS.modes:
        if mode not in MODES:
            raise app.UsageError(f"--modes: unknown mode {mode!r}; expected some of {', '.join(MODES)}.")
    for seq_length in seq_lengths:
        if "train" not in FLAGS.skip:
            for num_buckets in (int(b) for b in FLAGS.num_buckets):
                for mode in FLAGS.modes:
                    describe = {"kind": "train", "mode": mode, "seq_length": seq_length, "num_buckets": num_buckets}
                    flags_ = ["--measure=train", f"--mode={mode}", f"--seq_length={seq_length}"]
                    plan.append((describe, [*flags_, f"--buckets={num_buckets}"]))
        if "pipeline" not in FLAGS.skip:
            describe = {"kind": "pipeline", "mode": "tokenize+batch", "seq_length": seq_length, "num_buckets": 1}
            plan.append((describe, ["--measure=pipeline", f"--seq_length={seq_length}"]))
        if "inference" not in FLAGS.skip:
            for precision in FLAGS.inference_precisions:
                describe = {"kind": "inference", "mode": precision, "seq_length": seq_length}
                plan.append(
                    (describe, ["--measure=inference", f"--precision={precision}", f"--seq_length={seq_length}"])
                )
    return plan


def run_all() -> None:
    if not FLAGS.reviews:
        # Sampled once here, so every measurement reads the same reviews.
        reviews = _load_reviews()
        fd, FLAGS.reviews = tempfile.mkstemp(prefix="reviews-", suffix=".jsonl")
        os.close(fd)
        bench_common.write_jsonl(FLAGS.reviews, reviews)
    env = dict(os.environ)
    if FLAGS.threads > 0:
        env.update(bench_common.thread_env(FLAGS.threads))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    common = [f"--{name}={FLAGS[name].value}" for name in _FORWARDED]
    common += [f"--override={o}" for o in FLAGS.override]
    plan = [({"side": FLAGS.side, **describe}, [*flags_, *common]) for describe, flags_ in measurement_plan()]
    bench_common.run_plan(
        plan,
        [sys.executable, os.path.abspath(__file__)],
        env,
        FLAGS.logs_dir or tempfile.mkdtemp(prefix="trainer-bench-logs-"),
        FLAGS.timeout_seconds,
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    _apply_quick()
    if FLAGS.measure == "all":
        run_all()
        return
    _setup_tensorflow()
    if FLAGS.measure == "export":
        if not FLAGS.export_dir:
            raise app.UsageError("--measure=export needs --export_dir.")
        measure_export()
        return
    measure = {"train": measure_train, "pipeline": measure_pipeline, "inference": measure_inference}[FLAGS.measure]
    import tensorflow as tf

    bench_common.emit({"side": FLAGS.side, **measure(), "tensorflow": tf.__version__})


if __name__ == "__main__":
    app.run(main)
