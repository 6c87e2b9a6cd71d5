"""The run axis (sweep points x seeds) laid across devices with ``jax.sharding``.

One 1-D mesh named ``runs`` over the first K visible devices (all hosts' devices under a multi-host
launch); every leaf of the vmapped train state and metrics has the run axis first and is split
along it (``NamedSharding(mesh, P("runs"))``). Runs are independent, so the compiled program needs
no communication. The axis is padded to a multiple of K by repeating the last run; padded runs are
computed and then dropped. Arrays are built with ``jax.make_array_from_callback`` and read back with
``process_allgather`` so the same code serves one process and a multi-host launch.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jmarl.config import ConfigError

AXIS = "runs"


def initialize_distributed(force: bool = False) -> bool:
    """Call ``jax.distributed.initialize()`` for a multi-host launch: with ``force``, or when
    ``JAX_COORDINATOR_ADDRESS`` is set. jax finds the cluster itself on TPU pods, SLURM and Open MPI;
    elsewhere ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here) complete the coordinator address.
    It must run before anything touches a device. Returns whether it ran."""
    if not (force or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return False
    kwargs = {}
    for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if os.environ.get(name):
            kwargs[arg] = int(os.environ[name])
    jax.distributed.initialize(**kwargs)
    return True


def use_cpu_devices(count: int) -> None:
    """Split the host CPU into ``count`` jax devices, so that a run's seeds train on several cores at once
    (jax runs each CPU device's program on about one core; the run axis is then split over them as over
    GPUs). It must run before anything touches a device; later it is accepted only when the count is
    already ``count``. It changes nothing where the runs go to an accelerator."""
    if count < 1:
        raise ConfigError(f"--cpu-devices must be >= 1, got {count}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # jax has started in this process: its CPU devices are fixed now
        if len(jax.devices("cpu")) != count:
            raise ConfigError(f"--cpu-devices {count}: jax has already started in this process with "
                              f"{len(jax.devices('cpu'))} CPU device(s); give it when the process starts") from None


def cpu_split_hint(runs: int) -> str | None:
    """A line for a run whose several runs share the one CPU device of a machine with several cores."""
    cores = os.cpu_count() or 1
    if jax.default_backend() != "cpu" or jax.device_count() != 1 or runs < 2 or cores < 2:
        return None
    if getattr(jax.config, "jax_num_cpu_devices", -1) != -1:  # use_cpu_devices was called: the user's split
        return None
    k = min(runs, cores)
    return (f"the {runs} runs share one CPU device on a {cores}-core machine: --cpu-devices {k} spreads them over "
            f"{k} cores, often faster for small recurrent networks (docs/runner.md, Devices)")


def is_main_process() -> bool:
    """Only process 0 logs and writes results files (every process takes part in checkpoints)."""
    return jax.process_index() == 0


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all when None)."""
    available = jax.devices()
    if num_devices is None:
        num_devices = len(available)
    if not 1 <= num_devices <= len(available):
        raise ConfigError(f"--devices must be between 1 and the {len(available)} visible device(s); "
                          f"got {num_devices}")
    return Mesh(np.array(available[:num_devices]), (AXIS,))


def padded_size(runs: int, mesh: Mesh) -> int:
    """The run axis rounded up to a multiple of the device count."""
    k = mesh.devices.size
    return math.ceil(runs / k) * k


def run_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(AXIS))


def pad_runs(tree: Any, size: int) -> Any:
    """Repeat the last run so that every leaf's leading axis has ``size`` entries (NumPy leaves)."""

    def pad(x):
        x = np.asarray(x)
        extra = size - x.shape[0]
        return x if extra == 0 else np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])

    return jax.tree.map(pad, tree)


def put_runs(tree: Any, mesh: Mesh) -> Any:
    """Host NumPy leaves (leading axis = the padded run axis, the same on every process) -> global
    arrays split along the run axis; each process fills only the shards its devices hold."""
    sharding = run_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def fetch(tree: Any) -> Any:
    """Global arrays -> NumPy on every process (an all-gather across hosts where needed)."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
