"""Config validation messages name the key at fault."""

import pytest

from trainer import config as config_lib


def valid():
    return config_lib.default_config()


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.batch_size", 0, r"--config.train.batch_size=0: must be positive"),
        ("data.seq_length", -4, r"--config.data.seq_length=-4: must be positive"),
        ("train.learning_rate", 0.0, r"--config.train.learning_rate=0.0: must be > 0"),
        ("data.validation_fraction", 1.5, r"--config.data.validation_fraction=1.5: must be in \[0, 1\)"),
        ("model.encoder", "gpt", r"--config.model.encoder='gpt': expected one of bert, hub"),
        ("data.source", "parquet", r"--config.data.source='parquet': expected one of"),
        ("train.steps", -1, r"--config.train.steps=-1: must be >= 0"),
    ],
)
def test_bad_values_are_named(key, value, message):
    config = valid()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def test_hub_needs_both_handles():
    config = valid()
    config.model.encoder = "hub"
    config.model.hub_encoder = "/models/encoder"
    with pytest.raises(config_lib.ConfigError, match="hub_preprocessor"):
        config_lib.validate(config)


def test_random_encoder_needs_vocab():
    config = valid()
    config.model.pretrained_dir = ""
    with pytest.raises(config_lib.ConfigError, match="--config.model.vocab_path"):
        config_lib.validate(config)


def test_heads_must_divide_hidden_size():
    config = valid()
    config.model.pretrained_dir = ""
    config.model.vocab_path = "vocab.txt"
    config.model.bert.num_heads = 5
    with pytest.raises(config_lib.ConfigError, match="not divisible by --config.model.bert.num_heads=5"):
        config_lib.validate(config)


def test_defaults_are_valid():
    config_lib.validate(valid())
