"""Configuration: frozen dataclasses with the papers' defaults, checked before anything compiles.

Every algorithm's config extends :class:`CommonConfig`. Keys are short and shared across algorithms
where the meaning is shared (``lr``, ``gamma``, ``num_envs``, ``hidden_dim``...). Field metadata
carries the allowed range, so one validator serves every algorithm and the CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A config value or name that is not allowed; the message says what is."""


# Integer fields become int32 values, shapes or counters inside the compiled program.
INT32_MAX = 2**31 - 1

# Order between two fields, checked wherever a config has both: (smaller, larger, why).
ORDERED_FIELDS = (
    ("eps_finish", "eps_start", "epsilon anneals from eps_start down to eps_finish"),
    ("batch_size", "buffer_size", "a batch is drawn from the replay buffer"),
    ("beta_min", "beta_max", "betas are clamped to [beta_min, beta_max]"),
    ("shared_layers", "num_layers", "actor and critic share their first shared_layers layers"),
)


def field(default: Any, low: float | None = None, high: float | None = None, *, low_open: bool = False,
          choices: tuple | None = None, doc: str = "", absent_means_default: bool = False) -> Any:
    """A dataclass field with its allowed range (``low``/``high`` inclusive unless ``low_open``).

    ``absent_means_default``: a run saved before the field existed ran as its default (the field only
    matters for what did not exist then, e.g. a new mixer's sizes), so resuming it is allowed."""
    meta = {"low": low, "high": high, "low_open": low_open, "choices": choices, "doc": doc,
            "absent_means_default": absent_means_default}
    return dataclasses.field(default=default, metadata=meta)


def defaults_of_later_fields(config: Any) -> dict[str, Any]:
    """The fields of ``config``'s class marked ``absent_means_default``, with their defaults: what a
    checkpoint whose stored config lacks them is taken to have run with."""
    return {f.name: f.default for f in dataclasses.fields(config) if f.metadata.get("absent_means_default")}


@dataclasses.dataclass(frozen=True)
class CommonConfig:
    """What every algorithm shares: env, budget, batch of parallel envs, evaluation cadence."""

    algo: str = field("", doc="algorithm name")
    env: str = field("", doc="environment name (envs.names())")
    total_steps: int = field(100_000, low=1, doc="env steps per seed (each env copy's step counts once)")
    num_envs: int = field(16, low=1, doc="parallel environments per seed")
    gamma: float = field(0.99, low=0.0, high=1.0, low_open=True, doc="discount")
    lr: float = field(5e-4, low=0.0, low_open=True, doc="learning rate")
    hidden_dim: int = field(128, low=1, doc="hidden units per layer")
    eval_every: int = field(10, low=1, doc="updates between greedy evaluations (= one compiled chunk)")
    eval_episodes: int = field(32, low=1, doc="greedy episodes per evaluation")


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


# Fields that name what is trained rather than how: set by their own options, never as hyperparameters.
NOT_HYPERPARAMETERS = ("algo", "env")


def suggest(word: str, choices: list[str]) -> str:
    """`` (did you mean ...?)`` with up to three close matches, case aside (``LAN`` -> ``lan``), or ""."""
    lower = {c.lower(): c for c in choices}
    close = [lower[m] for m in difflib.get_close_matches(word.lower(), list(lower), n=3, cutoff=0.5)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def type_name(tp: type) -> str:
    """``an int``, ``a float``: the type's name with its article, for messages."""
    name = getattr(tp, "__name__", str(tp))
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def hyperparameters(cls: type) -> list[str]:
    """The keys of ``cls`` that ``--set`` and ``--sweep`` accept, sorted."""
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in NOT_HYPERPARAMETERS)


def parse_value(cls: type, key: str, text: str) -> Any:
    """Turn a command-line string into the field's type, or raise ConfigError."""
    types_ = field_types(cls)
    if key in NOT_HYPERPARAMETERS:
        what = "algorithm" if key == "algo" else "environment"
        raise ConfigError(f"{key} is not a hyperparameter: the {what} is chosen by its own option")
    if key not in types_:
        valid = hyperparameters(cls)
        raise ConfigError(f"unknown hyperparameter {key!r}{suggest(key, valid)}; valid: {', '.join(valid)}")
    tp = types_[key]
    try:
        if tp is bool:
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if tp is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            value = float(text)
            if math.isnan(value):
                raise ValueError
            return value
        return tp(text)
    except ValueError:
        raise ConfigError(f"{key} must be {type_name(tp)}, got {text!r}") from None


def validate(config: Any) -> Any:
    """Check every field's type and range; return the config unchanged or raise ConfigError."""
    types_ = field_types(type(config))
    for f in dataclasses.fields(config):
        value, meta, tp = getattr(config, f.name), f.metadata, types_[f.name]
        if value is None:
            continue
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tp in (int, float, bool, str) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
            raise ConfigError(f"{f.name} must be {type_name(tp)}, got {value!r}")
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ConfigError(f"{f.name} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value < low or (meta.get("low_open") and value == low)):
            op = ">" if meta.get("low_open") else ">="
            raise ConfigError(f"{f.name} must be {op} {low}; got {value!r}")
        if high is not None and value > high:
            raise ConfigError(f"{f.name} must be <= {high}; got {value!r}")
        if tp is float and not math.isfinite(value):
            raise ConfigError(f"{f.name} must be a finite float; got {value!r}")
        if tp is int and high is None and value > INT32_MAX:
            raise ConfigError(f"{f.name} must be <= {INT32_MAX} (it is an int32 in the compiled program); "
                              f"got {value!r}")
    names = {f.name for f in dataclasses.fields(config)}
    for small, large, why in ORDERED_FIELDS:
        if {small, large} <= names and getattr(config, small) > getattr(config, large):
            raise ConfigError(f"{small} ({getattr(config, small)!r}) must be <= {large} "
                              f"({getattr(config, large)!r}): {why}")
    return config
