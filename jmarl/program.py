"""One compiled training program over the run axis: init and chunk, split over devices and, when
they do not fit at once, into groups.

The run axis holds traced sweep points x seeds (run r = point r // seeds, seed r % seeds), padded
to a multiple of the device count. Every device runs the same single-device executable on its own
contiguous block of runs (runs never talk to each other, so there is no communication): a ``vmap``
over its runs, or with ``vmap_block`` B a loop over blocks of B vmapped runs that writes each block's
state in place (:func:`per_run_map`), which bounds the program's temporaries (activations of the
gradient steps), not the train state. Calls are dispatched
to all devices asynchronously, so the devices work at the same time, and the outputs are joined into
global arrays split along the run axis (zero-copy), which is what checkpoints and results read.

The memory plan (jmarl/memory.py) decides before compiling whether a device holds all its runs' state;
when it does not, the program is compiled for a *group* of runs per device and :class:`Groups` trains
the groups one after another, each group's state waiting in host memory (NumPy) between its turns.

Why single-device executables rather than one SPMD program (``shard_map``): XLA compiles a
multi-device program through the SPMD pipeline, which orders some floating-point operations
differently, so a run's floats drifted from its single-device result in the last bits. With the
same executable on every device, a run's results are bitwise equal whatever the device count, as
long as the vectorised group is the same: the same ``vmap_block`` dividing every device's runs
(tests/test_program.py), and a grouped run equals an ungrouped one with ``vmap_block`` = the group
(tests/test_memory.py). The cost is one compilation per local device, done in parallel threads.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jmarl import devices as dev
from jmarl import memory
from jmarl import sweep as sw
from jmarl.core import Plan, make_chunk
from jmarl.spec import ProgramSpec


@dataclasses.dataclass(frozen=True)
class Program:
    """Compiled ``init(keys, hparams)`` and ``chunk(state, hparams)`` (which donates ``state``).

    ``put`` places host inputs (NumPy, the padded run axis first) where ``init`` and ``chunk`` take
    them: global arrays split over the devices, or, for a grouped program, host memory as they are."""

    algo: Any
    plan: Plan
    mesh: Any
    runs: int
    padded: int
    init: Callable
    chunk: Callable
    abstract_state: Any
    compile_s: float
    memory: memory.MemoryPlan

    @property
    def grouped(self) -> bool:
        return self.memory.groups > 1

    def put(self, host_tree: Any) -> Any:
        if not self.grouped:
            return dev.put_runs(host_tree, self.mesh)
        # a grouped chunk writes each group's new state into these arrays: they must be writable
        return jax.tree.map(lambda x: x if isinstance(x, np.ndarray) and x.flags.writeable else np.array(x),
                            host_tree)


def vmap_runs(fn: Callable) -> Callable:
    """``jax.vmap(fn)`` over a leading run axis, except that a batch of one run calls ``fn`` on the run itself:
    XLA:CPU spreads an unbatched program over its threads better (IPPO-RNN on smax_3m, one update: 1.43
    cores busy unbatched, 1.12 under a vmap of one; 22% more wall time)."""
    vfn = jax.vmap(fn)

    def mapped(*xs):
        if jax.tree.leaves(xs)[0].shape[0] != 1:
            return vfn(*xs)
        out = fn(*jax.tree.map(lambda x: x[0], xs))
        return jax.tree.map(lambda y: jnp.expand_dims(y, 0), out)

    return mapped


def per_run_map(fn: Callable, block: int | None, in_place: bool = False) -> Callable:
    """``fn`` of one run -> a function of a device's runs (leading axis): a vmap, or with ``block`` B a loop
    over blocks of B vmapped runs (the last block may be shorter), which bounds the temporaries.

    The blocks write their results into whole-axis arrays carried by the loop (``dynamic_update_slice``,
    in place): ``lax.map`` stacks its results into new arrays, and a chunk mapped that way held two more
    copies of every run's train state, replay buffers included. With ``in_place`` the first argument is
    the carried array of the first result (a chunk's donated state, read a block at a time before that
    block is written); otherwise the results fill fresh arrays."""
    vfn = vmap_runs(fn)
    if block is None:
        return vfn

    def take(tree, start, size):
        return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, 0), tree)

    def put(tree, part, start):
        return jax.tree.map(lambda x, y: jax.lax.dynamic_update_slice_in_dim(x, y, start, 0), tree, part)

    def split(out):
        return (out[0], tuple(out[1:])) if in_place else (out, ())

    def mapped(*xs):
        n = jax.tree.leaves(xs)[0].shape[0]
        full, rest = divmod(n, block)

        def call(acc, start, size):
            first = take(acc, start, size) if in_place else take(xs[0], start, size)
            acc_part, others = split(vfn(first, *take(xs[1:], start, size)))
            return put(acc, acc_part, start), others

        if in_place:
            acc = xs[0]
        else:
            shapes = jax.eval_shape(vfn, *take(xs, 0, min(block, n)))
            acc = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape[1:], s.dtype), shapes)
        acc, others = jax.lax.scan(lambda a, i: call(a, i * block, block), acc, jnp.arange(full))
        others = jax.tree.map(lambda y: y.reshape((full * block,) + y.shape[2:]), others)
        if rest:
            acc, tail = call(acc, full * block, rest)
            others = jax.tree.map(lambda y, t: jnp.concatenate([y, t]), others, tail)
        return (acc,) + others if in_place else acc

    return mapped


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


class Groups:
    """A :class:`PerDevice` program of one group's runs, called on each group in turn over host state.

    Arguments are NumPy trees over the whole padded run axis; group g is the slice
    ``[g * size, (g + 1) * size)``, put on the devices for its turn. The train state it returns (the
    whole result of ``init``; the first of ``chunk``'s, whose other results are small and gathered)
    is copied into host arrays one run at a time, so the host holds one copy of every run's state plus
    one run's largest array: with ``in_place`` the first argument's arrays (the chunk's state), else
    new arrays of ``whole``'s shapes."""

    def __init__(self, fn: PerDevice, size: int, groups: int, whole: Any, in_place: bool = False):
        self.fn, self.size, self.groups, self.whole, self.in_place = fn, size, groups, whole, in_place

    def __call__(self, *args: Any) -> Any:
        dest = args[0] if self.in_place else jax.tree.map(lambda a: np.empty(a.shape, a.dtype), self.whole)
        rest = []
        for g in range(self.groups):
            rows = slice(g * self.size, (g + 1) * self.size)
            result = self.fn(*dev.put_runs(jax.tree.map(lambda x, r=rows: x[r], args), self.fn.mesh))
            state, others = (result[0], result[1:]) if self.in_place else (result, ())
            del result
            jax.tree.map(lambda d, x, r=rows: copy_runs(d[r], x), dest, state)
            del state  # frees this group's device memory before the next group is put
            rest.append(dev.fetch(others))
        if not self.in_place:
            return dest
        return (dest,) + tuple(jax.tree.map(lambda *xs: np.concatenate(xs), *rest))


def copy_runs(dst: np.ndarray, x: jax.Array, whole_below: int = 2**28) -> None:
    """Device array -> host rows ``dst``: whole when small, else one run at a time (bounded host memory)."""
    if x.nbytes <= whole_below:
        np.copyto(dst, np.asarray(jax.device_get(x)))
        return
    for r in range(x.shape[0]):
        np.copyto(dst[r], np.asarray(jax.device_get(x[r])))


def _compile(ps: ProgramSpec, mesh: Any, mp: memory.MemoryPlan) -> Program:
    """The programs of one memory plan: all of a device's runs at once, or one group at a time."""
    algo, p = ps.learner, ps.plan
    size = mp.devices * mp.group  # runs on the devices at once
    rows = dev.run_sharding(mesh)
    # A grouped program maps over blocks even without --vmap-block (one block of the whole group), so that its
    # results equal those of an ungrouped run with --vmap-block = the group, bit for bit.
    block = mp.block if mp.block is not None else (mp.group if mp.groups > 1 else None)

    def init_one(key, hparams):
        return sw.bind(algo, hparams).init(key)

    def chunk_one(state, hparams):
        return make_chunk(sw.bind(algo, hparams), p.updates_per_chunk)(state)

    keys = jax.ShapeDtypeStruct((size, 2), np.uint32, sharding=rows)
    hp = {k: jax.ShapeDtypeStruct((size,), sw.hparam_dtype(ps.config, k), sharding=rows) for k in ps.traced}
    t0 = time.perf_counter()
    init = PerDevice(per_run_map(init_one, block), mesh, (keys, hp))
    chunk = PerDevice(per_run_map(chunk_one, block, in_place=True), mesh, (init.out_info, hp), donate_first=True)
    compile_s = time.perf_counter() - t0
    mp = dataclasses.replace(mp, compiled=memory.analysis(chunk.executables[0]))
    if mp.groups == 1:
        return Program(algo, p, mesh, mp.runs, mp.padded, init, chunk, init.out_info, compile_s, mp)
    whole = jax.tree.map(lambda x: jax.ShapeDtypeStruct((mp.padded,) + x.shape[1:], x.dtype), init.out_info)
    return Program(algo, p, mesh, mp.runs, mp.padded, Groups(init, size, mp.groups, whole),
                   Groups(chunk, size, mp.groups, whole, in_place=True), whole, compile_s, mp)


@functools.lru_cache(maxsize=8)
def compile_program(ps: ProgramSpec) -> Program:
    """Compile ``ps`` under its memory plan (cached per process by what the program depends on).

    Raises :class:`jmarl.memory.OutOfMemory` when the compiled chunk's temporaries leave no group that fits
    (the plan of the state alone was checked when the spec was made)."""
    config, mp = ps.config, ps.memory
    mesh = dev.make_mesh(ps.devices)
    total_s = 0.0
    while True:
        if mp.groups > 1 and jax.process_count() > 1:
            raise memory.OutOfMemory(f"{mp.line()}: training in groups through host memory runs in one process; "
                                     f"with several hosts, give each run less memory "
                                     f"({memory.shrink_hints(config)}) or use more devices")
        prog = _compile(ps, mesh, mp)
        total_s += prog.compile_s
        smaller = memory.refine(prog.memory, prog.memory.compiled)
        if smaller is None:
            break
        mp = dataclasses.replace(smaller, compiled=None)
    memory.check_fits(config, prog.memory)
    return dataclasses.replace(prog, compile_s=total_s)
