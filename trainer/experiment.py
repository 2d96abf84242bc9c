"""The experiment config as users edit it (a ConfigDict) and as the trainer takes it (an `Experiment`).

Named configs in `configs/` start from `default_config()` and change what
differs; every value can be overridden on the command line
(`--config.train.batch_size=64`). `parse()` checks every value against its
field's type and rule (trainer/config.py), the encoder family's and task's
own, and the rules that span keys, and returns the frozen `Experiment`.
"""

from collections.abc import Mapping
import dataclasses
from typing import Any

import ml_collections

from trainer import strategy as strategy_lib
from trainer.config import Experiment, check_combinations
from trainer.data import sources
from trainer.models import registry as encoder_registry
from trainer.schema import ConfigError, build, to_dict
from trainer.tasks import registry as task_registry


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
) -> Experiment:
    """Every check that can refuse a run before any work, and before TensorFlow forms a cluster.

    The config (`parse`), the cluster description that `strategy` will read
    (TF_CONFIG, or --worker_hosts/--task_index), the data paths (when the run
    `reads_data`) and the files the encoder family needs (vocabulary,
    pretrained directory, hub models). Raises a UserError naming the flag,
    key, file or variable at fault.
    """
    experiment = parse(config)
    strategy_lib.configure_cluster(strategy, worker_hosts, task_index)
    if reads_data:
        sources.resolve_source(experiment.data)
    encoder_registry.family_class(experiment.model.encoder).check_files(experiment.model)
    return experiment
