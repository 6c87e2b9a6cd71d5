"""A run's results directory: writing it (config.json, metrics files, summaries, plots, sweep tables) and
reading it back (the config, the options, the latest checkpoint).

Results directory (keys are stable; other tools read them):
- ``config.json``: the resolved config plus ``seeds``, ``base_seed``, ``sweep``, the plan, the run
  options, package ``versions``, ``git_commit`` and the jax version;
- ``metrics.jsonl`` and ``metrics.csv``: one row per evaluation point and seed: ``env_steps``, ``seed``,
  ``return`` and, where defined, ``won``, ``optimality_gap``, ``score``, the sequential policy's
  ``return_sequential`` etc. (``results.EVAL_KEYS`` first, then any other key an algorithm reports), plus
  the ``train/...`` statistics averaged over the chunk;
- ``summary.json`` (``per_seed``, ``mean``, ``ci95``) and ``summary.md``: the final evaluation, mean
  and 95% bootstrap interval across seeds;
- ``curve_<key>.png``: learning curves, mean and 95% bootstrap band across seeds;
- ``checkpoints/``: Orbax checkpoints of the full train state (jmarl/checkpoint.py); with
  ``checkpoint_replay=False`` without an off-policy learner's replay buffer (a resumed run then starts
  from an empty buffer and new episodes, so it no longer ends exactly like an uninterrupted run).
With a sweep, each point gets these files (but not ``checkpoints/``) in its own subdirectory
``key=value__...``, and ``sweep.md`` / ``sweep.json`` / ``sweep_<key>.png`` compare the points.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax
import numpy as np

import envs
from jmarl import sweep as sw
from jmarl.checkpoint import Checkpoints, has_replay, replay_omitted, without_replay
from jmarl.config import ConfigError, defaults_of_later_fields, validate
from jmarl.core import Plan
from jmarl.registry import config_class
from jmarl.results import EVAL_KEYS, MetricsFiles, read_rows, summary_markdown
from jmarl.spec import RunOptions, RunSpec, abstract_state, run_identity

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "jaxmarl", "jumanji", "jmarl")


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


# ----- writing -------------------------------------------------------------------------------


def config_record(config: Any, opts: RunOptions, p: Plan | None) -> dict[str, Any]:
    """What config.json holds: the resolved config, the runs, the plan, the options and the versions."""
    meta = {**dataclasses.asdict(config), "seeds": opts.seeds, "base_seed": opts.base_seed}
    if p is not None:
        meta.update(total_updates=p.total_updates, planned_env_steps=p.total_steps,
                    steps_per_update=p.steps_per_update, updates_per_chunk=p.updates_per_chunk,
                    num_chunks=p.num_chunks)
    meta.update(jax=jax.__version__, devices=opts.devices, vmap_block=opts.vmap_block,
                checkpoint_every=opts.checkpoint_every, keep_checkpoints=opts.keep_checkpoints,
                checkpoints=opts.checkpoints, checkpoint_replay=opts.checkpoint_replay, versions=versions(),
                git_commit=git_commit())
    return meta


def prepare_files(config: Any, out: Path, leaf: list[Path], points: list[dict], opts: RunOptions, p: Plan,
                   traced: dict, kept_steps: int | None) -> None:
    """config.json files and fresh metrics files; a resumed run keeps the rows up to ``kept_steps``."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {**config_record(config, opts, p), "sweep": {k: list(v) for k, v in traced.items()}}
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    for d, pt in zip(leaf, points, strict=True):
        if traced:
            d.mkdir(parents=True, exist_ok=True)
            point_meta = {**config_record(dataclasses.replace(config, **pt), opts, p), "sweep_point": pt}
            (d / "config.json").write_text(json.dumps(point_meta, indent=1))
        rows = read_rows(d / "metrics.jsonl") if kept_steps is not None else []
        MetricsFiles(d).reset([r for r in rows if r["env_steps"] <= (kept_steps or 0)])


RUN_FILES = ("config.json", "metrics.jsonl", "metrics.csv")  # what a run writes before its first chunk ends


def own_paths(spec: RunSpec) -> list[Path]:
    """The directories and files a run writes before its first chunk ends: the results directory (and the
    folders above it that do not exist yet), each program's and sweep point's directory with its config.json
    and metrics files, and checkpoints/."""
    if spec.out is None:
        return []
    above = [d for d in spec.out.parents if d != Path(".")]
    missing = above[:next((i for i, d in enumerate(above) if d.exists()), len(above))]
    dirs = {spec.out}
    for program in spec.programs:
        base = spec.program_dir(program)
        dirs.update({base, base / "checkpoints"})
        dirs.update(base / sw.point_name(point) for point in spec.points if point)
    return sorted(dirs | {d / name for d in dirs for name in RUN_FILES} | set(missing))


def snapshot(paths: list[Path]) -> set[Path]:
    """Which of ``paths`` exist before a run writes there."""
    return {p for p in paths if p.exists()}


