"""Runs seeds x sweep points of one config as one vmapped, sharded program, chunk by chunk.

Between compiled chunks (``eval_every`` updates + a greedy evaluation) the host draws the progress
bar, appends metrics and writes checkpoints, so nothing inside the compiled program grows with
training length. The run axis (traced sweep points x seeds, jmarl/sweep.py) is split over devices
(jmarl/program.py); keys that change the program run one program each, one after another.

Results directory (keys are stable; other tools read them):
- ``config.json``: the resolved config plus ``seeds``, ``base_seed``, ``sweep``, the plan, the run
  options, package ``versions``, ``git_commit`` and the jax version;
- ``metrics.jsonl`` and ``metrics.csv``: one row per evaluation point and seed: ``env_steps``, ``seed``,
  ``return`` and, where defined, ``won``, ``optimality_gap``, ``score``, the sequential policy's
  ``return_sequential`` etc. (EVAL_KEYS first, then any other key an algorithm reports), plus the
  ``train/...`` statistics averaged over the chunk;
- ``summary.json`` (``per_seed``, ``mean``, ``ci95``) and ``summary.md``: the final evaluation, mean
  and 95% bootstrap interval across seeds;
- ``curve_<key>.png``: learning curves, mean and 95% bootstrap band across seeds;
- ``checkpoints/``: Orbax checkpoints of the full train state (jmarl/checkpoint.py); with
  ``checkpoint_replay=False`` without an off-policy learner's replay buffer (a resumed run then starts
  from an empty buffer and new episodes, so it no longer ends exactly like an uninterrupted run).
With a sweep, each point gets these files (but not ``checkpoints/``) in its own subdirectory
``key=value__...``, and ``sweep.md`` / ``sweep.json`` / ``sweep_<key>.png`` compare the points.

Stopping early, between chunks:
- a chunk in which any run's training metrics or parameters became NaN or infinite (the chunk's
  ``nonfinite/...`` flags, jmarl/core.py) is neither logged nor checkpointed: :class:`NonFiniteError`
  names the run, the update and what went non-finite, and the last good checkpoint;
- SIGINT or SIGTERM during the chunk loop lets the current chunk finish, checkpoints it (whatever
  ``checkpoint_every`` says), waits for the write and raises :class:`Interrupted`; resuming then ends
  exactly like an uninterrupted run. A second SIGINT while the checkpoint is written aborts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import math
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmarl import devices as dev
from jmarl import memory
from jmarl import sweep as sw
from jmarl.checkpoint import (
    Checkpoints,
    fingerprint,
    has_replay,
    replay_omitted,
    replay_status,
    with_fresh_replay,
    without_replay,
)
from jmarl.config import ConfigError, validate
from jmarl.core import NONFINITE, Plan
from jmarl.program import Program, abstract_state, check_block, compile_program
from jmarl.results import (
    MetricsFiles,
    bootstrap_ci,  # noqa: F401  (re-exported: older callers import it from here)
    eval_keys,
    format_table,
    metric_rows,
    read_rows,
    summarise,
    summary_markdown,
)

# Evaluation keys in the order they are reported; each appears only where the algorithm and env define it.
# ``_sequential``: TAD-PPO's sequential (coordination) policy beside its decentralised one; ``score``:
# the matrix-game score of the greedy joint action (TAD-PPO on matrix games). Keys not listed here
# are reported too, after these.
EVAL_KEYS = ("return", "won", "optimality_gap", "score", "return_sequential", "won_sequential",
             "optimality_gap_sequential", "score_sequential")

MAX_SEED = 2**32 - 1  # jax.random.PRNGKey keeps 32 bits: larger or negative seeds repeat smaller ones

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "jaxmarl", "jumanji", "jmarl")


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


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinite metrics or parameters; nothing of that chunk was kept."""


