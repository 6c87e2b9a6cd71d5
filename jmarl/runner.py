"""Runs seeds x sweep points of one config as one vmapped, sharded program, chunk by chunk.

Between compiled chunks (``eval_every`` updates + a greedy evaluation) the host draws the progress
bar, appends metrics and writes checkpoints, so nothing inside the compiled program grows with
training length. The run axis (traced sweep points x seeds, jmarl/sweep.py) is split over devices
(jmarl/devices.py); keys that change the program run one program each, one after another.

Results directory (keys are stable; other tools read them):
- ``config.json``: the resolved config plus ``seeds``, ``base_seed``, ``sweep``, the plan, package
  ``versions``, ``git_commit`` and the jax version;
- ``metrics.jsonl`` and ``metrics.csv``: one row per evaluation point and seed: ``env_steps``, ``seed``,
  ``return`` and, where defined, ``won``, ``optimality_gap``, ``score``, the sequential policy's
  ``return_sequential`` etc. (EVAL_KEYS first, then any other key an algorithm reports), plus the
  ``train/...`` statistics averaged over the chunk;
- ``summary.json`` (``per_seed``, ``mean``, ``ci95``) and ``summary.md``: the final evaluation, mean
  and 95% bootstrap interval across seeds;
- ``curve_<key>.png``: learning curves, mean and 95% bootstrap band across seeds;
- ``checkpoints/``: Orbax checkpoints of the full train state (jmarl/checkpoint.py).
With a sweep, each point gets these files (but not ``checkpoints/``) in its own subdirectory
``key=value__...``, and ``sweep.md`` / ``sweep.json`` / ``sweep_<key>.png`` compare the points.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import math
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmarl import devices as dev
from jmarl import sweep as sw
from jmarl.checkpoint import CheckpointError, Checkpoints, fingerprint
from jmarl.config import ConfigError, validate
from jmarl.core import Plan, make_chunk, plan
from jmarl.registry import make_algorithm
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

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "jaxmarl", "jumanji", "jmarl")


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
    """The source tree's commit, with ``+dirty`` when it has uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "jmarl", "envs"], cwd=root, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ----- one compiled program ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Program:
    """Compiled init and chunk over the run axis (points x seeds, padded to the device count)."""

    algo: Any
    plan: Plan
    mesh: Any
    runs: int
    padded: int
    init: Callable
    chunk: Callable
    abstract_state: Any
    compile_s: float


@functools.lru_cache(maxsize=8)
def _program(config: Any, traced: tuple[str, ...], runs: int, num_devices: int) -> Program:
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
    hp = {k: jax.ShapeDtypeStruct((padded,), _dtype(config, k), sharding=rows) for k in traced}
    t0 = time.perf_counter()
    init = jax.jit(jax.vmap(init_one), out_shardings=rows).lower(keys, hp).compile()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rows),
                            jax.eval_shape(jax.vmap(init_one), keys, hp))
    chunk = jax.jit(jax.vmap(chunk_one), out_shardings=rows, donate_argnums=0).lower(abstract, hp).compile()
    return Program(algo, p, mesh, runs, padded, init, chunk, abstract, time.perf_counter() - t0)


def _dtype(config: Any, key: str) -> Any:
    return np.float32 if isinstance(getattr(config, key), float) else np.int32


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


def abstract_state(config: Any, traced: tuple[str, ...], runs: int) -> Any:
    """Shapes and dtypes of the vmapped train state of ``runs`` runs (traced, nothing compiled)."""
    algo = make_algorithm(config)
    keys = jax.ShapeDtypeStruct((runs, 2), np.uint32)
    hp = {k: jax.ShapeDtypeStruct((runs,), _dtype(config, k)) for k in traced}
    return jax.eval_shape(jax.vmap(lambda k, h: sw.bind(algo, h).init(k)), keys, hp)


