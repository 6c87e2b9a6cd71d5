"""Hyperparameter sweeps: traced keys share one vmapped program, the others run one program each.

``--sweep lr=1e-3,3e-4 --sweep d_target=0.01,0.1 --seeds 5`` trains the product of the values (4
points) times the seeds (20 runs) as one leading axis of one compiled program: the swept values are
inputs of the program, not constants baked into it.

The contract an algorithm meets for a key to be swept this way (a *traced* key):

1. The learner class lists the key in its ``sweepable`` class attribute (a tuple of config field names).
2. The learner reads the key only as a number in JAX arithmetic: never in Python control flow
   (``if cfg.clip > 0``), in shapes or sizes, or in anything converted to a Python number
   (``float(cfg.lr)``, ``max(1, cfg.x)``). Optax accepts array-valued learning rates, clip norms etc.
3. Building the learner from a config (``LearnerClass(config)``) may read the key (e.g. to build the
   optimiser): inside the program the runner rebuilds the learner with a config whose traced fields
   hold the run's values (:func:`bind`), under ``jax.ensure_compile_time_eval`` so that everything that
   does not depend on them (envs, network modules) is built exactly as outside.

Keys that change shapes or the program's structure (``hidden_dim``, ``num_envs``, ``recurrent``,
``epochs``: any int, bool or str field not declared traced) run one compiled program per value, one
after another. A float key the algorithm does not declare is rejected: it is probably read in Python
control flow, and silently compiling one program per value would hide a missing declaration.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jmarl.config import ConfigError, field_types, parse_value
from jmarl.registry import config_class, learner_class

UNSWEEPABLE = ("algo", "env")


def traced_keys(algo: str) -> tuple[str, ...]:
    """The config keys ``algo`` declares sweepable inside one program."""
    return tuple(getattr(learner_class(algo), "sweepable", ()))


def parse_sweeps(algo: str, items: Sequence[str]) -> dict[str, tuple]:
    """``["lr=1e-3,3e-4", "hidden_dim=32,64"]`` -> {"lr": (0.001, 0.0003), "hidden_dim": (32, 64)}."""
    cls = config_class(algo)
    sweeps: dict[str, tuple] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--sweep expects KEY=V1,V2,..., got {item!r}")
        key, text = (s.strip() for s in item.split("=", 1))
        if key in UNSWEEPABLE:
            raise ConfigError(f"{key} cannot be swept; compare algorithms or envs with experiments/compare.py")
        if key in sweeps:
            raise ConfigError(f"--sweep {key} given twice; list all its values in one --sweep {key}=V1,V2,...")
        values = tuple(parse_value(cls, key, v.strip()) for v in text.split(",") if v.strip())
        if not values:
            raise ConfigError(f"--sweep {key} has no values; expected {key}=V1,V2,...")
        if len(set(values)) != len(values):
            raise ConfigError(f"--sweep {key} repeats a value: {text}")
        sweeps[key] = values
    return sweeps


def split(algo: str, sweeps: dict[str, tuple]) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(traced sweeps: one vmapped program, sequential sweeps: one program per value)."""
    types_ = field_types(config_class(algo))
    declared = traced_keys(algo)
    traced, sequential = {}, {}
    for key, values in sweeps.items():
        if key in declared:
            traced[key] = values
        elif types_[key] is float:
            raise ConfigError(
                f"{algo} does not declare {key} sweepable inside one program (declared: "
                f"{', '.join(declared) if declared else 'none'}); pass one value per run with --set {key}=..., "
                f"or make {algo} read it as a traced value (contract in jmarl/sweep.py)")
        else:
            sequential[key] = values
    return traced, sequential


def grid(sweeps: dict[str, tuple]) -> list[dict[str, Any]]:
    """Every combination of the swept values, the first key varying slowest; [{}] without sweeps."""
    keys = list(sweeps)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(sweeps[k] for k in keys))]


def point_name(point: dict[str, Any]) -> str:
    """Directory name of a sweep point, e.g. ``lr=0.001__d_target=0.1``."""
    return "__".join(f"{k}={v}" for k, v in point.items())


def hparam_dtype(config: Any, key: str) -> Any:
    """A traced key's dtype inside the program: float32 for float fields, int32 for int ones."""
    return np.float32 if field_types(type(config))[key] is float else np.int32


def hparam_arrays(config: Any, points: list[dict[str, Any]], seeds: int) -> dict[str, np.ndarray]:
    """{key: [points * seeds]} with run r = point r // seeds; float32 for float fields, int32 for int."""
    return {key: np.repeat(np.array([p[key] for p in points], dtype=hparam_dtype(config, key)), seeds)
            for key in points[0]}


def bind(algo: Any, hparams: dict[str, jax.Array]) -> Any:
    """The learner rebuilt with its traced keys set to ``hparams`` (scalars, traced inside a program)."""
    if not hparams:
        return algo
    with jax.ensure_compile_time_eval():
        return type(algo)(dataclasses.replace(algo.config, **hparams))
