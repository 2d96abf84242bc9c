r"""Figures and a Markdown report from finished runs of trainer.main, for every task type.

Reads each run directory's TensorBoard events (train/, eval/, eval_test/),
metrics.json and config.json, and writes into --output_dir:

  <name>/curves.png            loss and the run's main metric against steps (and epochs): train, validation, test
  <name>/confusion_matrix.png  binary: 2 x 2 at threshold 0.5; multiclass: N x N with the class names on both axes
  <name>/roc_curve.png         binary: the ROC curve, with its AUC
  <name>/scatter.png           regression: predicted against true values, with the line y = x
  <name>/per_label.png         multilabel: each label's F1 and ROC-AUC as bars
  comparison.png               with several runs: loss, main metric, and a third panel (below)
  report.md                    the figures, a final metrics table, per-class or per-label tables, key config

  python -m experiments.report --runs=runs/frozen,runs/finetuned --output_dir=runs/report

The per-run figures other than the curves show one split: test when the run has
one, else validation (--split chooses). A figure whose data metrics.json lacks is
left out, and report.md links only the figures written.

Task type: config.json's task.type. A config.json without a task section comes
from before task types and is binary; a run without config.json is typed by what
its metrics.json holds.

Main metric: accuracy when the run's train or validation events have it, else the
first of macro_f1, micro_f1, mae and pearson they have (so binary and multiclass:
accuracy; multilabel: macro_f1; regression: mae, where lower is better).

comparison.png: loss and the main metric overlaid (runs whose main metrics differ
share the middle panel, each line labelled with its metric); the third panel holds
the ROC curves when every run is binary, else a bar chart of each run's final
main metric on each evaluated split.

Figure sizes are fixed (pixel_size gives them in pixels), except the multiclass
confusion matrix, which grows with its number of classes N: cells of 60 px holding
the count and the share of the true class's row for N <= 12, colour-only cells of
30 px beyond, the grid capped at 3000 px; plus 340 px across and 260 px down for
the names, colour bar and title; never smaller than the binary matrix (500 x 450).
Class and label names on figure axes are cut to 16 characters, keeping their start
and end (numbered by output position when that makes two alike); the tables in
report.md give them whole.

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
    "split",
    "auto",
    ["auto", "test", "validation"],
    "Split of the confusion matrix, ROC curve, scatter and per-label figures (auto: test if any).",
)

FLAGS = flags.FLAGS

REPORT_FILE = "report.md"
TRAIN_DIR, VALIDATION_DIR, TEST_DIR = TRAIN_SUMMARIES, summaries_name("validation"), summaries_name("test")

# Fixed sizes (inches) at a fixed dpi, so every PNG has a known pixel size.
DPI = 100
FIGURE_SIZES = {
    "curves.png": (12.0, 4.5),
    "comparison.png": (16.5, 4.5),
    # The binary matrix; a multiclass one grows with its classes (confusion_pixels).
    "confusion_matrix.png": (5.0, 4.5),
    "roc_curve.png": (5.0, 5.0),
    "scatter.png": (5.5, 5.5),
    "per_label.png": (10.0, 4.5),
}
# The multiclass confusion matrix's size rule (see the module docstring), in pixels.
ANNOTATED_CLASSES = 12
_CELL_PIXELS, _SMALL_CELL_PIXELS, _MAX_GRID_PIXELS = 60, 30, 3000
_MARGIN_PIXELS = (340, 260)
# Names on figure axes are cut to this many characters.
_AXIS_NAME_CHARS = 16

TASK_TYPES = ("binary", "multiclass", "regression", "multilabel")
# Candidates for a run's main metric, in order of preference.
MAIN_METRICS = ("accuracy", "macro_f1", "micro_f1", "mae", "pearson")
# Metrics where a smaller value is the better one.
LOWER_IS_BETTER = frozenset({"loss", "mae", "mse"})

# Columns of the final metrics table, in this order: (metrics.json key, heading). Only the columns
# some run has are shown.
TABLE_COLUMNS = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("micro_f1", "micro-F1"),
    ("f1", "F1"),
    ("auc", "ROC-AUC"),
    ("mae", "MAE"),
    ("mse", "MSE"),
    ("pearson", "Pearson"),
    ("spearman", "Spearman"),
    ("within_one", "within ±1"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("loss", "loss"),
    ("num_examples", "examples"),
)
METRIC_NAMES = dict(TABLE_COLUMNS)
# Config values worth seeing next to a run's results; empty ones are left out.
KEY_CONFIG = (
    "task.type",
    "task.labels",
    "model.encoder",
    "model.pretrained_dir",
    "model.hub_encoder",
    "model.vocab_path",
    "model.freeze_encoder",
    "model.pooling",
    "model.head_hidden_size",
    "model.head_dropout_rate",
    "data.source",
    "data.path",
    "data.tfds_name",
    "data.text_pair_column",
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
# task.labels in the config table: at most this many names, or this many characters.
_SHOWN_LABELS, _SHOWN_LABEL_CHARS = 10, 80
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


class ReportError(ValueError):
    """A run directory cannot be reported on; the message names the path and what is missing."""


def confusion_pixels(num_classes: int) -> tuple[int, int]:
    """(width, height) of the confusion matrix of `num_classes` classes; the module docstring gives the rule."""
    if num_classes <= 2:
        width, height = FIGURE_SIZES["confusion_matrix.png"]
        return round(width * DPI), round(height * DPI)
    cell = _CELL_PIXELS if num_classes <= ANNOTATED_CLASSES else _SMALL_CELL_PIXELS
    grid = min(num_classes * cell, _MAX_GRID_PIXELS)
    return max(500, grid + _MARGIN_PIXELS[0]), max(450, grid + _MARGIN_PIXELS[1])


def pixel_size(figure_name: str, num_classes: int | None = None) -> tuple[int, int]:
    """(width, height) in pixels of the PNG written as `figure_name`.

    `num_classes`: for confusion_matrix.png, the classes of a multiclass run (2 or None: the binary size).
    """
    if figure_name == "confusion_matrix.png" and num_classes is not None:
        return confusion_pixels(num_classes)
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


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_value(config: dict, dotted_key: str):
    value = config
    for part in dotted_key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def infer_task_type(metrics: dict) -> str:
    """The task type that produced `metrics` (for a run without config.json): by what its splits hold."""
    for split in ("validation", "test"):
        results = metrics.get(split)
        if not isinstance(results, dict):
            continue
        confusion = results.get("confusion_matrix")
        if "per_class" in results or (isinstance(confusion, dict) and "counts" in confusion):
            return "multiclass"
        if "per_label" in results or "micro_f1" in results:
            return "multilabel"
        if "scatter" in results or "pearson" in results:
            return "regression"
    return "binary"


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

    @property
    def task_type(self) -> str:
        """config.json's task.type; binary for a config from before task types; inferred without a config."""
        configured = _config_value(self.config, "task.type")
        if isinstance(configured, str) and configured:
            return configured
        return "binary" if self.config else infer_task_type(self.metrics)

    @property
    def label_names(self) -> list[str]:
        """The label names in output order: config.json's task.labels, else the confusion matrix's ([] if none)."""
        configured = _config_value(self.config, "task.labels")
        if isinstance(configured, list) and configured:
            return [str(name) for name in configured]
        for split in self.splits():
            confusion = self.metrics[split].get("confusion_matrix")
            if isinstance(confusion, dict) and isinstance(confusion.get("labels"), list):
                return [str(name) for name in confusion["labels"]]
        return []

    def main_metric(self) -> str | None:
        """The metric of the curves' second panel: the first of MAIN_METRICS in the events (else in metrics.json)."""
        for tags in (set(self.train) | set(self.validation), {k for s in self.splits() for k in self.metrics[s]}):
            for metric in MAIN_METRICS:
                if metric in tags:
                    return metric
        return None

    def splits(self) -> list[str]:
        """Evaluated splits in metrics.json, validation first."""
        return [split for split in ("validation", "test") if isinstance(self.metrics.get(split), dict)]

    def figure_split(self, choice: str = "auto") -> str:
        """The split the confusion matrix, ROC curve, scatter and per-label figures show."""
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


