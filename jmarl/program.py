"""One compiled training program over the run axis: init and chunk, split over devices.

The run axis holds traced sweep points x seeds (run r = point r // seeds, seed r % seeds), padded
to a multiple of the device count. Each device runs the same program on its own runs through
``jax.shard_map`` (runs never talk to each other, so there is no communication): a ``vmap`` over
its runs, or with ``vmap_block`` B a ``lax.map`` over blocks of B vmapped runs, which bounds memory
(a replay buffer per run, many runs per device).

Bits across device counts: a run's RNG stream, counters and every integer are the same whatever the
device count, but XLA compiles a multi-device program through a different pipeline than a
single-device one and may order floating-point operations differently, so float results can differ
in the last bits (measured: parameters within 1e-7 after two updates on CPU; greedy evaluations
identical). A run resumed on the same devices continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec

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


def per_device(fn: Callable, mesh: Any, block: int | None) -> Callable:
    """``fn`` of one run -> a function of all runs: each device maps it over its own runs."""
    if block is None:
        local = jax.vmap(fn)
    else:
        local = lambda *xs: jax.lax.map(lambda args: fn(*args), xs, batch_size=block)  # noqa: E731
    spec = PartitionSpec(dev.AXIS)
    # check_vma=False: learners build scan carries from constants; runs are independent, nothing to check.
    return jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


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
    init = jax.jit(per_device(init_one, mesh, block)).lower(keys, hp).compile()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rows),
                            jax.eval_shape(jax.vmap(init_one), keys, hp))
    chunk = jax.jit(per_device(chunk_one, mesh, block), donate_argnums=0).lower(abstract, hp).compile()
    return Program(algo, p, mesh, runs, padded, init, chunk, abstract, time.perf_counter() - t0)


def abstract_state(config: Any, traced: tuple[str, ...], runs: int) -> Any:
    """Shapes and dtypes of the train state of ``runs`` runs (traced, nothing compiled)."""
    algo = make_algorithm(config)
    keys = jax.ShapeDtypeStruct((runs, 2), np.uint32)
    hp = {k: jax.ShapeDtypeStruct((runs,), hparam_dtype(config, k)) for k in traced}
    return jax.eval_shape(jax.vmap(lambda k, h: sw.bind(algo, h).init(k)), keys, hp)
