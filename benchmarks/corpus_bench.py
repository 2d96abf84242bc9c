r"""Data at scale: streamed corpora of 25k, 250k and 1M reviews, raw text against prepared shards.

  python benchmarks/corpus_bench.py                 # the full benchmark (about 30 minutes on 2 cores)
  python benchmarks/corpus_bench.py --quick         # small corpora, few steps: checks the machinery

For each corpus size it:

1. builds the corpus from the IMDb training half (--archive), repeated with
   varied ids, into --num_shards gzipped CSV shards and as many TFRecord
   shards of tf.train.Example;
2. tokenizes the CSV shards once with `python -m trainer.prepare`;
3. measures the training input pipeline alone (the trainer's StreamInput:
   read, split by key, shuffle, batch, tokenize) in reviews/s, for the gzipped
   CSV, the TFRecord and the prepared shards;
4. trains --train_steps steps (`python -m trainer.main --mode=train`) on the
   gzipped CSV shards and records the run's peak resident memory and the time
   from launch to the end of its first step.

Every measurement runs in a process of its own, one after the other. The
report (markdown, and the records as JSON lines) goes to
--results_dir/corpus-<timestamp>.{md,jsonl}; corpora and runs stay in
--work_dir for a rerun, which rebuilds nothing it finds complete.
"""

from collections.abc import Sequence
import contextlib
import csv
import datetime
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

from absl import app, flags, logging
import bench_common

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)

flags.DEFINE_enum("measure", "all", ["all", "pipeline", "train"], "all = the benchmark; the others: one measurement.")
flags.DEFINE_bool("quick", False, "Small corpora, few shards, few steps: a smoke test of the machinery.")
flags.DEFINE_string(
    "archive", os.path.join(_REPO, "..", "shared", "data", "aclImdb_train.tar.gz"), "The aclImdb tar archive."
)
flags.DEFINE_list("sizes", ["25000", "250000", "1000000"], "Corpus sizes, in reviews.")
flags.DEFINE_integer("num_shards", 64, "Shards per corpus and format.")
flags.DEFINE_string("work_dir", os.path.join("/tmp", "corpus_bench"), "Corpora, prepared shards and runs go here.")
flags.DEFINE_string("results_dir", os.path.join(_HERE, "results"), "Where the report and records go.")
flags.DEFINE_integer("train_steps", 200, "Steps of each training run.")
flags.DEFINE_integer("batch_size", 32, "Global batch of the pipeline measurement and the training runs.")
flags.DEFINE_integer("warmup_batches", 20, "Pipeline batches not timed (tracing, thread pools, shuffle buffer).")
flags.DEFINE_integer("timed_batches", 300, "Pipeline batches timed.")
flags.DEFINE_multi_string(
    "trainer_flag",
    ["--config=minilm_imdb", "--config.train.precision=mixed_bfloat16"],
    "Flags for trainer.main and trainer.prepare (the model and its settings); the data flags are added.",
)
flags.DEFINE_string("data", None, "--measure=train: the corpus's data path (a glob of shards).")
flags.DEFINE_string("model_dir", None, "--measure=train: the run's model_dir.")
flags.DEFINE_integer("timeout_seconds", 3600, "A single measurement running longer fails.")

FLAGS = flags.FLAGS

_QUICK = {"sizes": ["2000", "8000"], "num_shards": 8, "train_steps": 5, "warmup_batches": 2, "timed_batches": 20}
_FORMATS = ("csv.gz", "tfrecord", "prepared")
# absl's log line prefix: I1201 10:49:12.267119 ...
_LOG_TIME = re.compile(r"^[IWEF](\d{4}) (\d\d:\d\d:\d\d\.\d+) ")
_FIRST_STEP = "Compiled the train step"


def _corpus_dir(size: int) -> str:
    return os.path.join(FLAGS.work_dir, f"corpus-{size}-{FLAGS.num_shards}")


def _shard_name(directory: str, part: str, index: int) -> str:
    suffix = "csv.gz" if part == "csv" else part
    return os.path.join(directory, part, f"reviews-{index:05d}-of-{FLAGS.num_shards:05d}.{suffix}")


