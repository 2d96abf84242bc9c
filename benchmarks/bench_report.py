"""The benchmark report: JSON records of both sides in, a markdown table with ratios and targets out.

Pure functions of the records (no measurement, no TensorFlow, no torch), so
the tables can be rebuilt from a saved results .jsonl and tested on canned
records. Each record has at least `side` (trainer | peer), `kind` (train |
pipeline | inference), `mode`, `seq_length`, and either `headline` (its
throughput, in `unit`) or `error`.
"""

from collections.abc import Iterable
import dataclasses

# The targets, as ratios.
TRAIN_TARGET_SHORT = 1.5  # trainer / peer's best mode, seq_length below LONG_SEQ_LENGTH
TRAIN_TARGET_LONG = 2.0  # trainer with bucketing / peer's best mode, seq_length >= LONG_SEQ_LENGTH
LONG_SEQ_LENGTH = 512
PIPELINE_TARGET = 10.0  # input pipeline reviews/s / the trainer's best training examples/s
INFERENCE_TARGET = 1.5  # exported model reviews/s / the peer's best inference reviews/s

_TRAINER_MODE_LABELS = {
    "fp32": "fp32",
    "fp32_xla": "fp32 + XLA",
    "bf16": "bf16",
    "bf16_xla": "bf16 + XLA",
    "fp16": "fp16",
    "fp16_xla": "fp16 + XLA",
}
_PEER_MODE_LABELS = {"fp32": "fp32", "bf16": "bf16 autocast"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One of the issue's targets, checked against the records."""

    name: str
    required: float
    ratio: float | None  # None: not measured (a side or a mode is missing or failed)
    detail: str

    @property
    def status(self) -> str:
        if self.ratio is None:
            return "not measured"
        return "met" if self.ratio >= self.required else "NOT met"


def _ok(records: Iterable[dict], **match) -> list[dict]:
    """Successful records whose fields equal `match`."""
    return [r for r in records if "error" not in r and all(r.get(k) == v for k, v in match.items())]


def _best(records: list[dict]) -> dict | None:
    return max(records, key=lambda r: r["headline"]) if records else None


def _bucketed(record: dict) -> bool:
    return (record.get("num_buckets") or 1) > 1


def mode_label(record: dict) -> str:
    labels = _PEER_MODE_LABELS if record["side"] == "peer" else _TRAINER_MODE_LABELS
    return labels.get(record["mode"], record["mode"])


def padding_label(record: dict) -> str:
    if record["side"] == "peer":
        mean = record.get("mean_padded_length")
        return f"longest in batch (mean {mean:.0f})" if mean is not None else "longest in batch"
    if record["kind"] == "inference":
        return "length-sorted chunks (the exported model's own)"
    if _bucketed(record):
        buckets = record.get("buckets")
        return "buckets " + "/".join(str(b) for b in buckets) if buckets else f"{record['num_buckets']} buckets"
    return f"fixed {record['seq_length']}"


def describe(record: dict) -> str:
    return f"{record['side']} {mode_label(record)}, {padding_label(record)}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rss(record: dict) -> str:
    return f"{record['peak_rss_mb']:.0f}" if record.get("peak_rss_mb") is not None else "-"


def _row(cells: list[str], width: int) -> str:
    """A markdown table row of `width` cells; missing ones are empty."""
    # A pipe inside a cell (a log tail) would split it.
    cells = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
    return "| " + " | ".join([*cells, *[""] * (width - len(cells))]) + " |"


def _seq_lengths(records: list[dict], kind: str) -> list[int]:
    return sorted({r["seq_length"] for r in records if r.get("kind") == kind})


def evaluate_targets(records: list[dict]) -> list[Target]:
    """Each target of the issue, per sequence length measured."""
    targets = []
    for seq in _seq_lengths(records, "train"):
        peer = _best(_ok(records, side="peer", kind="train", seq_length=seq))
        trainer_runs = _ok(records, side="trainer", kind="train", seq_length=seq)
        if seq >= LONG_SEQ_LENGTH:
            # Real IMDb lengths at 512 are the case bucketing is for.
            required, name = TRAIN_TARGET_LONG, f"training, seq_length {seq}, bucketing on real IMDb lengths"
            trainer_runs = [r for r in trainer_runs if _bucketed(r)]
        else:
            required, name = TRAIN_TARGET_SHORT, f"training, seq_length {seq}"
        trainer = _best(trainer_runs)
        targets.append(_compare(name, required, trainer, peer, "peer's best"))
    for seq in _seq_lengths(records, "pipeline"):
        pipeline = _best(_ok(records, side="trainer", kind="pipeline", seq_length=seq))
        training = _best(_ok(records, side="trainer", kind="train", seq_length=seq))
        targets.append(
            _compare(f"input pipeline vs training, seq_length {seq}", PIPELINE_TARGET, pipeline, training, "training")
        )
    for seq in _seq_lengths(records, "inference"):
        trainer = _best(_ok(records, side="trainer", kind="inference", seq_length=seq))
        peer = _best(_ok(records, side="peer", kind="inference", seq_length=seq))
        targets.append(_compare(f"inference, seq_length {seq}", INFERENCE_TARGET, trainer, peer, "peer's best"))
    return targets


def _compare(name: str, required: float, ours: dict | None, theirs: dict | None, against: str) -> Target:
    if ours is None or theirs is None:
        missing = "ours" if ours is None else against
        return Target(name, required, None, f"no successful measurement ({missing})")
    ratio = ours["headline"] / theirs["headline"]
    detail = (
        f"{_rate(ours['headline'])} {ours['unit']} ({describe(ours)}) / "
        f"{_rate(theirs['headline'])} {theirs['unit']} ({against}: {describe(theirs)})"
    )
    return Target(name, required, ratio, detail)


def _training_tables(records: list[dict]) -> list[str]:
    lines = []
    for seq in _seq_lengths(records, "train"):
        rows = [r for r in records if r.get("kind") == "train" and r["seq_length"] == seq]
        peer = _best(_ok(rows, side="peer"))
        batch = next((r["batch_size"] for r in rows if "batch_size" in r), None)
        lines += [
            f"### Training, seq_length {seq}, batch {batch} (examples/s)",
            "",
            "| side | mode | padding | median | mean | epoch mix | headline | peak RSS MiB | / peer best |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in sorted(rows, key=lambda r: (r["side"] != "trainer", _bucketed(r), r["mode"])):
            if "error" in r:
                lines.append(_row([r["side"], mode_label(r), padding_label(r), f"failed: {r['error']}"], 9))
                continue
            ratio = r["headline"] / peer["headline"] if peer else None
            lines.append(
                f"| {r['side']} | {mode_label(r)} | {padding_label(r)} | {_rate(r.get('median'))} | "
                f"{_rate(r.get('mean'))} | {_rate(r.get('epoch_mix'))} | **{_rate(r['headline'])}** | "
                f"{_rss(r)} | {_ratio(ratio)} |"
            )
        lines.append("")
    return lines


def _pipeline_table(records: list[dict]) -> list[str]:
    rows = [r for r in records if r.get("kind") == "pipeline"]
    if not rows:
        return []
    lines = [
        "### Input pipeline alone (tokenize + batch, reviews/s)",
        "",
        "| seq_length | reviews/s | best training examples/s | pipeline / training | peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: r["seq_length"]):
        if "error" in r:
            lines.append(_row([str(r["seq_length"]), f"failed: {r['error']}"], 5))
            continue
        training = _best(_ok(records, side="trainer", kind="train", seq_length=r["seq_length"]))
        best = training["headline"] if training else None
        ratio = r["headline"] / best if best else None
        lines.append(f"| {r['seq_length']} | {_rate(r['headline'])} | {_rate(best)} | {_ratio(ratio)} | {_rss(r)} |")
    return [*lines, ""]


def _inference_tables(records: list[dict]) -> list[str]:
    rows = [r for r in records if r.get("kind") == "inference"]
    if not rows:
        return []
    lines = [
        "### Inference (raw strings in, tokenization included, reviews/s)",
        "",
        "| seq_length | side | precision | batch | reviews/s | peak RSS MiB | / peer best |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r["seq_length"], r["side"] != "trainer", r["mode"])):
        label = "exported SavedModel, " + r["mode"] if r["side"] == "trainer" else mode_label(r)
        if "error" in r:
            lines.append(_row([str(r["seq_length"]), r["side"], label, f"failed: {r['error']}"], 7))
            continue
        peer = _best(_ok(records, side="peer", kind="inference", seq_length=r["seq_length"]))
        ratio = r["headline"] / peer["headline"] if peer else None
        lines.append(
            f"| {r['seq_length']} | {r['side']} | {label} | {r.get('batch_size', '-')} | "
            f"{_rate(r['headline'])} | {_rss(r)} | {_ratio(ratio)} |"
        )
    return [*lines, ""]


def _targets_table(targets: list[Target]) -> list[str]:
    lines = [
        "### Targets",
        "",
        "| target | required | measured | status | from |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for t in targets:
        lines.append(f"| {t.name} | >= {t.required:g}x | {_ratio(t.ratio)} | **{t.status}** | {t.detail} |")
    return [*lines, ""]


def format_report(records: list[dict], title: str = "Speed benchmark", meta: dict[str, str] | None = None) -> str:
    """The markdown report: training, input pipeline, inference, then the targets."""
    lines = [f"## {title}", ""]
    for key, value in (meta or {}).items():
        lines.append(f"- {key}: {value}")
    if meta:
        lines.append("")
    lines += _training_tables(records)
    lines += _pipeline_table(records)
    lines += _inference_tables(records)
    lines += _targets_table(evaluate_targets(records))
    lines += [
        "Headline: the median of the timed steps for fixed-length runs; with buckets, the rate over one "
        "epoch's mix of bucket lengths (mean step time per length weighted by the epoch's batches of that "
        "length), else all examples / all time of the timed steps. Inference: all reviews / all time. "
        "Peak RSS: ru_maxrss of the measuring process.",
        "",
    ]
    return "\n".join(lines)


def format_scaling(records: list[dict]) -> str:
    """gpu_scaling.py's records as markdown: examples/s, per GPU, and scaling efficiency
    (examples/s per GPU against the same mode on 1 GPU)."""
    lines = [
        "| mode | seq_length | GPUs | global batch | examples/s | per GPU | scaling efficiency | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    single = {(r["mode"], r["seq_length"]): r["headline"] for r in records if r.get("gpus") == 1 and "error" not in r}
    for r in sorted(records, key=lambda r: (r["seq_length"], r["mode"], r["gpus"])):
        if "error" in r:
            lines.append(_row([r["mode"], str(r["seq_length"]), str(r["gpus"]), f"failed: {r['error']}"], 8))
            continue
        per_gpu = r["headline"] / r["gpus"]
        base = single.get((r["mode"], r["seq_length"]))
        efficiency = f"{100 * per_gpu / base:.0f}%" if base else "-"
        cells = [r["mode"], str(r["seq_length"]), str(r["gpus"]), str(r["batch_size"]), _rate(r["headline"])]
        lines.append(_row([*cells, _rate(per_gpu), efficiency, _rss(r)], 8))
    return "\n".join(lines) + "\n"


# One H200, measured by the second speed issue's author: Hugging Face transformers on PyTorch 2.11, bf16
# autocast, fused AdamW, SDPA attention, random weights. (model, seq_length, batch) -> examples/s eager
# and with torch.compile (None: not given).
H200_PEER = {
    ("MiniLM-L6-H384", 128, 256): (13245.0, 17334.0),
    ("BERT-base", 128, 256): (4101.0, 5154.0),
    ("BERT-base", 512, 32): (795.0, 1014.0),
    ("BERT-large", 128, 256): (1459.0, None),
}


def format_peer_reference(records: list[dict], model: str) -> str:
    """The H200 peer's figures beside this run's best 1-GPU rate for the same model, length and batch."""
    lines = [
        "| model | seq_length | batch | H200 peer (examples/s) | with torch.compile | ours, 1 GPU, best mode | "
        "ours / peer's best |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (name, seq_length, batch), (eager, compiled) in H200_PEER.items():
        ours = _best(_ok(records, gpus=1, seq_length=seq_length, batch_size=batch)) if name == model else None
        peer = max(eager, compiled or 0.0)
        cells = [name, str(seq_length), str(batch), _rate(eager), _rate(compiled)]
        if ours is None:
            cells += ["not run", "-"]
        else:
            cells += [f"{_rate(ours['headline'])} ({ours['mode']})", _ratio(ours["headline"] / peer)]
        lines.append(_row(cells, 7))
    return "\n".join(lines) + "\n"
