"""Config schemas as frozen dataclasses: each field's default, meaning and rule in one place.

A schema class declares its fields with `option(default, help, rule=...,
choices=...)`. `to_dict` turns defaults into the plain dict that
ml_collections makes overridable on the command line; `build` turns such a
dict back into the dataclass, checking every value against its type and rule
and naming the `--config.<key>` at fault. Only this module knows how a value
is checked, so a new field is one line with its rule.
"""

from collections.abc import Callable, Mapping
import dataclasses
import math
import typing
from typing import Any

from trainer.errors import UserError

# What TensorFlow represents: integers become int64 tensors, floats float32 ones.
INT64_MAX = 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38


class ConfigError(UserError):
    """A config value is invalid; the message names the key and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """A test a value must pass, and the complaint when it does not."""

    test: Callable[[Any], bool]
    complaint: str


# `not x > 0` style tests: NaN fails every comparison, so it never passes a rule.
POSITIVE = Rule(lambda value: value > 0, "must be positive")
AT_LEAST_ZERO = Rule(lambda value: value >= 0, "must be >= 0")
ABOVE_ZERO = Rule(lambda value: value > 0 and math.isfinite(value), "must be > 0")
FINITE_AT_LEAST_ZERO = Rule(lambda value: value >= 0 and math.isfinite(value), "must be >= 0")
RATE = Rule(lambda value: 0 <= value < 1, "must be in [0, 1)")
UNIT_INTERVAL = Rule(lambda value: 0 <= value <= 1, "must be in [0, 1]")
FACTOR = Rule(lambda value: 0 < value <= 1, "must be in (0, 1]")


def option(
    default: Any, help: str, rule: Rule | None = None, choices: tuple[str, ...] | None = None, fixed: bool = False
) -> Any:
    """A schema field: its default, one line of meaning, and what values it allows. `fixed`: what the
    trained weights depend on (the encoder, the labels, how text becomes tokens); a resume that
    changes it is refused."""
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule, "choices": choices, "fixed": fixed})


def fixed_keys(schema: type, prefix: str = "") -> set[str]:
    """The dotted keys of `schema`'s fields marked `fixed`, nested sections included."""
    keys = set()
    for field in dataclasses.fields(schema):
        if _is_section(field):
            keys |= fixed_keys(field.default_factory, f"{prefix}{field.name}.")
        elif field.metadata.get("fixed"):
            keys.add(f"{prefix}{field.name}")
    return keys


def to_dict(schema: Any) -> dict[str, Any]:
    """The defaults of a schema class (or the values of an instance), nested sections as dicts.

    Fields without a default (filled in from elsewhere, such as a vocabulary's size) are left out.
    """
    if isinstance(schema, type):
        return {
            field.name: to_dict(field.default_factory) if _is_section(field) else field.default
            for field in dataclasses.fields(schema)
            if field.default is not dataclasses.MISSING or _is_section(field)
        }
    return dataclasses.asdict(schema)


def _is_section(field: dataclasses.Field) -> bool:
    return isinstance(field.default_factory, type) and dataclasses.is_dataclass(field.default_factory)


def build(schema: type, values: Mapping[str, Any], prefix: str = "", **fixed: Any) -> Any:
    """An instance of `schema` from `values`, every value checked; raises ConfigError naming the key.

    `fixed` gives fields that do not come from the config (and are not checked).
    """
    hints = typing.get_type_hints(schema)
    known = {field.name for field in dataclasses.fields(schema)}
    unknown = sorted(set(values) - known - set(fixed))
    if unknown:
        raise ConfigError(
            f"--config.{prefix}{unknown[0]}: unknown config key; expected one of {', '.join(sorted(known))}."
        )
    kwargs = dict(fixed)
    for field in dataclasses.fields(schema):
        if field.name in fixed:
            continue
        key = f"{prefix}{field.name}"
        if field.name not in values:
            if field.default is dataclasses.MISSING and not _is_section(field):
                raise ConfigError(f"--config.{key} is missing.")
            continue
        value = values[field.name]
        if _is_section(field):
            if not isinstance(value, Mapping):
                raise ConfigError(f"--config.{key}={_shown(value)}: expected a section of keys, not a single value.")
            kwargs[field.name] = build(field.default_factory, value, f"{key}.")
        else:
            kwargs[field.name] = check_value(key, value, hints[field.name], field.metadata)
    return schema(**kwargs)


def check_value(key: str, value: Any, kind: type, metadata: Mapping[str, Any]) -> Any:
    """`value` converted to `kind` if it passes the field's type, range and rule; raises ConfigError."""
    value = _typed(key, value, kind)
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"--config.{key}={_shown(value)}: expected one of {', '.join(choices)}.")
    rule = metadata.get("rule")
    if rule is not None and not rule.test(value):
        raise ConfigError(f"--config.{key}={value}: {rule.complaint}.")
    return value


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"--config.{key}={_shown(value)}: expected true or false.")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"--config.{key}={_shown(value)}: expected a whole number.")
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ConfigError(f"--config.{key}={_shown(value)}: beyond what a 64-bit integer holds.")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"--config.{key}={_shown(value)}: expected a number.")
        # Infinities and NaN pass here; each field's rule says whether it takes them.
        if abs(value) > FLOAT32_MAX and (isinstance(value, int) or math.isfinite(value)):
            raise ConfigError(f"--config.{key}={_shown(value)}: beyond what a 32-bit float holds.")
        return float(value)
    if kind == tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"--config.{key}={_shown(value)}: expected a list of strings.")
        for item in value:
            _typed(key, item, str)
        return tuple(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"--config.{key}={_shown(value)}: expected a string.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Bytes that are not UTF-8 reach Python from argv as lone surrogates.
            raise ConfigError(f"--config.{key}={_shown(value)}: not valid UTF-8.") from None
        return value
    return value


def _shown(value: Any) -> str:
    """`value` for a message: its repr, shortened (an integer of thousands of digits has none)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= 80 else f"{text[:77]}..."
