"""The memory plan: how many runs a device holds at once, decided before compiling.

A run's train state (replay buffer, parameters, optimiser state, env states) has a size known before
anything compiles (``jax.eval_shape``); a device gives a known number of bytes
(``device.memory_stats()["bytes_limit"]`` on GPU and TPU, the host's available memory on CPU, or
``JMARL_DEVICE_MEMORY`` when set). The plan compares them:

- every run of a device fits: one vectorised program holds them all (the usual case);
- they do not: the runs are split into *groups* that fit; a chunk trains one group after another, and
  between its turns a group's state waits in host memory (``jmarl.program.Groups``);
- a single run does not fit: :class:`OutOfMemory` (a ``ConfigError``: one line, exit 2) says what it
  needs, what the device has and which settings shrink it, before compiling.

The first plan counts the state only, keeping ``HEADROOM`` of the device for the program's temporaries;
once compiled, ``memory_analysis()`` of the chunk (arguments + outputs - donated aliases + temporaries)
checks it and :func:`refine` shrinks the group when the temporaries did not fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmarl.config import ConfigError

LIMIT_VARIABLE = "JMARL_DEVICE_MEMORY"  # "12GiB", "500MB", "2e9": bytes per device the plan may use
REPORT_VARIABLE = "JMARL_MEMORY_REPORT"  # a path: the runner writes the plan and the device's peak there
FRACTION_VARIABLE = "XLA_PYTHON_CLIENT_MEM_FRACTION"
CLI_FRACTION = "0.92"  # of a GPU's memory that the command-line tools let jax take (jax's default: 0.75)
HEADROOM = 0.9  # share of the device the state may fill before the temporaries are known
GIB = 2**30
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class OutOfMemory(ConfigError):
    """The runs cannot fit the device (or did not, when XLA allocated): what, and the knobs that shrink it."""


def use_more_device_memory() -> None:
    """Let jax take ``CLI_FRACTION`` of a GPU instead of its default 75% (replay buffers are most of a
    value learner's state); a value the user set is kept. Call before the first device is touched."""
    os.environ.setdefault(FRACTION_VARIABLE, CLI_FRACTION)


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if m is None or m.group(2) not in _UNITS:
        raise ConfigError(f"{LIMIT_VARIABLE} must be a size such as 12GiB, 500MB or 2e9 bytes; got {text!r}")
    value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise ConfigError(f"{LIMIT_VARIABLE} must be positive; got {text!r}")
    return value


def host_available() -> int:
    """Bytes the host can still give (MemAvailable; the physical memory where /proc is absent)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_available(device: Any) -> tuple[int, str]:
    """(bytes a device can give the run, where that number comes from)."""
    if os.environ.get(LIMIT_VARIABLE):
        return parse_bytes(os.environ[LIMIT_VARIABLE]), LIMIT_VARIABLE
    try:
        stats = device.memory_stats() or {}
    except Exception:  # backends without allocator statistics
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"{device.platform} allocator limit"
    return host_available(), "host memory available"


def tree_bytes(tree: Any) -> int:
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def gib(n: float) -> str:
    """Bytes for people: GiB, or MiB / KiB for small programs."""
    unit, size = next((u, s) for u, s in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)) if n >= s or u == "KiB")
    return f"{n / size:.1f} {unit}" if n >= 10 * size else f"{n / size:.2f} {unit}"


def shrink_hints(config: Any) -> str:
    """The settings that make one run's state smaller, for this config."""
    hints = []
    if hasattr(config, "buffer_size"):
        hints.append(f"a smaller buffer_size (now {config.buffer_size})")
        if getattr(config, "buffer_dtype", None) == "float32":
            hints.append("buffer_dtype=bfloat16 (half the observation memory)")
    if hasattr(config, "num_envs"):
        hints.append(f"fewer num_envs (now {config.num_envs})")
    if hasattr(config, "batch_size"):
        hints.append(f"a smaller batch_size (now {config.batch_size})")
    return ", ".join(hints) or "a smaller network or fewer parallel envs"


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Runs per device at once (``group``) and how many turns (``groups``) a chunk takes."""

    runs: int  # real runs (sweep points x seeds)
    devices: int
    per_run: int  # bytes of one run's train state
    available: int  # bytes per device the plan may use
    source: str  # where ``available`` comes from
    group: int  # runs a device holds at once
    groups: int  # groups trained one after another (1: all runs on the devices together)
    block: int | None  # --vmap-block: runs vectorised together within a group
    compiled: dict[str, int] | None = None  # the chunk's memory_analysis() per device, once compiled
    warning: str | None = None  # an explicit --vmap-block that the plan says will not fit

    @property
    def per_device(self) -> int:
        return math.ceil(self.runs / self.devices)

    @property
    def padded(self) -> int:
        """The run axis over all groups and devices (the last run repeated to fill it)."""
        return self.devices * self.group * self.groups

    @property
    def group_bytes(self) -> int:
        """A device's bytes for one group: the compiled program's need where known, else its state."""
        if self.compiled is not None:
            return self.compiled["need"]
        return self.group * self.per_run

    @property
    def fits(self) -> bool:
        return self.group_bytes <= self.available

    def line(self) -> str:
        dev = f"{self.devices} device(s)"
        what = "program" if self.compiled is not None else "state"
        if self.groups == 1:
            return (f"memory: {self.per_device} run(s) per device at once, {gib(self.group_bytes)} ({what}; "
                    f"{gib(self.per_run)} of state per run) of {gib(self.available)} available per device "
                    f"({self.source}) on {dev}")
        return (f"memory: the runs do not fit at once: {self.groups} groups of {self.group} run(s) per device, "
                f"trained one after another with the others' state in host memory; {gib(self.group_bytes)} "
                f"({what}) per group of {gib(self.available)} available per device ({self.source}); "
                f"{gib(self.per_run)} of state per run")

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(per_device=self.per_device, padded=self.padded, group_bytes=self.group_bytes, fits=self.fits,
                   per_run_gib=self.per_run / GIB, available_gib=self.available / GIB,
                   group_gib=self.group_bytes / GIB)
        return out


def _groups_for(per_device: int, fit: int, block: int | None) -> tuple[int, int]:
    """(group, groups): the fewest groups of at most ``fit`` runs, balanced, in whole vmap blocks."""
    unit = block or 1
    fit = max(unit, fit // unit * unit)
    if fit >= per_device:
        return per_device, 1
    groups = math.ceil(per_device / fit)
    group = math.ceil(math.ceil(per_device / groups) / unit) * unit
    return group, math.ceil(per_device / group)


def plan(config: Any, per_run: int, runs: int, devices: int, block: int | None,
         available: tuple[int, str] | None = None, host: int | None = None) -> MemoryPlan:
    """The plan from the state's size alone (before compiling). Raises :class:`OutOfMemory` when one
    run's state exceeds the device, or when groups are needed and the host (``host`` bytes, default
    what it has available; not checked under ``JMARL_DEVICE_MEMORY`` unless given) cannot hold all runs'
    state between their turns. An explicit ``block`` that will not fit is kept, with a warning."""
    avail, source = available if available is not None else device_available(jax.local_devices()[0])
    if per_run > avail:
        raise OutOfMemory(f"one run of {config.algo} on {config.env} needs {gib(per_run)} of train state; a device "
                          f"has {gib(avail)} ({source}); make it fit with {shrink_hints(config)}")
    per_device = math.ceil(runs / devices)
    group, groups = _groups_for(per_device, int(avail * HEADROOM // per_run), block)
    warning = None
    if block is not None and block * per_run > avail * HEADROOM:
        warning = (f"warning: --vmap-block {block} holds {gib(block * per_run)} of state per device, more than the "
                   f"{gib(avail * HEADROOM)} the plan keeps for state ({source}); running as asked")
    result = MemoryPlan(runs, devices, per_run, avail, source, group, groups, block, warning=warning)
    if groups > 1 and (host is not None or not os.environ.get(LIMIT_VARIABLE)):
        host_need = result.padded * per_run
        host = host_available() if host is None else host
        if host_need > host:
            raise OutOfMemory(f"{runs} runs of {config.algo} on {config.env} need {gib(host_need)} of train state, "
                              f"more than the devices ({devices} x {gib(avail)}) and the host ({gib(host)} "
                              f"available) hold; run fewer seeds or make each smaller with {shrink_hints(config)}")
    return result


def analysis(compiled: Any) -> dict[str, int]:
    """A compiled executable's device memory: arguments, outputs, donated aliases, temporaries and ``need``
    (what it holds at its peak, as XLA accounts it)."""
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "alias", "temp", "generated_code")}
    out["need"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["generated_code"]
    return out


def refine(mp: MemoryPlan, compiled: dict[str, int]) -> MemoryPlan | None:
    """The plan checked against the compiled chunk: None when it fits (or cannot be improved), else a
    plan with a smaller group to compile instead."""
    if compiled["need"] <= mp.available or mp.group <= (mp.block or 1):
        return None
    fit = int(mp.group * mp.available * 0.97 // compiled["need"])
    group, groups = _groups_for(mp.per_device, fit, mp.block)
    if group >= mp.group:
        return None
    return dataclasses.replace(mp, group=group, groups=groups)


def check_fits(config: Any, mp: MemoryPlan) -> None:
    """After compiling: refuse, before training, a single group that XLA says cannot fit."""
    if mp.compiled is not None and not mp.fits and mp.group <= (mp.block or 1):
        c = mp.compiled
        raise OutOfMemory(f"{config.algo} on {config.env}: {mp.group} run(s) need {gib(c['need'])} per device once "
                          f"compiled ({gib(c['argument'])} state and inputs, {gib(c['temp'])} temporaries); a device "
                          f"has {gib(mp.available)} ({mp.source}); make it fit with {shrink_hints(config)}"
                          + (f", or a smaller --vmap-block (now {mp.block})" if mp.block else ""))


def out_of_memory(err: BaseException, config: Any, mp: MemoryPlan | None) -> OutOfMemory | None:
    """An allocation failure raised by XLA as one line (None for any other error)."""
    text = str(err)
    if "RESOURCE_EXHAUSTED" not in text and "Out of memory" not in text:
        return None
    m = re.search(r"allocate ([0-9.]+ ?[KMGT]i?B)", text)
    what = f"allocating {m.group(1)}" if m else "allocating device memory"
    planned = f" (planned: {mp.line()[len('memory: '):]})" if mp is not None else ""
    return OutOfMemory(f"{config.algo} on {config.env} ran out of device memory {what}{planned}; make it fit with "
                       f"{shrink_hints(config)}, fewer seeds per device (--vmap-block, {LIMIT_VARIABLE}=<bytes> to "
                       f"plan for less), or a larger {FRACTION_VARIABLE}")


def write_report(mp: MemoryPlan, extra: dict[str, Any]) -> None:
    """With ``JMARL_MEMORY_REPORT`` set: the plan, the device's peak use and ``extra`` as JSON there."""
    path = os.environ.get(REPORT_VARIABLE)
    if not path:
        return
    peak = {}
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
        peak = {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit") if k in stats}
    except Exception:
        pass
    Path(path).write_text(json.dumps({"plan": mp.as_dict(), "line": mp.line(), "device": peak, **extra}, indent=1))
