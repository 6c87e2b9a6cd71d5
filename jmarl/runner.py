"""Runs N seeds of one config as one vmapped program, chunk by chunk, and writes the results.

Between compiled chunks (``eval_every`` updates + a greedy evaluation) the host prints progress and
appends metrics, so nothing inside the compiled program grows with training length.

Results directory (keys are stable; other tools read them):
- ``config.json``: the resolved config plus ``seeds``, ``base_seed`` and the jmarl/jax versions;
- ``metrics.jsonl``: one line per evaluation point and seed: ``env_steps``, ``seed``, ``return`` and,
  where the env defines them, ``won`` and ``optimality_gap``; for TAD-PPO also ``score`` (matrix games)
  and the sequential policy's ``return_sequential`` etc. (see EVAL_KEYS), plus ``train/...`` statistics;
- ``summary.json``: ``per_seed`` (the final evaluation of each seed, same keys) and ``mean`` /
  ``ci95`` (mean across seeds and a 95% bootstrap interval) of every evaluation key.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmarl.core import make_chunk, plan
from jmarl.registry import make_algorithm

# Evaluation keys in the order they are reported; each appears only where the algorithm and env define it.
# ``_sequential``: TAD-PPO's sequential (coordination) policy beside its decentralised one; ``score``:
# the matrix-game score of the greedy joint action (TAD-PPO on matrix games).
EVAL_KEYS = ("return", "won", "optimality_gap", "score", "return_sequential", "won_sequential",
             "optimality_gap_sequential", "score_sequential")


def seed_keys(base_seed: int, seeds: int) -> jax.Array:
    """Seed i's key does not depend on how many seeds run beside it."""
    base = jax.random.PRNGKey(base_seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(seeds))


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = 10_000) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fixed generator: the same data gives the same interval)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _rows(metrics: dict[str, np.ndarray], seeds: int) -> list[dict[str, Any]]:
    rows = []
    for s in range(seeds):
        row = {"env_steps": int(metrics["env_steps"][s]), "seed": s}
        for k, v in metrics.items():
            if k.startswith("eval/"):
                row[k[5:]] = float(v[s])
        for k, v in metrics.items():
            if k.startswith("train/"):
                row[k] = float(v[s])
        rows.append(row)
    return rows


def summarise(final_rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in EVAL_KEYS if k in final_rows[0]]
    mean = {k: float(np.mean([r[k] for r in final_rows])) for k in keys}
    ci = {k: list(bootstrap_ci(np.array([r[k] for r in final_rows]))) for k in keys}
    per_seed = [{"seed": r["seed"], "env_steps": r["env_steps"], **{k: r[k] for k in keys}} for r in final_rows]
    return {"per_seed": per_seed, "mean": mean, "ci95": ci}


def run(config: Any, seeds: int, out_dir: str | Path | None = None, base_seed: int = 0,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``seeds`` seeds of ``config`` and return the summary (also written under ``out_dir``)."""
    algo = make_algorithm(config)
    p = plan(algo)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        meta = {**dataclasses.asdict(config), "seeds": seeds, "base_seed": base_seed,
                "total_updates": p.total_updates, "planned_env_steps": p.total_steps, "jax": jax.__version__}
        (out / "config.json").write_text(json.dumps(meta, indent=1))
        (out / "metrics.jsonl").write_text("")

    keys = seed_keys(base_seed, seeds)
    t0 = time.perf_counter()
    state = jax.jit(jax.vmap(algo.init))(keys)
    chunk = jax.jit(jax.vmap(make_chunk(algo, p.updates_per_chunk)), donate_argnums=0).lower(state).compile()
    log(f"{config.algo} on {config.env}: {seeds} seed(s), {p.num_chunks} chunks of {p.updates_per_chunk} updates "
        f"x {p.steps_per_update} env steps; compiled in {time.perf_counter() - t0:.1f}s")

    rows: list[dict[str, Any]] = []
    t_run = time.perf_counter()
    for i in range(p.num_chunks):
        state, metrics = chunk(state)
        metrics = jax.device_get(metrics)
        rows = _rows(metrics, seeds)
        if out is not None:
            with open(out / "metrics.jsonl", "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        steps = rows[0]["env_steps"]
        rate = steps * seeds / (time.perf_counter() - t_run)
        evals = "  ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in EVAL_KEYS if k in rows[0])
        log(f"[{i + 1}/{p.num_chunks}] env steps {steps:,}/{p.total_steps:,}  {rate:,.0f} steps/s  eval: {evals}")

    summary = summarise(rows)
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(format_table(summary))
    return summary


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':16s} {'mean':>10s}   95% interval (across seeds)"]
    for k, m in summary["mean"].items():
        lo, hi = summary["ci95"][k]
        lines.append(f"{k:16s} {m:10.3f}   [{lo:.3f}, {hi:.3f}]")
    return "\n".join(lines)
