"""The run spec: one resolved, validated, frozen description of a training run, made once.

The run path is one-way: the command line or a library call -> :func:`make_run_spec` (every check that
can happen before compiling, each once: run options, the sweep split, every sweep point's config, each
program's learner and budget, the results directory (a new run never writes over an earlier run's
results; a resumed run has something to resume from and keeps its chunk size), the memory plan) ->
``jmarl.program`` compiles each :class:`ProgramSpec` -> ``jmarl.runner`` runs the chunks ->
``jmarl.run_dir`` writes the results.

A run is ``seeds`` x the traced sweep grid (one vectorised axis of one program, run r = point
r // seeds, seed r % seeds) for each point of the sequential sweep grid (one program each).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmarl import devices as dev
from jmarl import memory
from jmarl import sweep as sw
from jmarl.checkpoint import is_complete
from jmarl.config import ConfigError, validate
from jmarl.core import Plan, plan
from jmarl.registry import build_learner, make_algorithm

MAX_SEED = 2**32 - 1  # jax.random.PRNGKey keeps 32 bits: larger or negative seeds repeat smaller ones
MAX_PLANNED_STEPS = 2**31 - 1  # step counters are int32 inside the compiled program
LOGGERS = ("tensorboard", "wandb")  # the backends of jmarl.loggers


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
    loggers: tuple[str, ...] = ()  # metric loggers beside the results files: "tensorboard", "wandb" (jmarl.loggers)
    time_limit_s: float | None = None  # stop, checkpoint saved, after the first chunk ending this long after the start

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
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ConfigError(f"--time-limit must be > 0 minutes, got {self.time_limit_s / 60:g}")
        if self.time_limit_s is not None and not self.checkpoints:
            raise ConfigError("--time-limit stops a run to resume it later, which needs checkpoints: drop "
                              "--no-checkpoints")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise ConfigError(f"unknown logger {unknown[0]!r}; valid: {', '.join(LOGGERS)}")
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
    if opts.loggers and out is None:
        flags = " and ".join(f"--{name}" for name in opts.loggers)
        raise ConfigError(f"{flags} write{'s' if len(opts.loggers) == 1 else ''} under the results directory; "
                          f"drop --no-save (or the logger)")
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
        check_fresh_dir(out_path)
        for point, *_ in programs:
            if point:
                check_fresh_dir(out_path / sw.point_name(point))
    if out_path is not None and resume:
        for point, point_config, _, p in programs:
            check_resumable(out_path / sw.point_name(point) if point else out_path, point_config, p)
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


RESULT_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "summary.json")


def checkpoint_steps(program_dir: Path) -> list[str]:
    """Names of the step directories under ``program_dir/checkpoints`` (complete or not)."""
    ckpt = program_dir / "checkpoints"
    return sorted(d.name for d in ckpt.iterdir() if d.name.isdigit()) if ckpt.is_dir() else []


def has_complete_checkpoint(program_dir: Path) -> bool:
    return any(is_complete(program_dir / "checkpoints" / name) for name in checkpoint_steps(program_dir))


def check_fresh_dir(directory: Path) -> None:
    """A new run never writes over an earlier run's checkpoints or results files (before anything compiles)."""
    if checkpoint_steps(directory):
        raise ConfigError(f"{directory} already holds checkpoints of a run; continue it with --resume "
                          f"{directory} or choose another results directory")
    found = [name for name in RESULT_FILES if (directory / name).is_file()]
    if found:
        raise ConfigError(f"{directory} already holds a run's results ({', '.join(found)}) and no checkpoint to "
                          f"resume from; choose another results directory (its files stay as they are)")


def _record(program_dir: Path) -> dict[str, Any]:
    """The program directory's config.json ({} when absent or unreadable)."""
    try:
        record = json.loads((program_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _results(program_dir: Path, finished: bool) -> list[str]:
    """Results files of ``program_dir`` (or of its sweep points' subdirectories): the summaries of a finished
    run, and with ``finished=False`` also metrics files that hold rows."""
    found = []
    for d in (program_dir, *sorted(x for x in program_dir.iterdir() if x.is_dir() and "=" in x.name)):
        if (d / "summary.json").is_file():
            found.append(str((d / "summary.json").relative_to(program_dir)))
        metrics = d / "metrics.jsonl"
        if not finished and metrics.is_file() and metrics.stat().st_size > 0:
            found.append(str(metrics.relative_to(program_dir)))
    return found


def check_resumable(program_dir: Path, config: Any, p: Plan) -> None:
    """A resumed program continues from a checkpoint. Without one it starts from scratch only when that
    overwrites nothing it could not redo: no summary of a finished run, and no rows of a run made without
    checkpoints. A larger ``total_steps`` extends it in chunks of the same size; a smaller one is refused."""
    if not program_dir.is_dir():
        return
    record = _record(program_dir)
    if not has_complete_checkpoint(program_dir):
        no_checkpoints = record.get("checkpoints") is False
        found = _results(program_dir, finished=not no_checkpoints)
        if found:
            why = " (it ran with --no-checkpoints)" if no_checkpoints else ""
            raise ConfigError(f"{program_dir} holds no checkpoint to resume from{why} and already holds results "
                              f"({', '.join(found)}); they stay as they are: start a new run in another results "
                              f"directory")
        return
    budget, chunk = record.get("total_steps"), record.get("updates_per_chunk")
    if isinstance(budget, int) and config.total_steps < budget:
        raise ConfigError(f"total_steps={config.total_steps} is below the budget of the run in {program_dir} "
                          f"({budget} env steps per seed): a resumed run can be extended, not shortened")
    if isinstance(chunk, int) and chunk != p.updates_per_chunk:
        raise ConfigError(f"the run in {program_dir} trained in chunks of {chunk} updates (its whole budget was "
                          f"less than eval_every={config.eval_every} updates); total_steps={config.total_steps} "
                          f"would train in chunks of {p.updates_per_chunk}, which its checkpoints cannot continue: "
                          f"start a new run with this budget instead")


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

