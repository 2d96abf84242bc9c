"""Config validation messages name the key at fault; each rule lives once, where the knowledge is."""

import importlib
import logging

import pytest

from trainer import experiment
from trainer.data import sources
from trainer.data.input_plan import InputPlan
from trainer.schema import ConfigError
from trainer.tasks.registry import build_task

from conftest import REPO


def valid():
    return experiment.default_config()


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.batch_size", 0, r"--config.train.batch_size=0: must be positive"),
        ("data.seq_length", -4, r"--config.data.seq_length=-4: must be positive"),
        ("train.learning_rate", 0.0, r"--config.train.learning_rate=0.0: must be > 0"),
        ("data.validation_fraction", 1.5, r"--config.data.validation_fraction=1.5: must be in \[0, 1\)"),
        ("model.encoder", "gpt", r"--config.model.encoder='gpt': expected one of bert, albert, distilbert, hub"),
        ("task.type", "ranking", r"--config.task.type='ranking': expected one of binary"),
        ("data.source", "parquet", r"--config.data.source='parquet': expected one of"),
        ("train.steps", -1, r"--config.train.steps=-1: must be >= 0"),
        ("train.steps_per_loop", 0, r"--config.train.steps_per_loop=0: must be positive"),
        ("train.log_every_steps", -5, r"--config.train.log_every_steps=-5: must be positive"),
        ("train.checkpoint_every_steps", 0, r"--config.train.checkpoint_every_steps=0: must be positive"),
        ("train.keep_checkpoints", 0, r"--config.train.keep_checkpoints=0: must be positive"),
        ("eval.batch_size", -8, r"--config.eval.batch_size=-8: must be positive"),
        ("data.num_buckets", 0, r"--config.data.num_buckets=0: must be positive"),
        ("data.num_buckets", 200, r"--config.data.num_buckets=200 exceeds --config.data.seq_length=128"),
        ("data.seq_length", 2, r"--config.data.seq_length=2: needs room for \[CLS\], \[SEP\] and a token"),
        ("data.max_examples", -1, r"--config.data.max_examples=-1: must be >= 0"),
        ("train.epochs", -1, r"--config.train.epochs=-1: must be >= 0"),
        ("train.eval_every_steps", -1, r"--config.train.eval_every_steps=-1: must be >= 0"),
        ("train.max_nan_skips", -1, r"--config.train.max_nan_skips=-1: must be >= 0"),
        ("train.learning_rate", -1e-5, r"--config.train.learning_rate=-1e-05: must be > 0"),
        ("train.learning_rate", float("nan"), r"--config.train.learning_rate=nan: must be > 0"),
        ("train.learning_rate", float("inf"), r"--config.train.learning_rate=inf: must be > 0"),
        ("train.clip_norm", 0.0, r"--config.train.clip_norm=0.0: must be > 0"),
        ("train.clip_norm", float("inf"), r"--config.train.clip_norm=inf: must be > 0"),
        ("train.weight_decay", -0.1, r"--config.train.weight_decay=-0.1: must be >= 0"),
        ("train.weight_decay", float("nan"), r"--config.train.weight_decay=nan: must be >= 0"),
        ("train.warmup_fraction", 1.0, r"--config.train.warmup_fraction=1.0: must be in \[0, 1\)"),
        ("data.validation_fraction", float("nan"), r"--config.data.validation_fraction=nan: must be in"),
        ("data.head_fraction", -0.5, r"--config.data.head_fraction=-0.5: must be in \[0, 1\]"),
        ("model.head_dropout_rate", 1.0, r"--config.model.head_dropout_rate=1.0: must be in \[0, 1\)"),
        ("model.head_hidden_size", -1, r"--config.model.head_hidden_size=-1: must be >= 0"),
        ("model.bert.dropout_rate", -0.1, r"--config.model.bert.dropout_rate=-0.1: must be in \[0, 1\)"),
        ("model.bert.num_layers", 0, r"--config.model.bert.num_layers=0: must be positive"),
        ("data.truncation", "middle", r"--config.data.truncation='middle': expected one of head, tail, head_tail"),
        ("train.precision", "float16", r"--config.train.precision='float16': expected one of"),
        ("train.nan_policy", "ignore", r"--config.train.nan_policy='ignore': expected one of stop, skip"),
        ("distribute.connect_timeout_seconds", 0, r"--config.distribute.connect_timeout_seconds=0: must be positive"),
    ],
)
def test_bad_values_are_named(key, value, message):
    config = valid()
    *sections, name = key.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[name] = value
    with pytest.raises(ConfigError, match=message):
        experiment.parse(config)


def test_hub_needs_both_handles():
    config = valid()
    config.model.encoder = "hub"
    config.model.hub_encoder = "/models/encoder"
    with pytest.raises(ConfigError, match="hub_preprocessor"):
        experiment.parse(config)


def test_random_encoder_needs_vocab():
    config = valid()
    config.model.pretrained_dir = ""
    with pytest.raises(ConfigError, match="--config.model.vocab_path"):
        experiment.parse(config)


def test_defaults_are_valid():
    experiment.parse(valid())