def load_checkpoint(run_dir: str | Path, step: int | None = None) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """(config, host train state with the run axis first, config.json record, checkpoint record) of the
    latest (or ``step``-th) checkpoint of a program's results directory. Run r is sweep point
    r // seeds, seed r % seeds, points in ``sweep.grid`` order."""
    config, meta = read_run(run_dir)
    if meta.get("sequential"):
        raise ConfigError(f"{run_dir} holds one program per value of {', '.join(meta['sequential'])}; "
                          f"pick one of its subdirectories")
    traced = {k: tuple(v) for k, v in meta.get("sweep", {}).items()}
    runs = len(sw.grid(traced)) * meta["seeds"]
    target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state(config, tuple(traced), runs))
    ckpt = Checkpoints(Path(run_dir) / "checkpoints")
    try:
        state, record = ckpt.restore(target, step, expect=run_fingerprint(config, meta["seeds"], meta["base_seed"],
                                                                            traced))
    finally:
        ckpt.close()
    return config, state, meta, record


# ----- checkpoint cadence ----------------------------------------------------------------------


def checkpoint_chunks(p: Plan, every_updates: int | None) -> int:
    """Chunks between checkpoints: ``every_updates`` rounded up to whole chunks; None: about a tenth
    of the run; 0: only at the end."""
    if every_updates is None:
        every_updates = math.ceil(p.total_updates / 10)
    if every_updates == 0:
        return p.num_chunks
    return max(1, math.ceil(every_updates / p.updates_per_chunk))


# ----- the run ---------------------------------------------------------------------------------


def run(config: Any, seeds: int = 1, out_dir: str | Path | None = None, base_seed: int = 0,
        log: Callable[[str], None] = print, *, sweep: dict[str, tuple] | None = None, devices: int | None = None,
        checkpoint_every: int | None = None, keep_checkpoints: int = 3, checkpoints: bool = True,
        resume: bool = False, plots: bool = True) -> dict[str, Any]:
    """Train ``seeds`` seeds of ``config`` (times the ``sweep`` grid) and return the summary.

    Without a sweep the summary is ``{per_seed, mean, ci95}`` (also ``summary.json``); with one it is
    ``{"sweep": [{"point": {...}, **summary}, ...]}``. ``resume`` continues from the latest checkpoint
    under ``out_dir`` (the run must have been started with the same config, seeds and sweep).
    ``checkpoint_every`` counts updates (None: about a tenth of the run; 0: only at the end).
    """
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    if resume and out_dir is None:
        raise ConfigError("resume needs the run's results directory")
    if checkpoint_every is not None and checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0 updates (0 = only at the end), got {checkpoint_every}")
    if keep_checkpoints < 1:
        raise ConfigError(f"--keep-checkpoints must be >= 1, got {keep_checkpoints}")
    traced, sequential = sw.split(config.algo, dict(sweep or {}))
    for point in sw.grid({**sequential, **traced}):
        validate(dataclasses.replace(config, **point))
    if out_dir is not None and not resume:
        for point in sw.grid(sequential):
            _check_no_checkpoints(Path(out_dir) / sw.point_name(point) if point else Path(out_dir))
    if not dev.is_main_process():
        log = lambda line: None  # noqa: E731  only process 0 logs
    options = dict(seeds=seeds, base_seed=base_seed, log=log, devices=devices, checkpoint_every=checkpoint_every,
                   keep_checkpoints=keep_checkpoints, checkpoints=checkpoints, resume=resume, plots=plots)
    if not sequential:
        return _run_program(config, traced, Path(out_dir) if out_dir is not None else None, **options)

    points = sw.grid(sequential)
    log(f"{', '.join(sequential)} change{'s' if len(sequential) == 1 else ''} the compiled program: "
        f"running {len(points)} programs one after another")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and dev.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        meta = _meta(config, seeds, base_seed, None, devices, checkpoint_every, keep_checkpoints)
        meta["sweep"] = {k: list(v) for k, v in {**sequential, **traced}.items()}
        meta["sequential"] = list(sequential)
        (out / "config.json").write_text(json.dumps(meta, indent=1))
    results = []
    for i, point in enumerate(points):
        log(f"program {i + 1}/{len(points)}: {sw.point_name(point)}")
        sub = out / sw.point_name(point) if out is not None else None
        summary = _run_program(dataclasses.replace(config, **point), traced, sub, **options)
        entries = summary["sweep"] if traced else [{"point": {}, **summary}]
        results += [{**e, "point": {**point, **e["point"]}} for e in entries]
    if out is not None and dev.is_main_process():
        _write_sweep(out, results, _leaf_dirs(out, points, traced), plots, config)
    return {"sweep": results}


