"""Shared by every benchmark script, on both sides: the review sample, step statistics, peak memory.

Standard library and absl only: it is imported by the trainer's scripts
(project venv) and by the peer's (benchmarks/.peer-venv, torch +
transformers), so both sides read the same reviews, run their measurements
the same way and summarise their timings the same way.
"""

import json
import os
import random
import re
import resource
import signal
import statistics
import subprocess
import tarfile
import time

from absl import logging

# aclImdb/train/{pos,neg}/<id>_<rating>.txt, macOS "._" files excepted.
_REVIEW = re.compile(r"(?:^|/)aclImdb/train/(pos|neg)/([^/.][^/]*)\.txt$")
# The trainer's tokenizer drops these HTML line breaks; removed here so both sides see the same text.
_MARKUP = re.compile(r"(?i)<br\s*/?>")


def sample_reviews(archive: str, sample_size: int, seed: int) -> list[dict]:
    """A seeded random sample of the training reviews of an aclImdb tar archive.

    Returns records {"id", "text", "label"} in sample order; the same
    (archive, sample_size, seed) always gives the same list.
    """
    reviews = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            match = _REVIEW.search(member.name)
            if match and member.isfile():
                text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                polarity, stem = match.groups()
                reviews.append(
                    {"id": f"{polarity}/{stem}", "text": _MARKUP.sub(" ", text), "label": int(polarity == "pos")}
                )
    if not reviews:
        raise ValueError(f"{archive}: no aclImdb/train/{{pos,neg}}/*.txt members (expected the aclImdb archive).")
    # Sorted first: the sample must not depend on the member order inside the archive.
    reviews.sort(key=lambda review: review["id"])
    if sample_size >= len(reviews):
        sample = list(reviews)
        random.Random(seed).shuffle(sample)
        return sample
    return random.Random(seed).sample(reviews, sample_size)


def write_jsonl(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rate_summary(items_per_step: list[int], seconds_per_step: list[float]) -> dict[str, float]:
    """Median of the per-step rates, and the aggregate rate (all items / all time).

    The aggregate is the honest figure when steps differ in cost (length
    buckets, padding to the longest review): it weighs each step by its time,
    where a mean of per-step rates would overstate the fast steps.
    """
    rates = [n / t for n, t in zip(items_per_step, seconds_per_step)]
    return {
        "median": statistics.median(rates),
        "mean": sum(items_per_step) / sum(seconds_per_step),
        "min": min(rates),
        "max": max(rates),
    }


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that pin TensorFlow's, PyTorch's and the BLAS libraries' thread pools."""
    value = str(threads)
    return {
        "OMP_NUM_THREADS": value,
        "MKL_NUM_THREADS": value,
        "OPENBLAS_NUM_THREADS": value,
        "TF_NUM_INTRAOP_THREADS": value,
        "TF_NUM_INTEROP_THREADS": value,
    }


def emit(record: dict) -> None:
    """One measurement: one JSON line on stdout (logs go to stderr)."""
    print(json.dumps(record, sort_keys=True), flush=True)


def run_measurement(
    command: list[str], env: dict[str, str], log_path: str, timeout: float, describe: dict
) -> list[dict]:
    """Runs one measurement in a process of its own and returns the JSON records it printed.

    Its log goes to `log_path`. A failure or a timeout becomes one record with
    an "error" (and the fields of `describe`), so one broken mode does not sink
    the whole benchmark.
    """
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        # A session of its own: on a timeout, its children (an export process) go with it.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True
        )
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return [{**describe, "error": f"timed out after {timeout:.0f} s (log: {log_path})"}]
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not records:
        return [{**describe, "error": f"exit status {process.returncode}: {log_tail(log_path)} (log: {log_path})"}]
    for record in records:
        record["process_seconds"] = round(time.time() - start, 1)
    return records


def log_tail(path: str, lines: int = 3) -> str:
    """The last non-empty lines of a log, joined: usually the exception."""
    with open(path, encoding="utf-8", errors="replace") as f:
        tail = [line.strip() for line in f if line.strip()][-lines:]
    return " | ".join(tail) or "no output"


def run_plan(
    plan: list[tuple[dict, list[str]]], command: list[str], env: dict[str, str], log_dir: str, timeout: float
) -> list[dict]:
    """Runs each measurement of `plan` ((description, flags) pairs) as `command + flags`, one
    after the other, each in a fresh process: no dtype policy, compiled function or memory
    peak carries over from one measurement to the next. Emits and returns the records."""
    os.makedirs(log_dir, exist_ok=True)
    records = []
    for index, (describe, flags) in enumerate(plan, start=1):
        name = "-".join(str(v) for v in describe.values()).replace("+", "_").replace("/", "_")
        log_path = os.path.join(log_dir, f"{index:02d}-{name}.log")
        logging.info("[%d/%d] %s ...", index, len(plan), json.dumps(describe))
        for record in run_measurement([*command, *flags], env, log_path, timeout, describe):
            record = {**describe, **record}
            if "error" in record:
                logging.error("[%d/%d] failed: %s", index, len(plan), record["error"])
            else:
                logging.info(
                    "[%d/%d] %.2f %s (%s), peak RSS %.0f MiB, %.0f s in all",
                    index,
                    len(plan),
                    record["headline"],
                    record["unit"],
                    record["headline_basis"],
                    record["peak_rss_mb"],
                    record["process_seconds"],
                )
            emit(record)
            records.append(record)
    return records
