"""The experiment config as users edit it (a ConfigDict) and as the trainer takes it (an `Experiment`).

Named configs in `configs/` start from `default_config()` and change what
differs; every value can be overridden on the command line
(`--config.train.batch_size=64`). `parse()` checks every value against its
field's type and rule (trainer/config.py), the encoder family's and task's
own, and the rules that span keys, and returns the frozen `Experiment`.
"""

from collections.abc import Mapping
import dataclasses
import json
import os
from typing import Any

import ml_collections
import tensorflow as tf

from trainer import strategy as strategy_lib
from trainer.config import Experiment, check_combinations
from trainer.data import sources
from trainer.models import registry as encoder_registry
from trainer.schema import ConfigError, build, fixed_keys, to_dict
from trainer.tasks import registry as task_registry

# The named configs (configs/*.py), beside the trainer package in a checkout and when installed.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
_SAVED_CONFIG_LOADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saved_config.py")


def config_file_argument(value: str) -> str:
    """The config file behind a --config value: a path to a configs/*.py file, a named config
    (`minilm_imdb_long` = configs/minilm_imdb_long.py), or a run's config.json (loaded by
    trainer/saved_config.py, which `from_json` backs). ml_collections loads what this returns."""
    if value.endswith(".json"):
        return f"{_SAVED_CONFIG_LOADER}:{value}"
    named = os.path.join(CONFIGS_DIR, f"{value}.py")
    if os.sep not in value and not value.endswith(".py") and os.path.isfile(named):
        return named
    return value


def named_configs() -> list[str]:
    """The names --config accepts for configs/*.py."""
    return sorted(name[:-3] for name in os.listdir(CONFIGS_DIR) if name.endswith(".py") and name[0] != "_")


def from_json(path: str) -> ml_collections.ConfigDict:
    """The config a run recorded in its config.json, over today's defaults (keys added since keep
    their defaults). Raises ConfigError naming the file and the key it does not know."""
    try:
        with tf.io.gfile.GFile(path) as f:
            values = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config={path}: not a JSON config ({e}).") from None
    except tf.errors.OpError as e:
        raise ConfigError(f"--config={path}: cannot read it ({e.message}).") from None
    config = default_config()
    _check_known_keys(values, config, path, "")
    config.update(values)
    return config


def _check_known_keys(values: Any, defaults: Any, path: str, prefix: str) -> None:
    if not isinstance(values, Mapping) or not isinstance(defaults, Mapping | ml_collections.ConfigDict):
        return
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(f"--config={path}: unknown config key {prefix}{key} (written by another version?).")
        _check_known_keys(value, defaults[key], path, f"{prefix}{key}.")


def default_config() -> ml_collections.ConfigDict:
    """The full schema with its defaults (offline MiniLM on IMDb), one section per encoder family."""
    values = to_dict(Experiment)
    del values["model"]["architecture"]
    for name, architecture in encoder_registry.architectures().items():
        values["model"][name] = to_dict(architecture)
    return ml_collections.ConfigDict(values)


def parse(config: ml_collections.ConfigDict | Mapping[str, Any]) -> Experiment:
    """The checked, frozen experiment of a config; raises ConfigError naming the key at fault.

    Reads no file: the checks that need the vocabulary or the pretrained
    weights' config run when the encoder family is resolved for the run.
    """
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    model_values = dict(values.get("model") or {})
    architectures = {
        name: build(architecture, model_values.pop(name, None) or {}, f"model.{name}.", vocab_size=0)
        for name, architecture in encoder_registry.architectures().items()
    }
    experiment = build(Experiment, {**values, "model": model_values})
    family = encoder_registry.family_class(experiment.model.encoder)
    task = task_registry.task_class(experiment.task.type)
    best = experiment.train.best_metric.removeprefix("validation/")
    if best and best not in task.metric_names:
        raise ConfigError(
            f"--config.train.best_metric={experiment.train.best_metric!r}: a {experiment.task.type} task evaluates "
            f"{', '.join(f'validation/{name}' for name in task.metric_names)}."
        )
    model = dataclasses.replace(experiment.model, architecture=architectures.get(experiment.model.encoder))
    family.check_config(model)
    experiment = dataclasses.replace(experiment, model=model)
    check_combinations(experiment)
    return experiment