def _check_no_checkpoints(program_dir: Path) -> None:
    """Refuse to mix a new run's checkpoints with an old run's (before anything compiles)."""
    ckpt = program_dir / "checkpoints"
    if ckpt.is_dir() and any(d.name.isdigit() for d in ckpt.iterdir()):
        raise ConfigError(f"{program_dir} already holds checkpoints of a run; continue it with --resume "
                          f"{program_dir} or choose another results directory")


def _meta(config, seeds, base_seed, p, devices, checkpoint_every, keep) -> dict[str, Any]:
    meta = {**dataclasses.asdict(config), "seeds": seeds, "base_seed": base_seed}
    if p is not None:
        meta.update(total_updates=p.total_updates, planned_env_steps=p.total_steps,
                    steps_per_update=p.steps_per_update, updates_per_chunk=p.updates_per_chunk,
                    num_chunks=p.num_chunks)
    meta.update(jax=jax.__version__, devices=devices, checkpoint_every=checkpoint_every,
                keep_checkpoints=keep, versions=versions(), git_commit=git_commit())
    return meta


def _leaf_dirs(out: Path, seq_points: list[dict], traced: dict) -> list[Path]:
    return [out / sw.point_name(sp) / sw.point_name(tp) if traced else out / sw.point_name(sp)
            for sp in seq_points for tp in sw.grid(traced)]


def run_fingerprint(config: Any, seeds: int, base_seed: int, traced: dict[str, tuple]) -> str:
    return fingerprint({"config": dataclasses.asdict(config), "seeds": seeds, "base_seed": base_seed,
                        "sweep": {k: list(v) for k, v in traced.items()}})


def _run_program(config: Any, traced: dict[str, tuple], out: Path | None, *, seeds: int, base_seed: int,
                 log: Callable[[str], None], devices: int | None, checkpoint_every: int | None,
                 keep_checkpoints: int, checkpoints: bool, resume: bool, plots: bool) -> dict[str, Any]:
    from jmarl.progress import Progress

    points = sw.grid(traced)
    runs = len(points) * seeds
    fp = run_fingerprint(config, seeds, base_seed, traced)
    ckpt = Checkpoints(out / "checkpoints", keep_checkpoints) if (out is not None and checkpoints) else None
    if resume and ckpt is not None and ckpt.steps() and ckpt.record().get("fingerprint") != fp:
        raise CheckpointError(f"the checkpoints under {ckpt.directory} belong to a different run (its config, "
                              f"seeds or sweep differ); resume with the run's own config.json")
    num_devices = devices if devices is not None else len(jax.devices())
    prog = _program(config, tuple(traced), runs, num_devices)
    p, main = prog.plan, dev.is_main_process()
    every = checkpoint_chunks(p, checkpoint_every)
    leaf = [out / sw.point_name(pt) if (out is not None and traced) else out for pt in points]

    keys = np.asarray(jax.device_get(seed_keys(base_seed, seeds)))
    host_inputs = dev.pad_runs((np.tile(keys, (len(points), 1)), sw.hparam_arrays(config, points, seeds)),
                               prog.padded)
    keys_in, hparams = dev.put_runs(host_inputs, prog.mesh)

    done = 0
    state = None
    if resume and ckpt is not None and ckpt.steps():
        state, record = _restore(ckpt, prog, fp)
        done = record["chunks_done"]
        log(f"resumed from {ckpt.directory} at chunk {done}/{p.num_chunks} "
            f"({done * p.updates_per_chunk * p.steps_per_update:,} env steps per run)")
    elif resume:
        log(f"no checkpoint under {out}: starting from scratch")
    if main and out is not None:
        _prepare_files(config, out, leaf, points, seeds, base_seed, p, devices, checkpoint_every, keep_checkpoints,
                       traced, done * p.updates_per_chunk * p.steps_per_update, resume and state is not None)
    if state is None:
        state = prog.init(keys_in, hparams)

    log(f"{config.algo} on {config.env}: {seeds} seed(s)" + (f" x {len(points)} sweep points" if traced else "")
        + f" = {runs} runs on {prog.mesh.devices.size} device(s); {p.num_chunks} chunks of {p.updates_per_chunk} "
        f"updates x {p.steps_per_update} env steps; compiled in {prog.compile_s:.1f}s")
    progress = Progress(p.total_steps, runs, log)
    progress.start(done * p.updates_per_chunk * p.steps_per_update)
    last_rows: list[list[dict]] = []
    try:
        for i in range(done, p.num_chunks):
            state, metrics = prog.chunk(state, hparams)
            metrics = dev.fetch(metrics)
            last_rows = [metric_rows(metrics, range(j * seeds, (j + 1) * seeds), range(seeds), EVAL_KEYS)
                         for j in range(len(points))]
            if main and out is not None:
                for d, rows in zip(leaf, last_rows, strict=True):
                    MetricsFiles(d).append(rows)
            flat = [r for rows in last_rows for r in rows]
            progress.update(flat[0]["env_steps"], {k: float(np.mean([r[k] for r in flat]))
                                                   for k in eval_keys(flat[0], EVAL_KEYS)})
            if ckpt is not None and (i + 1 == p.num_chunks or (i + 1) % every == 0):
                _save(ckpt, prog, state, i + 1, fp, flat[0]["env_steps"])
    finally:
        if ckpt is not None:
            ckpt.close()

    summaries = []
    for j, pt in enumerate(points):
        rows = read_rows(leaf[j] / "metrics.jsonl") if out is not None else last_rows[j]
        final_step = max(r["env_steps"] for r in rows)
        summary = summarise([r for r in rows if r["env_steps"] == final_step], EVAL_KEYS)
        summaries.append({"point": pt, **summary})
        if main and out is not None:
            _write_leaf(leaf[j], summary, rows, config, pt, seeds, plots)
    if not traced:
        log(format_table(summaries[0]))
        return {k: v for k, v in summaries[0].items() if k != "point"}
    log(_sweep_table(summaries))
    if main and out is not None:
        _write_sweep(out, summaries, leaf, plots, config)
    return {"sweep": summaries}


def _restore(ckpt: Checkpoints, prog: Program, fp: str) -> tuple[Any, dict]:
    """The latest checkpoint as global arrays (padded runs are not stored: they are re-derived)."""
    if prog.padded == prog.runs:
        return ckpt.restore(prog.abstract_state, expect=fp)
    host = jax.tree.map(lambda x: np.zeros((prog.runs,) + x.shape[1:], x.dtype), prog.abstract_state)
    state, record = ckpt.restore(host, expect=fp)
    return dev.put_runs(dev.pad_runs(state, prog.padded), prog.mesh), record


def _save(ckpt: Checkpoints, prog: Program, state: Any, chunks_done: int, fp: str, env_steps: int) -> None:
    real = state if prog.padded == prog.runs else jax.tree.map(lambda x: x[:prog.runs], state)
    ckpt.save(chunks_done, real, {"chunks_done": chunks_done, "updates_done": chunks_done * prog.plan.updates_per_chunk,
                                  "env_steps": env_steps, "fingerprint": fp})


def _prepare_files(config, out, leaf, points, seeds, base_seed, p, devices, checkpoint_every, keep, traced,
                   steps_done, resumed) -> None:
    """config.json files and fresh metrics files (keeping the rows up to the checkpoint when resuming)."""
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(config, seeds, base_seed, p, devices, checkpoint_every, keep)
    meta["sweep"] = {k: list(v) for k, v in traced.items()}
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    for d, pt in zip(leaf, points, strict=True):
        if traced:
            d.mkdir(parents=True, exist_ok=True)
            point_meta = {**_meta(dataclasses.replace(config, **pt), seeds, base_seed, p, devices, checkpoint_every,
                                  keep), "sweep_point": pt}
            (d / "config.json").write_text(json.dumps(point_meta, indent=1))
        kept = [r for r in read_rows(d / "metrics.jsonl") if r["env_steps"] <= steps_done] if resumed else []
        MetricsFiles(d).reset(kept)


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