class Interrupted(RuntimeError):
    """SIGINT / SIGTERM stopped the run after a chunk; ``signum`` is the signal received."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _Stopped(Exception):
    """Raised by one program after its checkpoint; :func:`run` turns it into :class:`Interrupted` naming the
    results directory to resume (the parent of a program's directory in a sequential sweep)."""

    def __init__(self, env_steps: int, signum: int, saved: bool):
        super().__init__(env_steps, signum, saved)
        self.env_steps, self.signum, self.saved = env_steps, signum, saved


class StopRequest:
    """While active, SIGINT and SIGTERM only ask the chunk loop to stop after the current chunk; a second
    SIGINT raises KeyboardInterrupt at once. Handlers go in only on the main thread (Python allows no
    other) and the previous ones come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def first_nonfinite(metrics: dict[str, np.ndarray], runs: int) -> tuple[int, int, list[str], int] | None:
    """(run, update within the chunk, names non-finite at that update, runs affected) of the earliest
    non-finite update over the first ``runs`` runs (padding excluded); None when all stayed finite."""
    flags = {k[len(NONFINITE):]: np.asarray(v)[:runs] for k, v in metrics.items() if k.startswith(NONFINITE)}
    if not flags:
        return None
    first = np.stack(list(flags.values()))  # [names, runs], -1 = finite
    if (first < 0).all():
        return None
    earliest = np.where(first >= 0, first, np.iinfo(np.int32).max)
    run = int(np.argmin(earliest.min(axis=0)))
    update = int(earliest[:, run].min())
    names = [k for k, v in flags.items() if v[run] == update]
    return run, update, names, int((first >= 0).any(axis=0).sum())


def seed_keys(base_seed: int, seeds: int) -> jax.Array:
    """Seed i's key does not depend on how many seeds run beside it."""
    base = jax.random.PRNGKey(base_seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(seeds))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.cache
def git_commit() -> str | None:
    """The source tree's commit, with ``+dirty`` when jmarl/ or envs/ have uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "jmarl", "envs"], cwd=root, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_identity(config: Any, seeds: int, base_seed: int, traced: dict[str, tuple]) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it (stored in its record)."""
    return {"config": dataclasses.asdict(config), "seeds": seeds, "base_seed": base_seed,
            "sweep": {k: list(v) for k, v in traced.items()}}


def run_fingerprint(config: Any, seeds: int, base_seed: int, traced: dict[str, tuple]) -> str:
    return fingerprint(run_identity(config, seeds, base_seed, traced))


def checkpoint_chunks(p: Plan, every_updates: int | None) -> int:
    """Chunks between checkpoints: ``every_updates`` rounded up to whole chunks; None: about a tenth
    of the run; 0: only at the end."""
    if every_updates is None:
        every_updates = math.ceil(p.total_updates / 10)
    if every_updates == 0:
        return p.num_chunks
    return max(1, math.ceil(every_updates / p.updates_per_chunk))


# ----- reading a run back ----------------------------------------------------------------------


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def read_run(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """(validated config, the whole config.json record) of a results directory."""
    from jmarl.registry import config_class

    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run's results directory (no config.json)")
    try:
        meta = json.loads(path.read_text())
        missing = [k for k in ("algo", "env", "seeds", "base_seed") if k not in meta]
        if missing:
            raise KeyError(", ".join(missing))
        cls = config_class(meta["algo"])
        fields = {f.name: _tuples(meta[f.name]) for f in dataclasses.fields(cls) if f.name in meta}
        config = validate(cls(**fields))
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not a readable run config ({type(err).__name__}: {err})") from None
    return config, meta


def run_options(meta: dict[str, Any], **overrides: Any) -> RunOptions:
    """The options a run was started with (from its config.json), with ``overrides`` that are not None."""
    names = {f.name for f in dataclasses.fields(RunOptions)}
    values = {k: v for k, v in meta.items() if k in names}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RunOptions(**values)


def load_checkpoint(run_dir: str | Path, step: int | None = None) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """(config, host train state with the run axis first, config.json record, checkpoint record) of the
    latest (or ``step``-th) checkpoint of a program's results directory. Run r is sweep point
    r // seeds, seed r % seeds, points in ``sweep.grid`` order. The state's replay buffer is None when
    the checkpoint was written without it."""
    config, meta = read_run(run_dir)
    if meta.get("sequential"):
        raise ConfigError(f"{run_dir} holds one program per value of {', '.join(meta['sequential'])}; "
                          f"pick one of its subdirectories")
    traced = {k: tuple(v) for k, v in meta.get("sweep", {}).items()}
    runs = len(sw.grid(traced)) * meta["seeds"]
    target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state(config, tuple(traced), runs))
    ckpt = Checkpoints(Path(run_dir) / "checkpoints")
    try:
        if replay_omitted(ckpt.record(step)):
            target = without_replay(target)
        identity = run_identity(config, meta["seeds"], meta["base_seed"], traced)
        state, record = ckpt.restore(target, step, expect=identity)
    finally:
        ckpt.close()
    return config, state, meta, record


# ----- the run ---------------------------------------------------------------------------------


def run(config: Any, seeds: int = 1, out_dir: str | Path | None = None, base_seed: int = 0,
        log: Callable[[str], None] = print, *, sweep: dict[str, tuple] | None = None, resume: bool = False,
        **options: Any) -> dict[str, Any]:
    """Train ``seeds`` seeds of ``config`` (times the ``sweep`` grid) and return the summary.

    Without a sweep the summary is ``{per_seed, mean, ci95}`` (also ``summary.json``); with one it is
    ``{"sweep": [{"point": {...}, **summary}, ...]}``. ``resume`` continues from the latest checkpoint
    under ``out_dir`` (the run must have been started with the same config, seeds and sweep).
    ``options`` are :class:`RunOptions` fields (devices, vmap_block, checkpoint_every, ...).
    """
    opts = RunOptions(seeds=seeds, base_seed=base_seed, **options)
    opts.check()
    if resume and out_dir is None:
        raise ConfigError("resume needs the run's results directory")
    traced, sequential = sw.split(config.algo, dict(sweep or {}))
    for point in sw.grid({**sequential, **traced}):
        validate(dataclasses.replace(config, **point))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not resume:
        for point in sw.grid(sequential):
            _check_no_checkpoints(out / sw.point_name(point) if point else out)
    if not dev.is_main_process():
        log = lambda line: None  # noqa: E731  only process 0 logs
    try:
        return _run_programs(config, traced, sequential, out, opts, log, resume)
    except _Stopped as stopped:
        message = _interrupted_message(stopped.env_steps, out, stopped.saved)
        log(message)
        raise Interrupted(message, stopped.signum) from None


def _run_programs(config: Any, traced: dict[str, tuple], sequential: dict[str, tuple], out: Path | None,
                  opts: RunOptions, log: Callable[[str], None], resume: bool) -> dict[str, Any]:
    if not sequential:
        return _run_program(config, traced, out, opts, log, resume)

    points = sw.grid(sequential)
    log(f"{', '.join(sequential)} change{'s' if len(sequential) == 1 else ''} the compiled program: "
        f"running {len(points)} programs one after another")
    if out is not None and dev.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        meta = {**_meta(config, opts, None), "sweep": {k: list(v) for k, v in {**sequential, **traced}.items()},
                "sequential": list(sequential)}
        (out / "config.json").write_text(json.dumps(meta, indent=1))
    results = []
    for i, point in enumerate(points):
        log(f"program {i + 1}/{len(points)}: {sw.point_name(point)}")
        sub = out / sw.point_name(point) if out is not None else None
        summary = _run_program(dataclasses.replace(config, **point), traced, sub, opts, log, resume)
        entries = summary["sweep"] if traced else [{"point": {}, **summary}]
        results += [{**e, "point": {**point, **e["point"]}} for e in entries]
    if out is not None and dev.is_main_process():
        leaves = [out / sw.point_name(sp) / sw.point_name(tp) if traced else out / sw.point_name(sp)
                  for sp in points for tp in sw.grid(traced)]
        _write_sweep(out, results, leaves, opts.plots, config)
    return {"sweep": results}


def _check_no_checkpoints(program_dir: Path) -> None:
    """Refuse to mix a new run's checkpoints with an old run's (before anything compiles)."""
    ckpt = program_dir / "checkpoints"
    if ckpt.is_dir() and any(d.name.isdigit() for d in ckpt.iterdir()):
        raise ConfigError(f"{program_dir} already holds checkpoints of a run; continue it with --resume "
                          f"{program_dir} or choose another results directory")


def _meta(config: Any, opts: RunOptions, p: Plan | None) -> dict[str, Any]:
    meta = {**dataclasses.asdict(config), "seeds": opts.seeds, "base_seed": opts.base_seed}
    if p is not None:
        meta.update(total_updates=p.total_updates, planned_env_steps=p.total_steps,
                    steps_per_update=p.steps_per_update, updates_per_chunk=p.updates_per_chunk,
                    num_chunks=p.num_chunks)
    meta.update(jax=jax.__version__, devices=opts.devices, vmap_block=opts.vmap_block,
                checkpoint_every=opts.checkpoint_every, keep_checkpoints=opts.keep_checkpoints,
                checkpoint_replay=opts.checkpoint_replay, versions=versions(), git_commit=git_commit())
    return meta


def _run_program(config: Any, traced: dict[str, tuple], out: Path | None, opts: RunOptions,
                 log: Callable[[str], None], resume: bool) -> dict[str, Any]:
    from jmarl.progress import Progress

    points, seeds = sw.grid(traced), opts.seeds
    runs = len(points) * seeds
    identity = run_identity(config, seeds, opts.base_seed, traced)
    ckpt = None
    if out is not None and opts.checkpoints:
        ckpt = Checkpoints(out / "checkpoints", opts.keep_checkpoints, writer=dev.is_main_process())
        for moved in ckpt.moved_aside:
            log(f"incomplete checkpoint (an interrupted write) moved aside to {moved}")
    resuming = resume and ckpt is not None and bool(ckpt.steps())
    if resuming:
        latest = ckpt.steps()[-1]
        ckpt.check_identity(ckpt.record(latest), identity, latest)
    num_devices = opts.devices if opts.devices is not None else len(jax.devices())
    prog = compile_program(config, tuple(traced), runs, num_devices, opts.vmap_block)
    if prog.memory.warning:
        log(prog.memory.warning)
    log(prog.memory.line())
    p, main = prog.plan, dev.is_main_process()
    steps_per_chunk = p.updates_per_chunk * p.steps_per_update
    every = checkpoint_chunks(p, opts.checkpoint_every)
    leaf = [out / sw.point_name(pt) if (out is not None and traced) else out for pt in points]

    keys = np.asarray(jax.device_get(seed_keys(opts.base_seed, seeds)))
    host_inputs = dev.pad_runs((np.tile(keys, (len(points), 1)), sw.hparam_arrays(config, points, seeds)),
                               prog.padded)
    keys_in, hparams = prog.put(host_inputs)
    done, state = 0, None
    if resuming:
        state, record = _restore(ckpt, prog, identity)
        done = record["chunks_done"]
        log(f"resumed from {ckpt.directory} at chunk {done}/{p.num_chunks} ({done * steps_per_chunk:,} env steps "
            f"per run)")
        if replay_omitted(record):
            with _device_memory(config, prog):
                fresh = prog.init(prog.put(restart_keys(host_inputs[0], done)), hparams)
            state = with_fresh_replay(state, fresh)
            del fresh
            log(_no_replay_message(config, done, opts.checkpoint_replay))
    elif resume:
        log(f"no checkpoint under {out}: starting from scratch")
    if main and out is not None:
        _prepare_files(config, out, leaf, points, opts, p, traced, done * steps_per_chunk if resuming else None)
    if state is None:
        with _device_memory(config, prog):
            state = prog.init(keys_in, hparams)
    if ckpt is not None and not opts.checkpoint_replay and has_replay(prog.abstract_state):
        log("checkpoints leave the replay buffer out (--no-checkpoint-replay): a run resumed from one starts "
            "with an empty buffer and will differ from an uninterrupted run")

    log(f"{config.algo} on {config.env}: {seeds} seed(s)" + (f" x {len(points)} sweep points" if traced else "")
        + f" = {runs} runs on {prog.mesh.devices.size} device(s); {p.num_chunks} chunks of {p.updates_per_chunk} "
        f"updates x {p.steps_per_update} env steps; compiled in {prog.compile_s:.1f}s")
    progress = Progress(p.total_steps, runs, log)
    progress.start(done * steps_per_chunk)
    last_rows: list[list[dict]] = []
    stop = StopRequest()
    try:
        with stop:
            for i in range(done, p.num_chunks):
                with _device_memory(config, prog):
                    state, metrics = prog.chunk(state, hparams)
                    metrics = dev.fetch(metrics)
                memory.write_report(prog.memory, {"compile_s": prog.compile_s, "chunks_done": i + 1})
                bad = first_nonfinite(metrics, runs)
                if bad is not None:  # before any row or checkpoint of this chunk
                    raise _nonfinite_error(config, points, seeds, p, i, bad, ckpt)
                last_rows = [metric_rows(metrics, range(j * seeds, (j + 1) * seeds), range(seeds), EVAL_KEYS)
                             for j in range(len(points))]
                if main and out is not None:
                    for d, rows in zip(leaf, last_rows, strict=True):
                        MetricsFiles(d).append(rows)
                flat = [r for rows in last_rows for r in rows]
                progress.update(flat[0]["env_steps"], {k: float(np.mean([r[k] for r in flat]))
                                                       for k in eval_keys(flat[0], EVAL_KEYS)})
                stopping = stop.signum is not None
                if ckpt is not None and (i + 1 == p.num_chunks or (i + 1) % every == 0 or stopping):
                    _save(ckpt, prog, state, i + 1, identity, flat[0]["env_steps"], opts.checkpoint_replay)
                    if prog.grouped:
                        ckpt.wait()  # the next chunk rewrites the host state in place
                if stopping:
                    if ckpt is not None:
                        ckpt.wait()  # a second SIGINT here aborts (KeyboardInterrupt)
                    if progress.in_place:
                        sys.stdout.write("\n")
                    raise _Stopped(flat[0]["env_steps"], stop.signum, ckpt is not None)
    except KeyboardInterrupt:
        raise  # aborting: do not wait for a checkpoint write (an incomplete one is never restored)
    except BaseException:
        if ckpt is not None:
            ckpt.close()
        raise
    if ckpt is not None:
        ckpt.close()

    summaries = []
    for j, pt in enumerate(points):
        rows = read_rows(leaf[j] / "metrics.jsonl") if out is not None else last_rows[j]
        final_step = max(r["env_steps"] for r in rows)
        summary = summarise([r for r in rows if r["env_steps"] == final_step], EVAL_KEYS)
        summaries.append({"point": pt, **summary})
        if main and out is not None:
            _write_leaf(leaf[j], summary, rows, config, pt, seeds, opts.plots)
    if not traced:
        log(format_table(summaries[0]))
        return {k: v for k, v in summaries[0].items() if k != "point"}
    log(_sweep_table(summaries))
    if main and out is not None:
        _write_sweep(out, summaries, leaf, opts.plots, config)
    return {"sweep": summaries}


def _restore(ckpt: Checkpoints, prog: Program, identity: dict) -> tuple[Any, dict]:
    """The latest checkpoint as global arrays (padded runs are not stored: they are re-derived); without
    its replay buffer (None) when it was written without one."""
    abstract = prog.abstract_state
    if replay_omitted(ckpt.record()):
        abstract = without_replay(abstract)
    if prog.padded == prog.runs and not prog.grouped:
        return ckpt.restore(abstract, expect=identity)
    host = jax.tree.map(lambda x: np.zeros((prog.runs,) + x.shape[1:], x.dtype), abstract)
    state, record = ckpt.restore(host, expect=identity)
    return prog.put(dev.pad_runs(state, prog.padded)), record


@contextlib.contextmanager
def _device_memory(config: Any, prog: Program) -> Iterator[None]:
    """XLA's out-of-memory error inside the block becomes :class:`jmarl.memory.OutOfMemory` (one line)."""
    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        oom = memory.out_of_memory(err, config, prog.memory)
        if oom is None:
            raise
        raise oom from None


def restart_keys(keys: np.ndarray, chunks_done: int) -> np.ndarray:
    """Keys of the fresh state that a run resumed without its replay buffer takes its empty buffer and new
    episodes from: each run's key folded with the chunks done, so these episodes differ from its first ones."""
    return np.asarray(jax.vmap(lambda key: jax.random.fold_in(key, chunks_done))(keys))


def _no_replay_message(config: Any, chunks_done: int, save_replay: bool) -> str:
    batch = getattr(config, "batch_size", None)
    wait = f"batch_size={batch} complete episodes" if batch is not None else "a batch of complete episodes"
    decides = "; the checkpoint decides, although this run saves the buffer" if save_replay else ""
    later = "save the buffer" if save_replay else "leave the buffer out again"
    return (f"checkpoint {chunks_done} holds no replay buffer (written with --no-checkpoint-replay{decides}): the "
            f"buffer starts empty and the envs start new episodes; gradient steps wait until it again holds {wait}, "
            f"so results will differ from an uninterrupted run; later checkpoints {later}")


def _save(ckpt: Checkpoints, prog: Program, state: Any, chunks_done: int, identity: dict, env_steps: int,
          save_replay: bool = True) -> None:
    """Start writing checkpoint ``chunks_done`` of the real runs, without the replay buffer unless ``save_replay``."""
    status = replay_status(state, save_replay)
    kept = state if save_replay else without_replay(state)
    real = kept if prog.padded == prog.runs else jax.tree.map(lambda x: x[:prog.runs], kept)
    ckpt.save(chunks_done, real, {"chunks_done": chunks_done, "updates_done": chunks_done * prog.plan.updates_per_chunk,
                                  "env_steps": env_steps, "fingerprint": fingerprint(identity), "run": identity,
                                  "replay_buffer": status})


def _nonfinite_error(config: Any, points: list[dict], seeds: int, p: Plan, chunk: int,
                     bad: tuple[int, int, list[str], int], ckpt: Checkpoints | None) -> NonFiniteError:
    run, update, names, affected = bad
    point = f" at sweep point {sw.point_name(points[run // seeds])}" if points[run // seeds] else ""
    number = chunk * p.updates_per_chunk + update + 1
    others = f" ({affected} runs affected)" if affected > 1 else ""
    if ckpt is None:
        kept = "checkpoints are off"
    else:
        ckpt.wait()
        steps = ckpt.steps()
        kept = f"last good checkpoint: {ckpt.step_dir(steps[-1])}" if steps else "no checkpoint was written yet"
    return NonFiniteError(f"{config.algo} on {config.env}, seed {run % seeds}{point}: {', '.join(names)} became "
                          f"NaN or infinite in update {number} of {p.total_updates} "
                          f"(env steps {number * p.steps_per_update}){others}; that chunk was not logged or saved; "
                          f"{kept}")


def _interrupted_message(env_steps: int, out: Path | None, saved: bool) -> str:
    if saved:
        return f"interrupted at env steps {env_steps}; resume with: python experiments/run.py --resume {out}"
    where = "checkpoints are off" if out is not None else "no results directory"
    return f"interrupted at env steps {env_steps}; nothing was saved to resume from ({where})"


def _prepare_files(config: Any, out: Path, leaf: list[Path], points: list[dict], opts: RunOptions, p: Plan,
                   traced: dict, kept_steps: int | None) -> None:
    """config.json files and fresh metrics files; a resumed run keeps the rows up to ``kept_steps``."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {**_meta(config, opts, p), "sweep": {k: list(v) for k, v in traced.items()}}
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    for d, pt in zip(leaf, points, strict=True):
        if traced:
            d.mkdir(parents=True, exist_ok=True)
            point_meta = {**_meta(dataclasses.replace(config, **pt), opts, p), "sweep_point": pt}
            (d / "config.json").write_text(json.dumps(point_meta, indent=1))
        rows = read_rows(d / "metrics.jsonl") if kept_steps is not None else []
        MetricsFiles(d).reset([r for r in rows if r["env_steps"] <= (kept_steps or 0)])


def _optimum(config: Any) -> float | None:
    import envs

    return envs.make(config.env).spec.optimal_return


def _write_leaf(d: Path, summary: dict, rows: list[dict], config: Any, point: dict, seeds: int, plots: bool) -> None:
    (d / "summary.json").write_text(json.dumps(summary, indent=1))
    title = f"{config.algo} on {config.env}" + (f" ({sw.point_name(point)})" if point else "")
    steps = summary["per_seed"][0]["env_steps"]
    note = (f"Final greedy evaluation after {steps:,} env steps per seed, {config.eval_episodes} episodes per seed; "
            f"mean and 95% percentile-bootstrap interval across {seeds} seed{'s' if seeds > 1 else ''}.")
    (d / "summary.md").write_text(summary_markdown(summary, title, note))
    if plots:
        from jmarl.plots import learning_curves

        learning_curves(rows, d, title, EVAL_KEYS, _optimum(config))


def _sweep_table(summaries: list[dict]) -> str:
    keys = list(summaries[0]["mean"])
    lines = ["| point | " + " | ".join(f"{k} (95% interval)" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for s in summaries:
        cells = [f"{s['mean'][k]:.3f} [{s['ci95'][k][0]:.3f}, {s['ci95'][k][1]:.3f}]" for k in keys]
        lines.append(f"| {sw.point_name(s['point'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_sweep(out: Path, summaries: list[dict], leaf: list[Path], plots: bool, config: Any) -> None:
    (out / "sweep.json").write_text(json.dumps(summaries, indent=1))
    (out / "sweep.md").write_text(f"# {config.algo} on {config.env}: sweep\n\nFinal greedy evaluation, mean and "
                                  f"95% bootstrap interval across seeds.\n\n{_sweep_table(summaries)}\n")
    if plots:
        from jmarl.plots import plot_curves

        series = {sw.point_name(s["point"]): read_rows(d / "metrics.jsonl") for s, d in zip(summaries, leaf,
                                                                                             strict=True)}
        for key in summaries[0]["mean"]:
            plot_curves(series, key, out / f"sweep_{key}.png", f"{config.algo} on {config.env}",
                        _optimum(config) if key == "return" else None)
