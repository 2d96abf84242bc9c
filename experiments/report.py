r"""Figures and a Markdown report from finished runs of trainer.main.

Reads each run directory's TensorBoard events (train/, eval/, eval_test/),
metrics.json and config.json, and writes into --output_dir:

  <name>/curves.png            loss and accuracy against steps (and epochs), train vs validation
  <name>/confusion_matrix.png  at threshold 0.5, on the test split (validation when there is none)
  <name>/roc_curve.png         ROC curve of the same split, with its AUC
  comparison.png               with several runs: their curves and ROC curves overlaid
  report.md                    the figures, a final metrics table and each run's key config

  python -m experiments.report --runs=runs/frozen,runs/finetuned --output_dir=runs/report

Only the chief of a run writes events and metrics, so a multi-worker run
directory reads exactly like a single-process one.
"""

import dataclasses
import io
import json
import os
import re
import sys

from absl import app, flags, logging
from matplotlib.figure import Figure
import numpy as np
import tensorflow as tf

from trainer.run_dir import CONFIG_FILE, METRICS_FILE, TRAIN_SUMMARIES, summaries_name

flags.DEFINE_list("runs", None, "Comma-separated run directories (the --model_dir of trainer.main).")
flags.DEFINE_list("names", None, "Comma-separated display names, one per run (default: each directory's basename).")
flags.DEFINE_string("output_dir", None, "Where the PNG figures and report.md are written.")
flags.DEFINE_enum(
    "split", "auto", ["auto", "test", "validation"], "Split of the confusion matrix and ROC curve (auto: test if any)."
)

FLAGS = flags.FLAGS

REPORT_FILE = "report.md"
TRAIN_DIR, VALIDATION_DIR, TEST_DIR = TRAIN_SUMMARIES, summaries_name("validation"), summaries_name("test")

# Fixed sizes (inches) at a fixed dpi, so every PNG has a known pixel size.
DPI = 100
FIGURE_SIZES = {
    "curves.png": (12.0, 4.5),
    "comparison.png": (16.5, 4.5),
    "confusion_matrix.png": (5.0, 4.5),
    "roc_curve.png": (5.0, 5.0),
}