def _new_figure(figure_name: str, pixels: tuple[int, int] | None = None) -> Figure:
    """A figure of FIGURE_SIZES[figure_name], or of `pixels` (width, height)."""
    size = FIGURE_SIZES[figure_name]
    if pixels is not None:
        # Agg truncates the canvas to whole pixels: a quarter pixel more keeps float error from losing one.
        size = ((pixels[0] + 0.25) / DPI, (pixels[1] + 0.25) / DPI)
    # Constrained layout fits labels inside the fixed canvas (bbox_inches='tight' would resize it).
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _add_epoch_axis(axes, steps_per_epoch: int) -> None:
    if steps_per_epoch:
        top = axes.secondary_xaxis(
            "top", functions=(lambda step: step / steps_per_epoch, lambda epoch: epoch * steps_per_epoch)
        )
        top.set_xlabel("epoch")


def _metric_name(metric: str | None) -> str:
    return METRIC_NAMES.get(metric, metric) if metric else "no metric"


def _short(name: str) -> str:
    """A class or label name cut to fit a figure axis: its start and end around an ellipsis."""
    if len(name) <= _AXIS_NAME_CHARS:
        return name
    tail = (_AXIS_NAME_CHARS - 1) // 3
    return name[: _AXIS_NAME_CHARS - 1 - tail] + "…" + name[len(name) - tail :]


