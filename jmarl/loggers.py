"""Optional metric loggers beside the results files: TensorBoard event files and Weights & Biases runs.

Off by default (``RunOptions.loggers``, ``run.py --tensorboard`` / ``--wandb``). After every chunk each
results directory of the run (one per traced sweep point) gets one point per metric at the chunk's
``env_steps``: the mean over seeds of every evaluation key (``eval/return``, ``eval/won``, ...) and every
``train/...`` statistic of that chunk's ``metrics.jsonl`` rows. The results files stay the record; these
are views of them.

- ``tensorboard``: event files under ``DIR/tensorboard/`` (``tensorboard --logdir DIR``), written with
  ``tensorboardX``.
- ``wandb``: one W&B run per results directory, its files under ``DIR/wandb/``. Offline unless W&B is
  configured (``WANDB_MODE`` set, ``WANDB_API_KEY`` set or a ``wandb login``); ``wandb sync DIR/wandb/offline-run-*``
  uploads an offline run later. Project ``$WANDB_PROJECT`` or ``jmarl``; the run's name is the results
  directory's (with the sweep point), its config the resolved config.

The backends are optional dependencies (``pip install 'jmarl[logging]'``); a missing one is reported by
:func:`missing_backend` before anything compiles.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jmarl.config import ConfigError
from jmarl.results import EVAL_KEYS, eval_keys
from jmarl.spec import LOGGERS

BACKENDS = LOGGERS
MODULES = {"tensorboard": "tensorboardX", "wandb": "wandb"}
INSTALL = "pip install 'jmarl[logging]'"
NOT_METRICS = ("env_steps", "seed")


def missing_backend(name: str) -> str | None:
    """One line naming what to install when ``name``'s package is missing; None when it is there."""
    if name not in BACKENDS:
        return f"unknown logger {name!r}; valid: {', '.join(BACKENDS)}"
    module = MODULES[name]
    if importlib.util.find_spec(module) is None:
        return (f"--{name} needs the {module} package, which is not installed: {INSTALL} "
                f"(or pip install {module})")
    return None


def chunk_values(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The values logged for one chunk of one results directory: the mean over its seeds' rows of every
    numeric key, evaluation keys as ``eval/<key>``, ``train/...`` keys as they are."""
    if not rows:
        return {}
    evaluation = eval_keys(rows[0], EVAL_KEYS)
    keys = evaluation + [k for k in rows[0] if k not in evaluation]
    values = {}
    for key in (k for k in keys if k not in NOT_METRICS and _number(rows[0][k])):
        tag = key if "/" in key else f"eval/{key}"
        values[tag] = float(sum(float(r[key]) for r in rows) / len(rows))
    return values


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


class TensorBoardWriter:
    """Event files of one results directory, under ``directory/tensorboard``."""

    def __init__(self, directory: Path, name: str, config: dict[str, Any]):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(directory / "tensorboard"))

    def write(self, env_steps: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=env_steps)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set; ``online`` when an API key is configured; else ``offline`` (nothing is sent)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandbWriter:
    """One W&B run of one results directory, its files under ``directory/wandb``."""

    def __init__(self, directory: Path, name: str, config: dict[str, Any]):
        import wandb

        (directory / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "jmarl", name=name, config=config,
                              dir=str(directory), mode=wandb_mode(), reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def write(self, env_steps: int, values: dict[str, float]) -> None:
        self.run.log({**values, "env_steps": env_steps}, step=env_steps)

    def close(self) -> None:
        self.run.finish()


WRITERS = {"tensorboard": TensorBoardWriter, "wandb": WandbWriter}


class Loggers:
    """The writers of a program's results directories (``leaves``, one per traced sweep point); no-ops
    without backends. ``write`` takes each directory's rows of one chunk, in ``leaves`` order."""

    def __init__(self, backends: Sequence[str], leaves: Sequence[Path], names: Sequence[str],
                 configs: Sequence[dict[str, Any]]):
        self.writers: list[list[Any]] = []
        try:
            for backend in backends:
                line = missing_backend(backend)
                if line:
                    raise ConfigError(line)
                self.writers.append([WRITERS[backend](Path(d), n, c) for d, n, c in zip(leaves, names, configs,
                                                                                     strict=True)])
        except BaseException:
            self.close()
            raise

    def write(self, rows_per_leaf: Sequence[Sequence[dict[str, Any]]]) -> None:
        for writers in self.writers:
            for writer, rows in zip(writers, rows_per_leaf, strict=True):
                if rows:
                    writer.write(int(rows[0]["env_steps"]), chunk_values(rows))

    def close(self) -> None:
        for writers in self.writers:
            for writer in writers:
                writer.close()
        self.writers = []


def open_loggers(backends: Sequence[str], leaves: Sequence[Path | None], config: Any,
                 points: Sequence[dict[str, Any]]) -> Loggers:
    """The writers of one program (none when ``backends`` is empty or nothing is saved)."""
    if not backends or any(d is None for d in leaves):
        return Loggers((), (), (), ())
    base = dataclasses.asdict(config)
    names = [str(d) for d in leaves]
    configs = [{**base, **pt, "sweep_point": pt} if pt else base for pt in points]
    return Loggers(backends, [Path(d) for d in leaves], names, configs)