# Columns of the final metrics table: (metrics.json key, heading).
TABLE_COLUMNS = (
    ("accuracy", "accuracy"),
    ("loss", "loss"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("auc", "ROC-AUC"),
    ("num_examples", "examples"),
)
# Config values worth seeing next to a run's results; empty ones are left out.
KEY_CONFIG = (
    "model.encoder",
    "model.pretrained_dir",
    "model.hub_encoder",
    "model.vocab_path",
    "model.freeze_encoder",
    "model.head_hidden_size",
    "model.head_dropout_rate",
    "data.source",
    "data.path",
    "data.tfds_name",
    "data.seq_length",
    "data.truncation",
    "data.head_fraction",
    "data.num_buckets",
    "data.max_examples",
    "train.batch_size",
    "train.epochs",
    "train.steps",
    "train.learning_rate",
    "train.warmup_fraction",
    "train.weight_decay",
    "train.precision",
    "seed",
)
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


class ReportError(ValueError):
    """A run directory cannot be reported on; the message names the path and what is missing."""


def pixel_size(figure_name: str) -> tuple[int, int]:
    """(width, height) in pixels of the PNG written as `figure_name`."""
    width, height = FIGURE_SIZES[figure_name]
    return round(width * DPI), round(height * DPI)


# ----- reading runs -----

Scalars = dict[str, dict[int, float]]


def read_scalars(log_dir: str) -> Scalars:
    """Scalar summaries in `log_dir`'s event files: {tag: {step: value}}.

    Files are read oldest first, so a step written twice (a resumed run, or a
    rollback after a NaN loss) keeps the value written last.
    """
    scalars: Scalars = {}
    paths = tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    # Names are events.out.tfevents.<unix time>.<host>...: order by the time field.
    for path in sorted(paths, key=lambda p: (_event_file_time(p), p)):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    number = _scalar(value)
                    if number is not None:
                        scalars.setdefault(value.tag, {})[int(event.step)] = number
        except tf.errors.DataLossError:
            # A process killed mid-write leaves a torn last record; what came before is good.
            logging.warning("%s ends in a truncated record; using the events before it.", path)
    return scalars


def _event_file_time(path: str) -> int:
    field = os.path.basename(path).split(".")[3:4]
    return int(field[0]) if field and field[0].isdigit() else 0


def _scalar(value) -> float | None:
    if value.HasField("tensor"):
        array = tf.make_ndarray(value.tensor)
        return float(array.item()) if array.size == 1 and array.dtype.kind in "fiub" else None
    if value.HasField("simple_value"):  # TF1-style summaries.
        return float(value.simple_value)
    return None


@dataclasses.dataclass
class Run:
    """One run directory's results."""

    name: str
    path: str
    metrics: dict
    config: dict
    train: Scalars
    validation: Scalars
    test: Scalars

    @property
    def steps_per_epoch(self) -> int:
        return int(self.metrics.get("steps_per_epoch") or 0)

    def splits(self) -> list[str]:
        """Evaluated splits in metrics.json, validation first."""
        return [split for split in ("validation", "test") if isinstance(self.metrics.get(split), dict)]

    def figure_split(self, choice: str = "auto") -> str:
        """The split the confusion matrix and ROC curve show."""
        splits = self.splits()
        if choice == "auto":
            return "test" if "test" in splits else splits[0]
        if choice not in splits:
            raise ReportError(f"{self.path}: --split={choice}, but {METRICS_FILE} has only {', '.join(splits)}.")
        return choice


def _read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def load_run(path: str, name: str) -> Run:
    """Reads a run directory; raises ReportError naming what is missing."""
    if not tf.io.gfile.isdir(path):
        raise ReportError(f"--runs: {path} is not a directory.")
    train = read_scalars(os.path.join(path, TRAIN_DIR))
    if "loss" not in train:
        raise ReportError(
            f"--runs: {path} has no training events ({os.path.join(path, TRAIN_DIR)}/events.out.tfevents.*): "
            "is it the --model_dir of a trainer.main run that logged at least once?"
        )
    metrics_path = os.path.join(path, METRICS_FILE)
    if not tf.io.gfile.exists(metrics_path):
        raise ReportError(
            f"--runs: {path} has no {METRICS_FILE}: trainer.main writes it after the final evaluation "
            "(--mode=train_and_evaluate or evaluate), so this run has not finished."
        )
    try:
        metrics = _read_json(metrics_path)
    except json.JSONDecodeError as e:
        raise ReportError(f"--runs: {metrics_path} is not valid JSON ({e}).") from e
    run = Run(
        name=name,
        path=path,
        metrics=metrics,
        config={},
        train=train,
        validation=read_scalars(os.path.join(path, VALIDATION_DIR)),
        test=read_scalars(os.path.join(path, TEST_DIR)),
    )
    if not run.splits():
        raise ReportError(f"--runs: {metrics_path} holds no evaluated split (validation or test).")
    config_path = os.path.join(path, CONFIG_FILE)
    if tf.io.gfile.exists(config_path):
        run.config = _read_json(config_path)
    else:
        logging.warning("%s has no %s: the report lists no config for it.", path, CONFIG_FILE)
    return run


def run_names(paths: list[str], names: list[str] | None) -> list[str]:
    """Display names (also the figures' subdirectories): --names, or the directories' basenames."""
    if names is None:
        names = [os.path.basename(os.path.normpath(path)) for path in paths]
        if len(set(names)) < len(names):
            raise ReportError(f"--runs={','.join(paths)}: directories share a basename; name them with --names.")
    if len(names) != len(paths):
        raise ReportError(f"--names has {len(names)} name(s) for {len(paths)} run(s) in --runs.")
    if len(set(names)) < len(names):
        raise ReportError(f"--names={','.join(names)}: names must be distinct.")
    for name in names:
        # Names become directory names and Markdown links.
        if not _NAME_PATTERN.match(name):
            raise ReportError(f"--names: {name!r} may only use letters, digits, '_', '.' and '-'.")
    return names


# ----- figures -----


def _series(scalars: Scalars, tag: str) -> tuple[np.ndarray, np.ndarray]:
    points = scalars.get(tag, {})
    steps = np.array(sorted(points), dtype=np.float64)
    return steps, np.array([points[int(s)] for s in steps], dtype=np.float64)


def _save(figure: Figure, path: str) -> None:
    # Figure.savefig renders PNGs with Agg whatever the default backend; no pyplot state.
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    logging.info("Wrote %s.", path)


def _new_figure(figure_name: str) -> Figure:
    # Constrained layout fits labels inside the fixed canvas (bbox_inches='tight' would resize it).
    return Figure(figsize=FIGURE_SIZES[figure_name], dpi=DPI, layout="constrained")


def _add_epoch_axis(axes, steps_per_epoch: int) -> None:
    if steps_per_epoch:
        top = axes.secondary_xaxis(
            "top", functions=(lambda step: step / steps_per_epoch, lambda epoch: epoch * steps_per_epoch)
        )
        top.set_xlabel("epoch")


def plot_curves(run: Run, path: str) -> None:
    """Loss and accuracy against steps: training (per logging window), validation, final test."""
    figure = _new_figure("curves.png")
    for axes, tag in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        axes.plot(*_series(run.train, tag), label="train", color="tab:blue", alpha=0.8)
        steps, values = _series(run.validation, tag)
        if len(steps):
            axes.plot(steps, values, "o-", label="validation", color="tab:orange")
        steps, values = _series(run.test, tag)
        if len(steps):
            axes.plot(steps[-1:], values[-1:], "*", markersize=14, label="test (final)", color="tab:green")
        axes.set_xlabel("step")
        axes.set_ylabel(tag)
        axes.set_title(f"{run.name}: {tag}")
        axes.grid(alpha=0.3)
        axes.legend()
        _add_epoch_axis(axes, run.steps_per_epoch)
    _save(figure, path)


def plot_confusion_matrix(run: Run, split: str, path: str) -> None:
    """Counts at threshold 0.5, rows = true class, with each row's share in percent."""
    counts = run.metrics[split]["confusion_matrix"]
    matrix = np.array(
        [
            [counts["true_negatives"], counts["false_positives"]],
            [counts["false_negatives"], counts["true_positives"]],
        ]
    )
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = _new_figure("confusion_matrix.png")
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes)
    for (row, column), count in np.ndenumerate(matrix):
        # Dark cells get white text.
        color = "white" if count > matrix.max() / 2 else "black"
        axes.text(column, row, f"{count}\n{100 * row_share[row, column]:.1f}%", ha="center", va="center", color=color)
    classes = ["negative", "positive"]
    axes.set_xticks([0, 1], classes)
    axes.set_yticks([0, 1], classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{run.name}: {split} (threshold 0.5)")
    _save(figure, path)


def _plot_roc(axes, run: Run, split: str, color: str | None = None) -> None:
    results = run.metrics[split]
    roc = results["roc_curve"]
    axes.plot(roc["fpr"], roc["tpr"], color=color, label=f"{run.name} {split} (AUC {results['auc']:.4f})")
    counts = results["confusion_matrix"]
    # The operating point of the accuracy, precision and recall in the table.
    fpr = counts["false_positives"] / max(counts["false_positives"] + counts["true_negatives"], 1)
    tpr = counts["true_positives"] / max(counts["true_positives"] + counts["false_negatives"], 1)
    axes.plot([fpr], [tpr], "o", color=axes.lines[-1].get_color())


def _finish_roc_axes(axes, title: str) -> None:
    axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="chance")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")