def _axis_names(names: list[str]) -> list[str]:
    """Names for a figure axis: cut to fit, and numbered by output position when cutting makes two alike."""
    shown = [_short(name) for name in names]
    if len(set(shown)) < len(shown):
        shown = [name if name == full else f"{index}: {name}" for index, (name, full) in enumerate(zip(shown, names))]
    return shown


def plot_curves(run: Run, path: str) -> None:
    """Loss and the main metric against steps: training (per logging window), validation, final test."""
    figure = _new_figure("curves.png")
    metric = run.main_metric()
    for axes, tag in zip(figure.subplots(1, 2), ("loss", metric)):
        if tag is None:
            axes.text(0.5, 0.5, "no metric besides the loss in the events", ha="center", va="center")
            axes.set_axis_off()
            continue
        name = _metric_name(tag)
        steps, values = _series(run.train, tag)
        if len(steps):
            axes.plot(steps, values, label="train", color="tab:blue", alpha=0.8)
        steps, values = _series(run.validation, tag)
        if len(steps):
            axes.plot(steps, values, "o-", label="validation", color="tab:orange")
        steps, values = _series(run.test, tag)
        if len(steps):
            axes.plot(steps[-1:], values[-1:], "*", markersize=14, label="test (final)", color="tab:green")
        axes.set_xlabel("step")
        axes.set_ylabel(name)
        better = " (lower is better)" if tag in LOWER_IS_BETTER and tag != "loss" else ""
        axes.set_title(f"{run.name}: {name}{better}")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
        _add_epoch_axis(axes, run.steps_per_epoch)
    _save(figure, path)


def _is_class_matrix(confusion) -> bool:
    """Whether a metrics.json confusion_matrix is a multiclass one ({"labels", "counts"})."""
    return isinstance(confusion, dict) and isinstance(confusion.get("counts"), list)