def build_corpus(reviews: list[dict], size: int) -> dict[str, str]:
    """Writes `size` reviews (the archive's, repeated, each copy with ids of its own) as gzipped CSV and
    TFRecord shards; returns the data path of each format. A complete corpus is kept."""
    import tensorflow as tf

    directory = _corpus_dir(size)
    paths = {"csv.gz": os.path.join(directory, "csv", "*.csv.gz"), "tfrecord": os.path.join(directory, "tfrecord", "*")}
    done = os.path.join(directory, "COMPLETE")
    if os.path.exists(done):
        return paths
    shutil.rmtree(directory, ignore_errors=True)
    for part in ("csv", "tfrecord"):
        os.makedirs(os.path.join(directory, part))
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        csv_files = [
            stack.enter_context(gzip.open(_shard_name(directory, "csv", i), "wt", encoding="utf-8", compresslevel=6))
            for i in range(FLAGS.num_shards)
        ]
        records = [
            stack.enter_context(tf.io.TFRecordWriter(_shard_name(directory, "tfrecord", i)))
            for i in range(FLAGS.num_shards)
        ]
        writers = [csv.writer(f) for f in csv_files]
        for writer in writers:
            writer.writerow(["id", "text", "label"])
        for index in range(size):
            review = reviews[index % len(reviews)]
            review_id = f"{index // len(reviews)}-{review['id']}"
            shard = index % FLAGS.num_shards
            writers[shard].writerow([review_id, review["text"], review["label"]])
            feature = {
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[review_id.encode()])),
                "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[review["text"].encode()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[review["label"]])),
            }
            records[shard].write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with open(done, "w") as f:
        f.write(f"{size} reviews\n")
    logging.info("Built corpus of %s reviews in %.0f s: %s.", f"{size:,}", time.monotonic() - began, directory)
    return paths


def prepare_corpus(size: int, csv_path: str, log_dir: str) -> tuple[str, float]:
    """Tokenizes the corpus's CSV shards with trainer.prepare; returns the prepared directory and seconds."""
    output = os.path.join(_corpus_dir(size), "prepared")
    if os.path.exists(os.path.join(output, "prepared.json")):
        return output, float("nan")
    shutil.rmtree(output, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "trainer.prepare",
        *FLAGS.trainer_flag,
        *_data_flags(csv_path),
        f"--output={output}",
        f"--num_shards={FLAGS.num_shards}",
    ]
    began = time.monotonic()
    with open(os.path.join(log_dir, f"prepare-{size}.log"), "w") as log:
        subprocess.run(command, stderr=log, stdout=log, check=True, cwd=_REPO, timeout=FLAGS.timeout_seconds)
    return output, time.monotonic() - began


def _config():
    from trainer import experiment

    return experiment.validate(FLAGS.config, "default", reads_data=True, trains=True)


def measure_pipeline() -> dict:
    """Reviews/s through one input pipeline of the trainer's streamed training input, no model."""
    import tensorflow as tf

    from trainer.data import sources
    from trainer.data.stream_input import StreamInput
    from trainer.tasks import registry

    config = _config()
    began = time.monotonic()
    data = sources.load_splits(config.data, config.seed)
    task = registry.build_task(config)
    task.prepare_labels(sources.label_examples(data.train, config.data.label_sample), (), FLAGS.work_dir)
    data_config = config.data
    stream_input = StreamInput(
        tf.distribute.get_strategy(),
        task.build_tokenizer(),
        task.label_encoder(),
        data_config.seq_length,
        data_config.num_buckets,
        config.seed,
        task.pairs,
        data_config.shuffle_buffer,
    )
    dataset = stream_input.dataset_fn(data.train, FLAGS.batch_size, training=True)(tf.distribute.InputContext())
    batches = iter(dataset)
    next(batches)
    first_batch_seconds = time.monotonic() - began
    for _ in range(FLAGS.warmup_batches):
        next(batches)
    start = time.perf_counter()
    reviews = sum(int(tf.shape(next(batches)[1])[0]) for _ in range(FLAGS.timed_batches))
    seconds = time.perf_counter() - start
    return {
        "reviews_per_second": reviews / seconds,
        "timed_reviews": reviews,
        "first_batch_seconds": first_batch_seconds,
        "peak_rss_mb": bench_common.peak_rss_mb(),
    }


