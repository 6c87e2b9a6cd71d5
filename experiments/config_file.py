"""``run.py --config FILE.toml``: a run described in a TOML file of your own.

    algo = "dpo"                 # --algo
    env = "stochastic_game"      # --env
    seeds = 5                    # --seeds
    seed = 0                     # --seed (the base seed)
    total_steps = 2e5            # --total-steps (integral floats such as 2e5 are fine)

    [set]                        # hyperparameters, as --set KEY=VALUE
    lr = 3e-4
    epochs = 10

    [sweep]                      # sweeps, as --sweep KEY=V1,V2
    d_target = [0.01, 0.1]

Every key is optional; the command line overrides the file (``--set lr=1e-3`` replaces ``[set] lr``, an
option given on the command line replaces the file's value). Values are read as ``--set`` reads them
(``jmarl.config.parse_value``). An unknown key, a missing or malformed file exits 2 with one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from jmarl.config import ConfigError, parse_value, suggest

TOP_LEVEL = ("algo", "env", "seeds", "seed", "total_steps")
TABLES = ("set", "sweep")


def as_integer(value: Any) -> int:
    """An int, or an integral float (``1e5``, ``"1e5"``); ValueError otherwise (bools, 2.5, nan, inf)."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    number = float(value)
    if not math.isfinite(number) or not number.is_integer():
        raise ValueError
    return int(number)


def integer(text: str) -> int:
    """argparse type of the integer options: ``1e5`` reads as 100000, as ``--set`` reads it; ``2.5`` is refused."""
    try:
        return as_integer(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int (1e5 is fine), got {text!r}") from None


def _text(value: Any) -> str:
    """A TOML value as ``--set`` would have received it."""
    if isinstance(value, (dict, list)):
        raise ValueError
    return str(value)


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    path: Path
    algo: str | None = None
    env: str | None = None
    seeds: int | None = None
    seed: int | None = None
    total_steps: int | None = None
    set: dict[str, Any] = dataclasses.field(default_factory=dict)
    sweep: dict[str, list] = dataclasses.field(default_factory=dict)

    def overrides(self, cls: type, args: argparse.Namespace) -> dict[str, Any]:
        """The file's hyperparameters (its budget included) as ``cls`` reads them, less the keys that the
        command line's ``--set`` or ``--sweep`` give."""
        given = {item.split("=", 1)[0].strip() for item in [*args.set, *args.sweep]}
        out = {}
        if self.total_steps is not None and "total_steps" not in given:
            out["total_steps"] = self.total_steps
        for key, value in self.set.items():
            if key in given:
                continue
            try:
                text = _text(value)
            except ValueError:
                raise ConfigError(f"{self.path}: [set] {key} must be one value, got {value!r}") from None
            out[key] = parse_value(cls, key, text)
        return out

    def sweeps(self, args: argparse.Namespace) -> list[str]:
        """The file's sweeps as ``--sweep`` items, less the keys that the command line gives."""
        given = {item.split("=", 1)[0].strip() for item in [*args.set, *args.sweep]}
        return [f"{key}={','.join(str(v) for v in values)}" for key, values in self.sweep.items() if key not in given]


def load_config_file(name: str) -> ConfigFile:
    """Read and check ``--config FILE``; raises ConfigError with one line."""
    path = Path(name)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"--config {name} {what}; it needs a TOML file (see docs/runner.md)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{name} is not valid TOML: {err}") from None
    valid = [*TOP_LEVEL, *TABLES]
    unknown = [key for key in data if key not in valid]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"{name}: unknown key {key!r}{suggest(key, valid)}; valid: {', '.join(valid)} "
                          f"(hyperparameters go in the [set] table)")
    values: dict[str, Any] = {}
    for key in ("algo", "env"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise ConfigError(f"{name}: {key} must be a name (a string), got {data[key]!r}")
            values[key] = data[key]
    for key in ("seeds", "seed", "total_steps"):
        if key in data:
            try:
                values[key] = as_integer(data[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{name}: {key} must be an int, got {data[key]!r}") from None
    for table in TABLES:
        if table in data and not isinstance(data[table], dict):
            raise ConfigError(f"{name}: {table} must be a table ([{table}] with KEY = VALUE lines)")
    set_, sweep = dict(data.get("set", {})), dict(data.get("sweep", {}))
    if "total_steps" in set_ and "total_steps" in values:
        raise ConfigError(f"{name}: total_steps given both at the top and in [set]; use one")
    for key, points in sweep.items():
        if not isinstance(points, list) or not points or any(isinstance(v, (dict, list)) for v in points):
            raise ConfigError(f"{name}: [sweep] {key} must be a list of values, e.g. {key} = [0.001, 0.0003]")
    both = sorted(set(set_) & set(sweep))
    if both:
        raise ConfigError(f"{name}: {', '.join(both)} in both [set] and [sweep]; use one")
    return ConfigFile(path, set=set_, sweep={k: list(v) for k, v in sweep.items()}, **values)