def remove_unstarted(paths: list[Path], before: set[Path]) -> None:
    """Undo what a run that stopped before its first chunk created among ``paths`` (:func:`own_paths`): its
    config.json files, metrics files without rows, and the directories that are then empty. What existed
    before (``before``, :func:`snapshot`) and everything else is left alone."""
    for path in sorted(paths, key=lambda x: len(x.parts), reverse=True):
        if path in before:
            continue
        try:
            if path.is_file() and (path.name == "config.json" or path.stat().st_size == 0):
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except OSError:
            pass


def write_sequential_record(out: Path, config: Any, opts: RunOptions, sweep: dict[str, tuple],
                            sequential: list[str]) -> None:
    """config.json of a run whose sequential sweep gives one program (and subdirectory) per point."""
    out.mkdir(parents=True, exist_ok=True)
    record = {**config_record(config, opts, None), "sweep": {k: list(v) for k, v in sweep.items()},
              "sequential": sequential}
    (out / "config.json").write_text(json.dumps(record, indent=1))


def optimum(config: Any) -> float | None:
    return envs.make(config.env).spec.optimal_return


def write_leaf(d: Path, summary: dict, rows: list[dict], config: Any, point: dict, seeds: int, plots: bool) -> None:
    (d / "summary.json").write_text(json.dumps(summary, indent=1))
    title = f"{config.algo} on {config.env}" + (f" ({sw.point_name(point)})" if point else "")
    steps = summary["per_seed"][0]["env_steps"]
    note = (f"Final greedy evaluation after {steps:,} env steps per seed, {config.eval_episodes} episodes per seed; "
            f"mean and 95% percentile-bootstrap interval across {seeds} seed{'s' if seeds > 1 else ''}.")
    (d / "summary.md").write_text(summary_markdown(summary, title, note))
    if plots:
        from jmarl.plots import learning_curves

        learning_curves(rows, d, title, EVAL_KEYS, optimum(config))


def sweep_table(summaries: list[dict]) -> str:
    keys = list(summaries[0]["mean"])
    lines = ["| point | " + " | ".join(f"{k} (95% interval)" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for s in summaries:
        cells = [f"{s['mean'][k]:.3f} [{s['ci95'][k][0]:.3f}, {s['ci95'][k][1]:.3f}]" for k in keys]
        lines.append(f"| {sw.point_name(s['point'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_sweep(out: Path, summaries: list[dict], leaf: list[Path], plots: bool, config: Any) -> None:
    (out / "sweep.json").write_text(json.dumps(summaries, indent=1))
    (out / "sweep.md").write_text(f"# {config.algo} on {config.env}: sweep\n\nFinal greedy evaluation, mean and "
                                  f"95% bootstrap interval across seeds.\n\n{sweep_table(summaries)}\n")
    if plots:
        from jmarl.plots import plot_curves

        series = {sw.point_name(s["point"]): read_rows(d / "metrics.jsonl") for s, d in zip(summaries, leaf,
                                                                                             strict=True)}
        for key in summaries[0]["mean"]:
            plot_curves(series, key, out / f"sweep_{key}.png", f"{config.algo} on {config.env}",
                        optimum(config) if key == "return" else None)


# ----- reading a run back ----------------------------------------------------------------------


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def read_run(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """(validated config, the whole config.json record) of a results directory."""
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


def load_checkpoint(run_dir: str | Path, step: int | None = None, replay: bool = True,
                    ) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """(config, host train state with the run axis first, config.json record, checkpoint record) of the
    latest (or ``step``-th) checkpoint of a program's results directory. Run r is sweep point
    r // seeds, seed r % seeds, points in ``sweep.grid`` order. The state's replay buffer is None when
    the checkpoint was written without it, or with ``replay=False``: the buffer is then not read, so
    evaluating a run whose buffers are GiBs takes the memory of its networks only."""
    config, meta = read_run(run_dir)
    if meta.get("sequential"):
        raise ConfigError(f"{run_dir} holds one program per value of {', '.join(meta['sequential'])}; "
                          f"pick one of its subdirectories")
    traced = {k: tuple(v) for k, v in meta.get("sweep", {}).items()}
    runs = len(sw.grid(traced)) * meta["seeds"]
    abstract = abstract_state(config, tuple(traced), runs)
    ckpt = Checkpoints(Path(run_dir) / "checkpoints")
    try:
        omitted = replay_omitted(ckpt.record(step))
        skipped = not replay and not omitted and has_replay(abstract)  # stored, and left unread
        if omitted or not replay:
            abstract = without_replay(abstract)
        target = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
        identity = run_identity(config, meta["seeds"], meta["base_seed"], traced)
        state, record = ckpt.restore(target, step, expect=identity, later_fields=defaults_of_later_fields(config),
                                     partial=skipped)
    finally:
        ckpt.close()
    return config, state, meta, record