def plot_confusion_matrix(run: Run, split: str, path: str) -> None:
    """The binary 2 x 2 matrix at threshold 0.5, or the multiclass N x N one (rows = true class)."""
    confusion = run.metrics[split]["confusion_matrix"]
    if _is_class_matrix(confusion):
        _plot_class_confusion(run, split, confusion, path)
        return
    matrix = np.array(
        [
            [confusion["true_negatives"], confusion["false_positives"]],
            [confusion["false_negatives"], confusion["true_positives"]],
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
    names = run.label_names
    classes = _axis_names(names) if len(names) == 2 else ["negative", "positive"]
    axes.set_xticks([0, 1], classes)
    axes.set_yticks([0, 1], classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{run.name}: {split} (threshold 0.5)")
    _save(figure, path)


def _plot_class_confusion(run: Run, split: str, confusion: dict, path: str) -> None:
    """N x N counts coloured by the share of each true class's row; counts and shares written up to 12 classes."""
    names = [str(name) for name in confusion.get("labels") or []]
    matrix = np.rint(np.array(confusion["counts"], dtype=np.float64)).astype(np.int64)
    size = matrix.shape[0]
    if len(names) != size:  # No names recorded: number the classes.
        names = [str(index) for index in range(size)]
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    width, height = confusion_pixels(size)
    figure = _new_figure("confusion_matrix.png", (width, height))
    axes = figure.subplots()
    image = axes.imshow(100 * row_share, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(image, ax=axes, label="% of the true class", shrink=min(1.0, 0.5 + 0.05 * size))
    if size <= ANNOTATED_CLASSES:
        for (row, column), count in np.ndenumerate(matrix):
            share = row_share[row, column]
            axes.text(
                column,
                row,
                f"{count}\n{100 * share:.1f}%",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share > 0.5 else "black",
            )
    # Tick names in points: at most 9, and no taller than ~70% of a cell.
    cell_pixels = min(_CELL_PIXELS if size <= ANNOTATED_CLASSES else _SMALL_CELL_PIXELS, _MAX_GRID_PIXELS / size)
    fontsize = max(4.0, min(9.0, 0.7 * cell_pixels * 72 / DPI))
    shown = _axis_names(names)
    upright = all(len(name) <= 4 for name in shown)
    axes.set_xticks(range(size), shown, rotation=0 if upright else 90, fontsize=fontsize)
    axes.set_yticks(range(size), shown, fontsize=fontsize)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = run.metrics[split].get("accuracy")
    title = f"{run.name}: {split}, {size} classes"
    axes.set_title(title + (f" (accuracy {accuracy:.4f})" if _is_number(accuracy) else ""))
    _save(figure, path)


def _has_roc(results: dict) -> bool:
    roc = results.get("roc_curve")
    return isinstance(roc, dict) and bool(roc.get("fpr")) and _is_number(results.get("auc"))


def _plot_roc(axes, run: Run, split: str, color: str | None = None) -> None:
    results = run.metrics[split]
    roc = results["roc_curve"]
    axes.plot(roc["fpr"], roc["tpr"], color=color, label=f"{run.name} {split} (AUC {results['auc']:.4f})")
    counts = results.get("confusion_matrix")
    if isinstance(counts, dict) and "true_positives" in counts:
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


def plot_scatter(run: Run, split: str, path: str) -> None:
    """Regression: predicted against true values (metrics.json's sample of them), with y = x."""
    results = run.metrics[split]
    true = np.asarray(results["scatter"]["true"], dtype=np.float64)
    predicted = np.asarray(results["scatter"]["predicted"], dtype=np.float64)
    figure = _new_figure("scatter.png")
    axes = figure.subplots()
    axes.scatter(true, predicted, s=10, alpha=0.35 if len(true) > 300 else 0.7, edgecolors="none", label="examples")
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    pad = 0.05 * (high - low) or 0.5
    bounds = (low - pad, high + pad)
    axes.plot(bounds, bounds, "--", color="grey", linewidth=1, label="y = x")
    axes.set_xlim(*bounds)
    axes.set_ylim(*bounds)
    axes.set_aspect("equal")
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    figures = [
        f"{label} {results[key]:.3f}"
        for key, label in (("pearson", "Pearson"), ("spearman", "Spearman"), ("mae", "MAE"))
        if _is_number(results.get(key))
    ]
    axes.set_title(f"{run.name}: {split}, {len(true)} points\n{', '.join(figures)}", fontsize="medium")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    _save(figure, path)


def _in_label_order(names: list[str], order: list[str]) -> list[str]:
    """`names` (metrics.json keys, sorted when written) in output order when `order` holds them all."""
    return [name for name in order if name in names] if set(names) <= set(order) else list(names)


def plot_per_label(run: Run, split: str, path: str) -> None:
    """Multilabel: each label's F1 (at the run's threshold) and ROC-AUC as bars."""
    results = run.metrics[split]
    per_label = results["per_label"]
    names = _in_label_order(list(per_label), run.label_names)
    positions = np.arange(len(names))
    figure = _new_figure("per_label.png")
    axes = figure.subplots()
    bars = (("f1", "F1", -0.2), ("auc", "ROC-AUC", 0.2))
    for key, label, offset in bars:
        values = [per_label[name].get(key, np.nan) for name in names]
        axes.bar(positions + offset, np.asarray(values, dtype=np.float64), 0.4, label=label)
    shown = _axis_names(names)
    upright = len(names) <= 8 and all(len(name) <= 10 for name in shown)
    fontsize = max(4.0, min(9.0, 600 / max(len(names), 1)))
    axes.set_xticks(positions, shown, rotation=0 if upright else 90, fontsize=fontsize)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("score")
    threshold = _config_value(run.config, "task.threshold")
    at = f" at threshold {threshold}" if _is_number(threshold) else ""
    averages = [
        f"{METRIC_NAMES[key]} {results[key]:.4f}" for key in ("micro_f1", "macro_f1") if _is_number(results.get(key))
    ]
    axes.set_title(f"{run.name}: per label, {split} (F1{at}; {', '.join(averages) or 'no averages'})")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(figure, path)


def plot_split_figures(run: Run, split: str, run_dir: str) -> list[tuple[str, str]]:
    """Writes the figures of `split` that the run's type and metrics.json allow: [(file name, title)];
    titles as they read inside a sentence."""
    results = run.metrics[split]
    plots = []
    confusion = results.get("confusion_matrix")
    if _is_class_matrix(confusion) or (isinstance(confusion, dict) and "true_positives" in confusion):
        plots.append(("confusion_matrix.png", "confusion matrix", plot_confusion_matrix))
    if _has_roc(results):
        plots.append(("roc_curve.png", "ROC curve", plot_roc))
    scatter = results.get("scatter")
    if isinstance(scatter, dict) and scatter.get("true") and len(scatter["true"]) == len(scatter.get("predicted", [])):
        plots.append(("scatter.png", "predicted against true values", plot_scatter))
    if isinstance(results.get("per_label"), dict) and results["per_label"]:
        plots.append(("per_label.png", "per-label F1 and ROC-AUC", plot_per_label))
    for file_name, _, plot in plots:
        plot(run, split, os.path.join(run_dir, file_name))
    return [(file_name, title) for file_name, title, _ in plots]


def _plot_metric_bars(axes, runs: list[Run], metrics: dict[str, str | None]) -> None:
    """Each run's final main metric (metrics.json) on each evaluated split: in the run's colour,
    validation hatched and light, test solid."""
    shared = len(set(metrics.values())) == 1
    width = 0.38
    styles = {"validation": {"alpha": 0.55, "hatch": "//"}, "test": {"alpha": 1.0, "hatch": None}}
    for index, run in enumerate(runs):
        for offset, split in ((-width / 2, "validation"), (width / 2, "test")):
            value = run.metrics[split].get(metrics[run.name]) if split in run.splits() else None
            if _is_number(value):
                bars = axes.bar(
                    [index + offset], [float(value)], width, facecolor=f"C{index}", edgecolor="white", **styles[split]
                )
                axes.bar_label(bars, fmt="%.3f", fontsize="small")
    for split, style in styles.items():  # Legend entries for the splits, in no run's colour.
        axes.bar([0], [0], 0, facecolor="grey", edgecolor="white", label=split, **style)

    def label(run: Run) -> str:
        metric = metrics[run.name]
        if shared:
            return run.name
        return f"{run.name}\n({_metric_name(metric)}{', lower is better' if metric in LOWER_IS_BETTER else ''})"

    axes.set_xticks(range(len(runs)), [label(run) for run in runs])
    metric = next(iter(metrics.values())) if shared else None
    if metric:
        better = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        axes.set_title(f"final {_metric_name(metric)}{better}")
        axes.set_ylabel(_metric_name(metric))
    else:
        axes.set_title("final main metric of each run")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize="small")


def plot_comparison(runs: list[Run], split_choice: str, path: str) -> str:
    """Loss, the main metric and a third panel of several runs; x in epochs when every run knows them.

    Returns what the third panel shows: "roc" (every run binary with a ROC curve) or "bars".
    """
    figure = _new_figure("comparison.png")
    loss_axes, metric_axes, third_axes = figure.subplots(1, 3)
    in_epochs = all(run.steps_per_epoch for run in runs)
    metrics = {run.name: run.main_metric() for run in runs}
    shared = len(set(metrics.values())) == 1
    for index, run in enumerate(runs):
        color = f"C{index}"
        scale = run.steps_per_epoch if in_epochs else 1
        for axes, tag in ((loss_axes, "loss"), (metric_axes, metrics[run.name])):
            if tag is None:
                continue
            label = run.name if axes is loss_axes or shared else f"{run.name} {_metric_name(tag)}"
            steps, values = _series(run.train, tag)
            if len(steps):
                axes.plot(steps / scale, values, "--", color=color, alpha=0.6, label=f"{label} train")
            steps, values = _series(run.validation, tag)
            if len(steps):
                axes.plot(steps / scale, values, "o-", color=color, label=f"{label} validation")
    metric_name = _metric_name(next(iter(metrics.values()))) if shared else "main metric (see legend)"
    for axes, name in ((loss_axes, "loss"), (metric_axes, metric_name)):
        axes.set_xlabel("epoch" if in_epochs else "step")
        axes.set_ylabel(name)
        axes.set_title(name)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    splits = {run.name: run.figure_split(split_choice) for run in runs}
    if all(run.task_type == "binary" and _has_roc(run.metrics[splits[run.name]]) for run in runs):
        for index, run in enumerate(runs):
            _plot_roc(third_axes, run, splits[run.name], f"C{index}")
        _finish_roc_axes(third_axes, "ROC (dots: threshold 0.5)")
        kind = "roc"
    else:
        _plot_metric_bars(third_axes, runs, metrics)
        kind = "bars"
    _save(figure, path)
    return kind


# ----- report.md -----


def _format(key: str, value) -> str:
    if key == "num_examples":
        return str(int(value))
    return f"{float(value):.4f}"


def _cell(text) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_columns(runs: list[Run]) -> list[tuple[str, str]]:
    """The TABLE_COLUMNS that some run has a number for, on some split."""
    present = set()
    for run in runs:
        for split in run.splits():
            present.update(key for key, value in run.metrics[split].items() if _is_number(value))
    return [(key, heading) for key, heading in TABLE_COLUMNS if key in present]


def metrics_table(runs: list[Run]) -> list[str]:
    """Markdown rows: one per run and evaluated split, numbers from metrics.json ("n/a": the run has none)."""
    columns = table_columns(runs)
    headings = ["run", "split", "step", *(heading for _, heading in columns)]
    lines = ["| " + " | ".join(headings) + " |", "|" + " --- |" * len(headings)]
    for run in runs:
        for split in run.splits():
            results = run.metrics[split]
            cells = [run.name, split, str(run.metrics.get("step", ""))]
            cells += [_format(key, results[key]) if _is_number(results.get(key)) else "n/a" for key, _ in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _per_class(results: dict) -> tuple[str, dict]:
    """("class", per_class) of multiclass or ("label", per_label) of multilabel results; ("", {}): neither."""
    for key, kind in (("per_class", "class"), ("per_label", "label")):
        if isinstance(results.get(key), dict) and results[key]:
            return kind, results[key]
    return "", {}


def class_table(run: Run, split: str) -> list[str]:
    """Markdown rows of a multiclass run's per-class or a multilabel run's per-label results ([] if none)."""
    kind, rows = _per_class(run.metrics[split])
    if not rows:
        return []
    columns = [("precision", "precision"), ("recall", "recall"), ("f1", "F1")]
    if any("auc" in values for values in rows.values()):
        columns.append(("auc", "ROC-AUC"))
    lines = [
        f"| {kind} | " + " | ".join(heading for _, heading in columns) + " | support |",
        "|" + " --- |" * (len(columns) + 2),
    ]
    for name in _in_label_order(list(rows), run.label_names):
        values = rows[name]
        cells = [_cell(name)]
        cells += [f"{values[key]:.4f}" if _is_number(values.get(key)) else "n/a" for key, _ in columns]
        support = values.get("support")
        cells.append(str(round(support)) if _is_number(support) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _shows(config: dict, dotted_key: str) -> bool:
    """Leaves out values that the rest of the config makes irrelevant."""
    if dotted_key == "data.tfds_name":
        return not _config_value(config, "data.path")
    if dotted_key == "train.epochs":  # train.steps > 0 overrides it.
        return not _config_value(config, "train.steps")
    if dotted_key in ("train.steps", "data.max_examples"):  # 0 = not set.
        return bool(_config_value(config, dotted_key))
    return True


def _short_labels(names: list) -> str:
    """task.labels for the config table: every name, or the first ones and how many there are."""
    text = ", ".join(str(name) for name in names)
    if len(names) <= _SHOWN_LABELS and len(text) <= _SHOWN_LABEL_CHARS:
        return text
    shown = []
    for name in names[:_SHOWN_LABELS]:
        if len(", ".join([*shown, str(name)])) > _SHOWN_LABEL_CHARS - 20:
            break
        shown.append(str(name))
    return f"{', '.join(shown)}, … ({len(names)} labels)"


def config_rows(run: Run) -> list[tuple[str, str]]:
    """(key, value) of KEY_CONFIG for the run's config table; empty values left out."""
    if not run.config:
        return []
    rows = []
    for key in KEY_CONFIG:
        if not _shows(run.config, key):
            continue
        value = _config_value(run.config, key)
        if key == "task.type" and value is None:
            value = f"{run.task_type} (config.json from before task types)"
        elif key == "task.labels" and isinstance(value, list):
            value = _short_labels(value)
        if value not in (None, ""):
            rows.append((key, str(value)))
    return rows


def _config_cell(value: str) -> str:
    """A config value inside a Markdown code span in a table cell."""
    return value.replace("|", "/").replace("`", "'")


def _run_section(run: Run, figures: dict) -> list[str]:
    metrics = run.metrics
    step, steps_per_epoch = metrics.get("step"), run.steps_per_epoch
    summary = f"`{run.path}`: {run.task_type} task, step {step}"
    if steps_per_epoch and step is not None:
        summary += f" ({step / steps_per_epoch:.2f} epochs of {steps_per_epoch} steps)"
    if "examples_trained" in metrics:
        summary += f", {metrics['examples_trained']:,} examples trained"
    lines = [f"## Run `{run.name}`", "", summary + ".", ""]
    lines += [f"![{run.name}: loss and {_metric_name(run.main_metric())}]({figures['curves']})", ""]
    split, split_figures = figures["split"], figures["split_figures"]
    if split_figures:
        caption = " and ".join(title for _, title in split_figures)
        lines += [
            f"{caption[0].upper()}{caption[1:]} on the {split} split:",
            "",
            " ".join(f"![{run.name}: {title}]({link})" for link, title in split_figures),
            "",
        ]
    table = class_table(run, split)
    if table:
        lines += [f"Per-{_per_class(run.metrics[split])[0]} results on the {split} split:", "", *table, ""]
    rows = config_rows(run)
    if rows:
        lines += ["| config | value |", "| --- | --- |"]
        lines += [f"| `{key}` | `{_config_cell(value)}` |" for key, value in rows]
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
    if any(run.task_type == "multilabel" for run in runs):
        lines += ["Multilabel ROC-AUC is the mean of the labels' AUCs.", ""]
    if len(runs) > 1:
        kind = plot_comparison(runs, split, os.path.join(output_dir, "comparison.png"))
        split_text = "test (else validation)" if split == "auto" else split
        third = (
            f"ROC curves on each run's {split_text} split."
            if kind == "roc"
            else "Bars: each run's final main metric on each evaluated split."
        )
        lines += [
            "## Comparison",
            "",
            f"Dashed: training (per logging window); solid: validation. {third}",
            "",
            "![comparison](comparison.png)",
            "",
        ]
    for run in runs:
        run_dir = os.path.join(output_dir, run.name)
        tf.io.gfile.makedirs(run_dir)
        figure_split = run.figure_split(split)
        plot_curves(run, os.path.join(run_dir, "curves.png"))
        written = plot_split_figures(run, figure_split, run_dir)
        # Relative links, so the report directory can be moved or published as a whole.
        figures = {
            "split": figure_split,
            "curves": f"{run.name}/curves.png",
            "split_figures": [(f"{run.name}/{file_name}", title) for file_name, title in written],
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


def cli() -> None:
    """The console script's entry point (setup.py)."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    cli()
