"""Encoder families by name: the one place that lists them.

Adding a family is a folder under trainer/models/ (its encoder, tokenizer,
weight converter and a `family.py` subclassing `EncoderFamily`) plus one line
here; BUILD.md walks through it.
"""

from typing import Any

from trainer.models.albert.family import AlbertFamily
from trainer.models.bert.family import BertFamily
from trainer.models.distilbert.family import DistilBertFamily
from trainer.models.family import EncoderFamily
from trainer.models.hub.family import HubFamily
from trainer.schema import ConfigError

FAMILIES: dict[str, type[EncoderFamily]] = {
    family.name: family for family in (BertFamily, AlbertFamily, DistilBertFamily, HubFamily)
}


def family_class(name: str) -> type[EncoderFamily]:
    """The family registered as `name`; raises ConfigError listing the others."""
    if name not in FAMILIES:
        raise ConfigError(f"--config.model.encoder={name!r}: expected one of {', '.join(FAMILIES)}.")
    return FAMILIES[name]


def architectures() -> dict[str, type]:
    """Config section name -> architecture schema, for the families that have one."""
    return {name: family.architecture for name, family in FAMILIES.items() if family.architecture is not None}


def resolve(model_config: Any, seq_length: int) -> EncoderFamily:
    """The configured family, resolved for a run: weights and vocabulary located, architecture checked."""
    return family_class(model_config.encoder)(model_config, seq_length)