def _log_seconds(line: str, year: int) -> float | None:
    match = _LOG_TIME.match(line)
    if not match:
        return None
    stamp = datetime.datetime.strptime(f"{year}{match.group(1)} {match.group(2)}", "%Y%m%d %H:%M:%S.%f")
    return stamp.timestamp()


def measure_train() -> dict:
    """A --mode=train run of trainer.main on --data: its peak RSS and the time from launch to its first step."""
    command = [
        sys.executable,
        "-m",
        "trainer.main",
        "--mode=train",
        "--strategy=mirrored",
        *FLAGS.trainer_flag,
        *_data_flags(FLAGS.data),
        f"--config.train.steps={FLAGS.train_steps}",
        f"--config.train.batch_size={FLAGS.batch_size}",
        f"--config.train.log_every_steps={max(1, FLAGS.train_steps // 10)}",
        f"--model_dir={FLAGS.model_dir}",
    ]
    shutil.rmtree(FLAGS.model_dir, ignore_errors=True)
    launched = time.time()
    process = subprocess.run(command, capture_output=True, text=True, cwd=_REPO, timeout=FLAGS.timeout_seconds)
    finished = time.time()
    sys.stderr.write(process.stderr)
    if process.returncode != 0:
        raise RuntimeError(f"trainer.main exited with status {process.returncode}")
    year = datetime.datetime.fromtimestamp(launched).year
    first_step = next((_log_seconds(line, year) for line in process.stderr.splitlines() if _FIRST_STEP in line), None)
    # Only this process's child has been waited for: its peak is the trainer's.
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
        "first_step_seconds": None if first_step is None else first_step - launched,
        "run_seconds": finished - launched,
    }


def _data_flags(path: str) -> list[str]:
    return [f"--config.data.path={path}", "--config.data.id_column=id"]


def _measure(kind: str, log_dir: str, name: str, flags_: list[str]) -> dict:
    """Runs --measure=kind in a fresh process; its JSON line, or an error record."""
    passed_on = ("batch_size", "warmup_batches", "timed_batches", "train_steps")
    shared = [f"--{name}={FLAGS[name].value}" for name in passed_on]
    command = [sys.executable, os.path.abspath(__file__), f"--measure={kind}", *shared, *flags_]
    log_path = os.path.join(log_dir, f"{name}.log")
    records = bench_common.run_measurement(command, dict(os.environ), log_path, FLAGS.timeout_seconds, {})
    return records[0]


def _number(value, pattern: str) -> str:
    return "n/a" if value is None or value != value else format(value, pattern)