def plot_roc(run: Run, split: str, path: str) -> None:
    """ROC curve from the AUC metric's 200 thresholds; the dot is the 0.5 threshold."""
    figure = _new_figure("roc_curve.png")
    axes = figure.subplots()
    _plot_roc(axes, run, split)
    _finish_roc_axes(axes, f"{run.name}: ROC, {split} (dot: threshold 0.5)")
    _save(figure, path)


def plot_comparison(runs: list[Run], split_choice: str, path: str) -> None:
    """Loss, accuracy and ROC curves of several runs overlaid; x in epochs when every run knows them."""
    figure = _new_figure("comparison.png")
    loss_axes, accuracy_axes, roc_axes = figure.subplots(1, 3)
    in_epochs = all(run.steps_per_epoch for run in runs)
    for index, run in enumerate(runs):
        color = f"C{index}"
        scale = run.steps_per_epoch if in_epochs else 1
        for axes, tag in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            steps, values = _series(run.train, tag)
            axes.plot(steps / scale, values, "--", color=color, alpha=0.6, label=f"{run.name} train")
            steps, values = _series(run.validation, tag)
            if len(steps):
                axes.plot(steps / scale, values, "o-", color=color, label=f"{run.name} validation")
        _plot_roc(roc_axes, run, run.figure_split(split_choice), color)
    for axes, tag in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch" if in_epochs else "step")
        axes.set_ylabel(tag)
        axes.set_title(tag)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    _finish_roc_axes(roc_axes, "ROC (dots: threshold 0.5)")
    _save(figure, path)


# ----- report.md -----


def _format(key: str, value) -> str:
    if key == "num_examples":
        return str(int(value))
    return f"{float(value):.4f}"


