"""The run spec: one resolved, validated, frozen description of a training run, made once.

The run path is one-way: the command line or a library call -> :func:`make_run_spec` (every check that
can happen before compiling, each once: run options, the sweep split, every sweep point's config, each
program's learner and budget, the results directory, the memory plan) -> ``jmarl.program`` compiles
each :class:`ProgramSpec` -> ``jmarl.runner`` runs the chunks -> ``jmarl.run_dir`` writes the results.

A run is ``seeds`` x the traced sweep grid (one vectorised axis of one program, run r = point
r // seeds, seed r % seeds) for each point of the sequential sweep grid (one program each).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmarl import devices as dev
from jmarl import memory
from jmarl import sweep as sw
from jmarl.config import ConfigError, validate
from jmarl.core import Plan, plan
from jmarl.registry import build_learner, make_algorithm

MAX_SEED = 2**32 - 1  # jax.random.PRNGKey keeps 32 bits: larger or negative seeds repeat smaller ones
MAX_PLANNED_STEPS = 2**31 - 1  # step counters are int32 inside the compiled program


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a config is run (not what is learnt); ``seeds`` and ``base_seed`` define the runs."""

    seeds: int = 1
    base_seed: int = 0
    devices: int | None = None  # the first K devices; None: all visible
    vmap_block: int | None = None  # runs vectorised together per device; None: all of a device's runs
    checkpoint_every: int | None = None  # updates; None: about a tenth of the run; 0: only at the end
    keep_checkpoints: int = 3
    checkpoints: bool = True
    checkpoint_replay: bool = True  # False: checkpoints leave an off-policy learner's replay buffer out
    plots: bool = True

    def check(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        if not 0 <= self.base_seed <= MAX_SEED:
            raise ConfigError(f"--seed must be between 0 and {MAX_SEED} (a 32-bit PRNG seed), got {self.base_seed}")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every must be >= 0 updates (0 = only at the end), "
                              f"got {self.checkpoint_every}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"--keep-checkpoints must be >= 1, got {self.keep_checkpoints}")
        check_block(self.vmap_block)
        if self.devices is not None:
            dev.make_mesh(self.devices)  # raises if out of range

    @property
    def num_devices(self) -> int:
        return self.devices if self.devices is not None else len(jax.devices())


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """One compiled program: ``runs`` runs of ``config`` (a sequential sweep point applied) with the
    ``traced`` keys as inputs, on ``devices`` devices. Equal (and hashed, for the compile cache) by what
    the compiled program depends on; the built learner, plan and memory plan ride along."""

    config: Any
    traced: tuple[str, ...]
    runs: int
    devices: int
    block: int | None
    point: dict[str, Any] = dataclasses.field(compare=False)  # the sequential sweep point ({} without one)
    learner: Any = dataclasses.field(compare=False)
    plan: Plan = dataclasses.field(compare=False)
    memory: memory.MemoryPlan = dataclasses.field(compare=False)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    config: Any
    traced: dict[str, tuple]  # swept inside one program
    sequential: dict[str, tuple]  # one program per point
    options: RunOptions
    programs: tuple[ProgramSpec, ...]  # one per point of the sequential grid, in ``sweep.grid`` order
    out: Path | None
    resume: bool

    @property
    def points(self) -> list[dict[str, Any]]:
        """The traced sweep points of each program ([{}] without a traced sweep)."""
        return sw.grid(self.traced)

    @property
    def runs(self) -> int:
        return self.options.seeds * len(self.points)

    def program_dir(self, program: ProgramSpec) -> Path | None:
        if self.out is None:
            return None
        return self.out / sw.point_name(program.point) if program.point else self.out

    def identity(self, program: ProgramSpec) -> dict[str, Any]:
        return run_identity(program.config, self.options.seeds, self.options.base_seed, self.traced)


def make_run_spec(config: Any, sweep: dict[str, tuple] | None = None, options: RunOptions | None = None,
                  out: str | Path | None = None, resume: bool = False) -> RunSpec:
    """Check everything a run needs before compiling, once; raises ConfigError (or ``memory.OutOfMemory``)."""
    opts = options or RunOptions()
    opts.check()
    if resume and out is None:
        raise ConfigError("resume needs the run's results directory")
    traced, sequential = sw.split(config.algo, dict(sweep or {}))
    for point in sw.grid({**sequential, **traced}):
        validate(dataclasses.replace(config, **point))
    runs = opts.seeds * len(sw.grid(traced))
    programs = []
    for point in sw.grid(sequential):
        point_config = dataclasses.replace(config, **point)
        learner = build_learner(point_config)
        p = plan(learner)
        check_budget(point_config, p)
        programs.append((point, point_config, learner, p))
    out_path = Path(out) if out is not None else None
    if out_path is not None and not resume:
        for point, *_ in programs:
            check_no_checkpoints(out_path / sw.point_name(point) if point else out_path)
    keys = tuple(traced)
    specs = tuple(ProgramSpec(c, keys, runs, opts.num_devices, opts.vmap_block, point, learner, p,
                              plan_memory(learner, keys, runs, opts.num_devices, opts.vmap_block))
                  for point, c, learner, p in programs)
    return RunSpec(config, traced, sequential, opts, specs, out_path, resume)


def program_spec(config: Any, traced: tuple[str, ...] = (), runs: int = 1, devices: int = 1,
                 block: int | None = None) -> ProgramSpec:
    """The spec of one program of an already resolved ``config`` (benchmarks and tests compile one directly)."""
    check_block(block)
    learner = make_algorithm(config)
    return ProgramSpec(config, tuple(traced), runs, devices, block, {}, learner, plan(learner),
                       plan_memory(learner, tuple(traced), runs, devices, block))


# ----- the checks, each in one place -----------------------------------------------------------


def check_block(block: int | None) -> None:
    if block is not None and block < 1:
        raise ConfigError(f"--vmap-block must be >= 1 runs, got {block}")


def check_budget(config: Any, p: Plan) -> None:
    """At least one update, and a planned number of env steps the int32 step counter can hold."""
    if config.total_steps < p.steps_per_update:
        per_env = p.steps_per_update // config.num_envs
        raise ConfigError(f"total_steps={config.total_steps} is less than one update: {config.algo} on {config.env} "
                          f"collects {p.steps_per_update} env steps per update (num_envs={config.num_envs} x "
                          f"{per_env} steps per env); use total_steps >= {p.steps_per_update} or smaller num_envs "
                          f"or num_steps")
    if p.total_steps > MAX_PLANNED_STEPS:
        raise ConfigError(f"total_steps={config.total_steps} plans {p.total_steps} env steps per seed (whole chunks "
                          f"of {p.updates_per_chunk} updates x {p.steps_per_update} steps), above the "
                          f"int32 step counter's {MAX_PLANNED_STEPS}; use total_steps <= "
                          f"{MAX_PLANNED_STEPS - p.updates_per_chunk * p.steps_per_update}")


def check_no_checkpoints(program_dir: Path) -> None:
    """Refuse to mix a new run's checkpoints with an old run's (before anything compiles)."""
    ckpt = program_dir / "checkpoints"
    if ckpt.is_dir() and any(d.name.isdigit() for d in ckpt.iterdir()):
        raise ConfigError(f"{program_dir} already holds checkpoints of a run; continue it with --resume "
                          f"{program_dir} or choose another results directory")


# ----- what a run is, in arrays ----------------------------------------------------------------


def seed_keys(base_seed: int, seeds: int) -> jax.Array:
    """Seed i's key does not depend on how many seeds run beside it."""
    base = jax.random.PRNGKey(base_seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(seeds))


def run_identity(config: Any, seeds: int, base_seed: int, traced: dict[str, tuple]) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it (stored in its record)."""
    return {"config": dataclasses.asdict(config), "seeds": seeds, "base_seed": base_seed,
            "sweep": {k: list(v) for k, v in traced.items()}}


def abstract_state(config: Any, traced: tuple[str, ...], runs: int, learner: Any = None) -> Any:
    """Shapes and dtypes of the train state of ``runs`` runs (traced, nothing compiled)."""
    learner = learner if learner is not None else make_algorithm(config)
    keys = jax.ShapeDtypeStruct((runs, 2), np.uint32)
    hp = {k: jax.ShapeDtypeStruct((runs,), sw.hparam_dtype(learner.config, k)) for k in traced}
    return jax.eval_shape(jax.vmap(lambda k, h: sw.bind(learner, h).init(k)), keys, hp)


def plan_memory(learner: Any, traced: tuple[str, ...], runs: int, num_devices: int,
                block: int | None = None) -> memory.MemoryPlan:
    """The memory plan of ``runs`` runs from the train state's shapes alone (nothing compiled)."""
    per_run = memory.tree_bytes(abstract_state(learner.config, traced, 1, learner))
    return memory.plan(learner.config, per_run, runs, num_devices, block)