def validate(
    config: ml_collections.ConfigDict | Mapping[str, Any],
    strategy: str = "default",
    worker_hosts: str | None = None,
    task_index: int | None = None,
    reads_data: bool = True,
    trains: bool = True,
) -> Experiment:
    """Every check that can refuse a run before any work, and before TensorFlow forms a cluster.

    The config (`parse`), the cluster description that `strategy` will read
    (TF_CONFIG, or --worker_hosts/--task_index), the data paths (when the run
    `reads_data`) and the files the encoder family needs (vocabulary,
    pretrained directory, hub models), and what training a stream needs when
    the run `trains`. Raises a UserError naming the flag, key, file or
    variable at fault.
    """
    experiment = parse(config)
    strategy_lib.configure_cluster(strategy, worker_hosts, task_index)
    if reads_data:
        found = sources.resolve_source(experiment.data)
        if sources.is_streamed(experiment.data) and trains:
            _check_streaming(experiment, found)
        elif experiment.data.service_address:
            raise ConfigError(
                f"--config.data.service_address serves streamed input, and --config.data.path="
                f"{experiment.data.path} is read into memory: add --config.data.streaming=on."
            )
    encoder_registry.family_class(experiment.model.encoder).check_files(experiment.model)
    return experiment


# What TensorBoard's HParams tab shows of each run.
HPARAM_KEYS = (
    "task.type",
    "model.encoder",
    "model.pretrained_dir",
    "model.hub_encoder",
    "model.pooling",
    "model.freeze_encoder",
    "model.head_dropout_rate",
    "data.seq_length",
    "data.truncation",
    "data.num_buckets",
    "train.batch_size",
    "train.epochs",
    "train.steps",
    "train.learning_rate",
    "train.warmup_fraction",
    "train.weight_decay",
    "train.precision",
    "train.ema_decay",
    "train.layer_decay",
    "train.best_metric",
    "seed",
)


def hparams(values: Mapping[str, Any]) -> dict[str, Any]:
    """The HPARAM_KEYS of a config's values, flat."""
    flat = _flatten(values)
    return {key: flat[key] for key in HPARAM_KEYS if key in flat}


def _check_streaming(experiment: Experiment, file_format: str) -> None:
    data = experiment.data
    if not experiment.train.steps:
        raise ConfigError(
            f"--config.data.path={data.path} is streamed, and a stream's size is not known before it is read: "
            "set --config.train.steps (and --config.train.eval_every_steps for evaluations before the end)."
        )
    if data.max_examples:
        raise ConfigError("--config.data.max_examples caps in-memory sources; a streamed one reads what it is given.")
    if data.service_address:
        from trainer.data import service_client  # grpc: only for runs that use it.

        service_client.check_address(data.service_address)
    if data.service_address and file_format == "jsonl":
        raise ConfigError(
            "--config.data.service_address: JSON lines are parsed in Python, which the tf.data service cannot "
            "ship to its workers; use CSV or TFRecord shards (or prepared ones: python -m trainer.prepare)."
        )


def resume_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, list]:
    """What a resumed run changes of the config it recorded: {key: [recorded, current]}.

    Raises ConfigError, before the run writes anything, for a change the trained weights cannot take:
    the encoder and its architecture, the vocabulary, the task type and labels, how text becomes
    tokens (fields marked `fixed` in trainer/config.py). The rest (steps, evaluation cadence, the
    learning-rate schedule's length) apply from the resumed step on.
    """
    before, after = _flatten(recorded), _flatten(current)
    # Keys of one side only come from another version of the trainer: their defaults apply.
    changes = {key: [before[key], after[key]] for key in sorted(before.keys() & after.keys())}
    changes = {key: values for key, values in changes.items() if values[0] != values[1]}
    fixed = fixed_keys(Experiment) | {f"model.{name}." for name in encoder_registry.architectures()}
    refused = [key for key in changes if key in fixed or any(key.startswith(p) for p in fixed if p.endswith("."))]
    if refused:
        shown = "; ".join(f"{key}: {changes[key][0]!r} -> {changes[key][1]!r}" for key in refused)
        raise ConfigError(
            f"The run in this model_dir was trained with a different {', '.join(refused)} ({shown}); its "
            "checkpoints cannot continue under that change. Resume with the recorded values (rerun with "
            "--config=<model_dir>/config.json) or train into a new --model_dir."
        )
    return changes


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            # JSON gives lists where the config holds tuples.
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat
