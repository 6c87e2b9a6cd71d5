"""One compiled training program over the run axis: init and chunk, split over devices.

The run axis holds traced sweep points x seeds (run r = point r // seeds, seed r % seeds), padded
to a multiple of the device count. Every device runs the same single-device executable on its own
contiguous block of runs (runs never talk to each other, so there is no communication): a ``vmap``
over its runs, or with ``vmap_block`` B a ``lax.map`` over blocks of B vmapped runs, which bounds
memory (a replay buffer per run, many runs per device). Calls are dispatched to all devices
asynchronously, so the devices work at the same time, and the outputs are joined into global arrays
split along the run axis (zero-copy), which is what checkpoints and results read.

Why single-device executables rather than one SPMD program (``shard_map``): XLA compiles a
multi-device program through the SPMD pipeline, which orders some floating-point operations
differently, so a run's floats drifted from its single-device result in the last bits. With the
same executable on every device, a run's results are bitwise equal whatever the device count, as
long as the vectorised group is the same: the same ``vmap_block`` dividing every device's runs
(tests/test_sharding.py). The cost is one compilation per local device, done in parallel threads.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jmarl import devices as dev
from jmarl import sweep as sw
from jmarl.config import ConfigError, field_types
from jmarl.core import Plan, make_chunk, plan
from jmarl.registry import make_algorithm


@dataclasses.dataclass(frozen=True)
class Program:
    """Compiled ``init(keys, hparams)`` and ``chunk(state, hparams)`` (which donates ``state``)."""

    algo: Any
    plan: Plan
    mesh: Any
    runs: int
    padded: int
    init: Callable
    chunk: Callable
    abstract_state: Any
    compile_s: float


def hparam_dtype(config: Any, key: str) -> Any:
    return np.float32 if field_types(type(config))[key] is float else np.int32


def per_run_map(fn: Callable, block: int | None) -> Callable:
    """``fn`` of one run -> a function of a device's runs (leading axis): vmap, or lax.map over blocks."""
    if block is None:
        return jax.vmap(fn)
    return lambda *xs: jax.lax.map(lambda args: fn(*args), xs, batch_size=block)


class PerDevice:
    """One single-device executable per local device, called on that device's block of runs.

    Takes and returns global arrays split along the run axis (``devices.run_sharding``). Under a
    multi-host launch each process compiles for and dispatches to its own devices only."""

    def __init__(self, fn: Callable, mesh: Any, abstract_args: tuple, donate_first: bool = False):
        self.mesh = mesh
        self.sharding = dev.run_sharding(mesh)
        self.devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
        per = mesh.devices.size

        def local(x, device):
            return jax.ShapeDtypeStruct((x.shape[0] // per,) + x.shape[1:], x.dtype,
                                        sharding=jax.sharding.SingleDeviceSharding(device))

        jitted = jax.jit(fn, donate_argnums=0 if donate_first else ())  # the train state, never the hparams

        def compile_for(device):
            return jitted.lower(*jax.tree.map(lambda x: local(x, device), abstract_args)).compile()

        # XLA compiles without the GIL: one thread per device compiles them side by side.
        with concurrent.futures.ThreadPoolExecutor(len(self.devices)) as pool:
            self.executables = list(pool.map(compile_for, self.devices))
        self.out_info = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((x.shape[0] * per,) + x.shape[1:], x.dtype, sharding=self.sharding),
            self.executables[0].out_info)

    def __call__(self, *args: Any) -> Any:
        leaves, treedef = jax.tree.flatten(args)
        by_device = [{s.device: s.data for s in leaf.addressable_shards} for leaf in leaves]
        outputs = [exe(*jax.tree.unflatten(treedef, [shards[d] for shards in by_device]))
                   for exe, d in zip(self.executables, self.devices, strict=True)]
        return jax.tree.map(
            lambda info, *parts: jax.make_array_from_single_device_arrays(info.shape, self.sharding, list(parts)),
            self.out_info, *outputs)


def check_block(block: int | None) -> None:
    if block is not None and block < 1:
        raise ConfigError(f"--vmap-block must be >= 1 runs, got {block}")


@functools.lru_cache(maxsize=8)
def compile_program(config: Any, traced: tuple[str, ...], runs: int, num_devices: int,
                    block: int | None = None) -> Program:
    """Compile (cached per process) the program of ``runs`` runs of ``config`` with ``traced`` keys."""
    check_block(block)
    algo = make_algorithm(config)
    p = plan(algo)
    mesh = dev.make_mesh(num_devices)
    padded = dev.padded_size(runs, mesh)
    rows = dev.run_sharding(mesh)

    def init_one(key, hparams):
        return sw.bind(algo, hparams).init(key)

    def chunk_one(state, hparams):
        return make_chunk(sw.bind(algo, hparams), p.updates_per_chunk)(state)

    keys = jax.ShapeDtypeStruct((padded, 2), np.uint32, sharding=rows)
    hp = {k: jax.ShapeDtypeStruct((padded,), hparam_dtype(config, k), sharding=rows) for k in traced}
    t0 = time.perf_counter()
    init = PerDevice(per_run_map(init_one, block), mesh, (keys, hp))
    abstract = init.out_info
    chunk = PerDevice(per_run_map(chunk_one, block), mesh, (abstract, hp), donate_first=True)
    return Program(algo, p, mesh, runs, padded, init, chunk, abstract, time.perf_counter() - t0)


def abstract_state(config: Any, traced: tuple[str, ...], runs: int) -> Any:
    """Shapes and dtypes of the train state of ``runs`` runs (traced, nothing compiled)."""
    algo = make_algorithm(config)
    keys = jax.ShapeDtypeStruct((runs, 2), np.uint32)
    hp = {k: jax.ShapeDtypeStruct((runs,), hparam_dtype(config, k)) for k in traced}
    return jax.eval_shape(jax.vmap(lambda k, h: sw.bind(algo, h).init(k)), keys, hp)