def smoke(vocab_path: str = "vocab.txt"):
    """A randomly initialised encoder: its sizes come from the config."""
    config = valid()
    config.model.pretrained_dir = ""
    config.model.vocab_path = vocab_path
    config.model.bert.max_position_embeddings = 64
    config.data.seq_length = 32
    return config


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"bert.num_heads": 5},
            r"--config.model.bert.hidden_size=768 is not divisible by --config.model.bert.num_heads=5",
        ),
        ({"bert.hidden_size": 32, "bert.num_heads": 3}, r"hidden_size=32 is not divisible by .*num_heads=3"),
        (
            {"encoder": "distilbert", "distilbert.max_position_embeddings": 16},
            r"seq_length=32 exceeds the encoder's 16 position embeddings \(--config.model.distilbert",
        ),
        ({}, None),
    ],
)
def test_the_encoder_family_checks_its_architecture_against_the_run(changes, message, vocab_path):
    """Heads and positions are the family's rules, checked when it is resolved for the run
    (random encoders from model.<family>, pretrained ones from their config.json)."""
    config = smoke(vocab_path)
    config.model.bert.max_position_embeddings = 40
    config.data.seq_length = 32
    for key, value in changes.items():
        *sections, name = key.split(".")
        node = config.model
        for section in sections:
            node = node[section]
        node[name] = value
    if message is None:
        build_task(experiment.parse(config))
        config.data.seq_length = 41
        message = r"--config.data.seq_length=41 exceeds the encoder's 40 position embeddings"
    with pytest.raises(ConfigError, match=message):
        build_task(experiment.parse(config))


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"train.nan_policy": "skip", "train.max_nan_skips": 0},
            r"nan_policy=skip with --config.train.max_nan_skips=0 never skips",
        ),
        ({"data.label_column": "text"}, r"text_column and --config.data.label_column are both 'text'"),
        ({"train.epochs": 0, "train.steps": 0}, r"train.epochs and --config.train.steps are both 0"),
    ],
)
def test_conflicting_values_are_named(changes, message):
    config = smoke()
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        experiment.parse(config)


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"source": "tfds", "path": "/data/aclImdb"},
            r"--config.data.source=tfds reads TFDS 'imdb_reviews', but --config.data.path=/data/aclImdb is set",
        ),
        ({"test_path": "test.csv"}, r"--config.data.test_path=test.csv: only csv and jsonl sources"),
    ],
)
def test_paths_that_do_not_fit_the_source_are_named_by_the_sources(changes, message):
    config = smoke()
    config.data.update(changes)
    with pytest.raises(sources.DataError, match=message):
        sources.resolve_source(experiment.parse(config).data)


def test_a_training_set_smaller_than_one_global_batch_is_named():
    with pytest.raises(sources.DataError, match=r"4 training examples do not fill one global batch of 8"):
        InputPlan.steps_per_epoch(4, 8)
    assert InputPlan.steps_per_epoch(17, 8) == 2


def test_seq_length_of_a_pretrained_encoder_is_checked_against_its_own_config():
    # The pretrained encoder's own config.json sets its positions, not model.bert.
    config = valid()
    config.model.bert.max_position_embeddings = 16
    build_task(experiment.parse(config))
    config.data.seq_length = 513
    with pytest.raises(
        ConfigError, match=r"seq_length=513 exceeds the encoder's 512 position embeddings \(.*config\.json"
    ):
        build_task(experiment.parse(config))


def test_freeze_encoder_works_with_every_encoder():
    # Not a conflict: a hub encoder is loaded with trainable=False.
    for encoder in ("bert", "hub"):
        config = valid()
        config.model.encoder = encoder
        config.model.hub_encoder, config.model.hub_preprocessor = "/models/encoder", "/models/preprocessor"
        config.model.freeze_encoder = True
        experiment.parse(config)


def test_eval_interval_beyond_the_run_is_a_warning(caplog):
    config = smoke()
    config.train.steps = 20
    config.train.eval_every_steps = 50
    with caplog.at_level(logging.WARNING, logger="absl"):
        experiment.parse(config)
    assert "--config.train.eval_every_steps=50 exceeds --config.train.steps=20" in caplog.text


def test_csv_source_with_test_file_is_valid():
    config = smoke()
    config.data.path, config.data.test_path = "train.csv", "test.csv"
    experiment.parse(config)


# What each named config needs from its user, as its docstring says.
_NAMED_CONFIG_NEEDS = {
    "albert_imdb": {"pretrained_dir": "/models/albert-base-v2"},
    "smoke": {"vocab_path": "/data/vocab.txt"},
    "albert_smoke": {"vocab_path": "/data/spiece.model"},
}


@pytest.mark.parametrize(
    "name", sorted(path.stem for path in (REPO / "configs").glob("*.py") if path.stem != "__init__")
)
def test_every_named_config_is_valid_given_what_it_documents_it_needs(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    needs = _NAMED_CONFIG_NEEDS.get(name, {})
    if needs:
        with pytest.raises(ConfigError, match="--config.model."):
            experiment.parse(config)
    for key, value in needs.items():
        config.model[key] = value
    experiment.parse(config)
    assert set(config.to_dict()) == set(experiment.default_config().to_dict())
