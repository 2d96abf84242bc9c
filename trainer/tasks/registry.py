"""Tasks by `task.type`: the one place that lists them.

Adding a task is a `Task` subclass (trainer/tasks/base.py) plus one line
here; BUILD.md walks through it.
"""

from typing import Any

from trainer.models import registry as encoder_registry
from trainer.schema import ConfigError
from trainer.tasks.base import Task
from trainer.tasks.classification import BinaryClassificationTask, MulticlassClassificationTask
from trainer.tasks.multilabel import MultilabelClassificationTask
from trainer.tasks.regression import RegressionTask

TASKS: dict[str, type[Task]] = {
    "binary": BinaryClassificationTask,
    "multiclass": MulticlassClassificationTask,
    "regression": RegressionTask,
    "multilabel": MultilabelClassificationTask,
}


def task_class(name: str) -> type[Task]:
    """The task registered as `name`; raises ConfigError listing the others."""
    if name not in TASKS:
        raise ConfigError(f"--config.task.type={name!r}: expected one of {', '.join(TASKS)}.")
    return TASKS[name]


def build_task(experiment: Any) -> Task:
    """The configured task on the configured encoder family, resolved and checked for this run."""
    kind = task_class(experiment.task.type)
    encoder = encoder_registry.resolve(experiment.model, experiment.data.seq_length)
    return kind(encoder, experiment.model, experiment.data, experiment.task)