def metrics_table(runs: list[Run]) -> list[str]:
    """Markdown rows: one per run and evaluated split, numbers from metrics.json."""
    headings = ["run", "split", "step", *(heading for _, heading in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(headings) + " |", "|" + " --- |" * len(headings)]
    for run in runs:
        for split in run.splits():
            results = run.metrics[split]
            cells = [run.name, split, str(run.metrics.get("step", ""))]
            cells += [_format(key, results[key]) if key in results else "n/a" for key, _ in TABLE_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _config_value(config: dict, dotted_key: str):
    value = config
    for part in dotted_key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _shows(config: dict, dotted_key: str) -> bool:
    """Leaves out values that the rest of the config makes irrelevant."""
    if dotted_key == "data.tfds_name":
        return not _config_value(config, "data.path")
    if dotted_key == "train.epochs":  # train.steps > 0 overrides it.
        return not _config_value(config, "train.steps")
    if dotted_key in ("train.steps", "data.max_examples"):  # 0 = not set.
        return bool(_config_value(config, dotted_key))
    return True


def _run_section(run: Run, figures: dict[str, str]) -> list[str]:
    metrics = run.metrics
    step, steps_per_epoch = metrics.get("step"), run.steps_per_epoch
    summary = f"`{run.path}`: step {step}"
    if steps_per_epoch and step is not None:
        summary += f" ({step / steps_per_epoch:.2f} epochs of {steps_per_epoch} steps)"
    if "examples_trained" in metrics:
        summary += f", {metrics['examples_trained']:,} examples trained"
    lines = [f"## Run `{run.name}`", "", summary + ".", ""]
    lines += [f"![{run.name}: loss and accuracy]({figures['curves']})", ""]
    split = figures["split"]
    lines += [
        f"Confusion matrix and ROC curve on the {split} split:",
        "",
        f"![{run.name}: confusion matrix]({figures['confusion']}) ![{run.name}: ROC curve]({figures['roc']})",
        "",
    ]
    rows = [(key, _config_value(run.config, key)) for key in KEY_CONFIG if _shows(run.config, key)]
    rows = [(key, value) for key, value in rows if value not in (None, "")]
    if rows:
        lines += ["| config | value |", "| --- | --- |"]
        lines += [f"| `{key}` | `{str(value).replace('|', '/')}` |" for key, value in rows]
        lines.append("")
    return lines


def load_runs(run_dirs: list[str], names: list[str] | None = None) -> list[Run]:
    """Reads every run directory (named by `names`, or by their basenames); raises ReportError."""
    return [load_run(path, name) for path, name in zip(run_dirs, run_names(run_dirs, names))]


def write_report(runs: list[Run], output_dir: str, split: str = "auto") -> str:
    """Writes the figures and report.md for `runs` into `output_dir`; returns report.md's path."""
    tf.io.gfile.makedirs(output_dir)
    lines = ["# Training report", "", f"Runs: {', '.join(f'`{run.name}`' for run in runs)}.", ""]
    lines += ["## Final metrics", "", *metrics_table(runs), ""]
    if len(runs) > 1:
        plot_comparison(runs, split, os.path.join(output_dir, "comparison.png"))
        lines += [
            "## Comparison",
            "",
            "Dashed: training (per logging window); solid: validation. ROC curves on each run's "
            f"{'test (else validation)' if split == 'auto' else split} split.",
            "",
            "![comparison](comparison.png)",
            "",
        ]
    for run in runs:
        run_dir = os.path.join(output_dir, run.name)
        tf.io.gfile.makedirs(run_dir)
        figure_split = run.figure_split(split)
        plot_curves(run, os.path.join(run_dir, "curves.png"))
        plot_confusion_matrix(run, figure_split, os.path.join(run_dir, "confusion_matrix.png"))
        plot_roc(run, figure_split, os.path.join(run_dir, "roc_curve.png"))
        # Relative links, so the report directory can be moved or published as a whole.
        figures = {
            "split": figure_split,
            "curves": f"{run.name}/curves.png",
            "confusion": f"{run.name}/confusion_matrix.png",
            "roc": f"{run.name}/roc_curve.png",
        }
        lines += _run_section(run, figures)
    path = os.path.join(output_dir, REPORT_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("\n".join(lines))
    logging.info("Wrote %s.", path)
    return path


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing; a bad flag exits with status 2 and one line, as trainer.main does."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(f"FATAL Flags parsing error: {e} (--help lists the flags)\n")
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    tf.get_logger().setLevel("WARNING")
    try:
        if not FLAGS.runs:
            raise ReportError("--runs is required: one or more run directories, comma-separated.")
        if not FLAGS.output_dir:
            raise ReportError("--output_dir is required: where the figures and report.md go.")
        write_report(load_runs(FLAGS.runs, FLAGS.names), FLAGS.output_dir, FLAGS.split)
    except ReportError as e:
        logging.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