def format_report(records: list[dict], meta: dict) -> str:
    """The markdown report of the records: one row per corpus size."""
    lines = [
        f"# Streamed corpora: {meta['when']}",
        "",
        f"- command: {meta['command']}",
        f"- corpora: the reviews of {meta['archive']} repeated, {meta['num_shards']} shards per format",
        f"- trainer flags: {' '.join(meta['trainer_flags'])}; training runs of {meta['train_steps']} steps, "
        f"batch {meta['batch_size']}, on the gzipped CSV shards",
        f"- pipeline: {meta['timed_batches']} batches timed after {meta['warmup_batches']}",
        "",
        "| reviews | build s | prepare s | pipeline csv.gz (reviews/s) | tfrecord | prepared | "
        "training run peak RSS (MiB) | time to first step (s) | training rate (examples/s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for record in records:
        pipeline = record["pipeline"]
        train = record["train"]
        cells = [
            f"{record['size']:,}",
            _number(record.get("build_seconds"), ".0f"),
            _number(record.get("prepare_seconds"), ".0f"),
            *(_number(pipeline.get(fmt, {}).get("reviews_per_second"), ",.0f") for fmt in _FORMATS),
            _number(train.get("peak_rss_mb"), ",.0f"),
            _number(train.get("first_step_seconds"), ".1f"),
            _number(train.get("examples_per_second"), ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {r['size']} {k}: {v['error']}" for r in records for k, v in _each(r) if "error" in v]
    if errors:
        lines += ["", "Failed measurements:", *errors]
    return "\n".join(lines) + "\n"


def _each(record: dict):
    yield "train", record["train"]
    for fmt, value in record["pipeline"].items():
        yield f"pipeline {fmt}", value


_STEP_RATE = re.compile(r"step (\d+)/\d+ .* ([\d.]+) examples/s")


def _training_rate(log_path: str) -> float | None:
    """The median examples/s of the run's progress lines after its first one (which holds the tracing)."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        rates = [float(m.group(2)) for m in map(_STEP_RATE.search, f) if m]
    rates = sorted(rates[1:])
    return rates[len(rates) // 2] if rates else None


def run_all() -> None:
    when = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    log_dir = os.path.join(FLAGS.results_dir, f"corpus-{when}-logs")
    os.makedirs(log_dir, exist_ok=True)
    reviews = bench_common.sample_reviews(FLAGS.archive, 1 << 30, 0)
    logging.info("Read %s reviews from %s.", f"{len(reviews):,}", FLAGS.archive)
    records = []
    for size in (int(s) for s in FLAGS.sizes):
        began = time.monotonic()
        paths = build_corpus(reviews, size)
        record = {"size": size, "build_seconds": time.monotonic() - began, "pipeline": {}}
        paths["prepared"], record["prepare_seconds"] = prepare_corpus(size, paths["csv.gz"], log_dir)
        for fmt in _FORMATS:
            name = f"pipeline-{size}-{fmt}"
            # A stream's size is unknown before it is read: the trainer's config check asks for train.steps.
            pipeline_flags = [
                *FLAGS.trainer_flag,
                *_data_flags(paths[fmt]),
                f"--config.train.steps={FLAGS.train_steps}",
            ]
            record["pipeline"][fmt] = _measure("pipeline", log_dir, name, pipeline_flags)
            logging.info("%s: %s", name, json.dumps(record["pipeline"][fmt]))
        run_dir = os.path.join(FLAGS.work_dir, "runs", str(size))
        train_flags = [f"--data={paths['csv.gz']}", f"--model_dir={run_dir}"]
        train_flags += [f"--trainer_flag={flag}" for flag in FLAGS.trainer_flag]
        train = _measure("train", log_dir, f"train-{size}", train_flags)
        if "error" not in train:
            train["examples_per_second"] = _training_rate(os.path.join(log_dir, f"train-{size}.log"))
        record["train"] = train
        logging.info("train-%d: %s", size, json.dumps(train))
        records.append(record)
    meta = {
        "when": when,
        "command": " ".join(["python benchmarks/corpus_bench.py", *sys.argv[1:]]),
        "archive": os.path.basename(FLAGS.archive),
        "num_shards": FLAGS.num_shards,
        "trainer_flags": FLAGS.trainer_flag,
        "train_steps": FLAGS.train_steps,
        "batch_size": FLAGS.batch_size,
        "timed_batches": FLAGS.timed_batches,
        "warmup_batches": FLAGS.warmup_batches,
    }
    report = format_report(records, meta)
    base = os.path.join(FLAGS.results_dir, f"corpus-{when}")
    with open(base + ".md", "w") as f:
        f.write(report)
    with open(base + ".jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.write(report)


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.quick:
        for name, value in _QUICK.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value
    if FLAGS.measure == "all":
        run_all()
        return
    measured = measure_pipeline() if FLAGS.measure == "pipeline" else measure_train()
    bench_common.emit(measured)


if __name__ == "__main__":
    if "--measure=pipeline" in sys.argv:
        from trainer import command_line  # Defines --config and parses the trainer's own flags.

        app.run(main, flags_parser=command_line.parse_flags)
    else:
        app.run(main)
