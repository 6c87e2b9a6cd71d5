"""A run's results files: metric rows (JSONL and CSV), the final summary (JSON and markdown).

One row per evaluation point and seed: ``env_steps`` (per seed), ``seed``, every evaluation key the
algorithm reports (``return``, ``won``, ... and any key an algorithm adds later, without changes
here) and the ``train/...`` statistics averaged over the chunk. Rows are appended after every
compiled chunk, so an interrupted run keeps what it did; a resumed run first drops the rows written
after its checkpoint.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

NON_EVAL = ("env_steps", "seed")
# Evaluation keys in the order they are reported; each appears only where the algorithm and env define it.
# ``_sequential``: TAD-PPO's sequential (coordination) policy beside its decentralised one; ``score``:
# the matrix-game score of the greedy joint action (TAD-PPO on matrix games). Keys not listed here
# are reported too, after these.
EVAL_KEYS = ("return", "won", "optimality_gap", "score", "return_sequential", "won_sequential",
             "optimality_gap_sequential", "score_sequential")


def eval_keys(row: dict[str, Any], order: Sequence[str] = ()) -> list[str]:
    """The row's evaluation keys: those in ``order`` first, then any others alphabetically."""
    present = [k for k in row if k not in NON_EVAL and not k.startswith("train/")]
    return [k for k in order if k in present] + sorted(k for k in present if k not in order)


def metric_rows(metrics: dict[str, np.ndarray], runs: Sequence[int], seeds: Sequence[int],
                order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of the runs ``runs`` (indices into the leading axis of every metric) labelled ``seeds``;
    evaluation keys in ``order`` first."""
    evals = eval_keys({k[5:]: None for k in metrics if k.startswith("eval/")}, order)
    rows = []
    for r, s in zip(runs, seeds, strict=True):
        row: dict[str, Any] = {"env_steps": int(metrics["env_steps"][r]), "seed": int(s)}
        row.update({k: float(metrics["eval/" + k][r]) for k in evals})
        row.update({k: float(v[r]) for k, v in metrics.items() if k.startswith("train/")})
        rows.append(row)
    return rows


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = 10_000) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fixed generator: the same data gives the same interval)."""
    lo, hi = bootstrap_band(np.asarray(values, dtype=np.float64)[None], level, resamples)
    return float(lo[0]), float(hi[0])


def bootstrap_band(values: np.ndarray, level: float = 0.95, resamples: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise percentile bootstrap interval of the mean of ``values [points, seeds]``; one seed gives
    a zero-width band. The same resampled seed indices serve every point (a band, not independent bars)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[1] < 2:
        return values.mean(axis=1), values.mean(axis=1)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, values.shape[1], size=(resamples, values.shape[1]))
    means = values[:, idx].mean(axis=2)  # [points, resamples]
    tail = (1 - level) / 2 * 100
    return np.percentile(means, tail, axis=1), np.percentile(means, 100 - tail, axis=1)


def summarise(final_rows: list[dict[str, Any]], order: Sequence[str] = ()) -> dict[str, Any]:
    """``per_seed`` (final evaluation of each seed), ``mean`` and ``ci95`` across seeds per eval key."""
    keys = eval_keys(final_rows[0], order)
    mean = {k: float(np.mean([r[k] for r in final_rows])) for k in keys}
    ci = {k: list(bootstrap_ci(np.array([r[k] for r in final_rows]))) for k in keys}
    per_seed = [{"seed": r["seed"], "env_steps": r["env_steps"], **{k: r[k] for k in keys}} for r in final_rows]
    return {"per_seed": per_seed, "mean": mean, "ci95": ci}


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':16s} {'mean':>10s}   95% interval (across seeds)"]
    for k, m in summary["mean"].items():
        lo, hi = summary["ci95"][k]
        lines.append(f"{k:16s} {m:10.3f}   [{lo:.3f}, {hi:.3f}]")
    return "\n".join(lines)


def summary_markdown(summary: dict[str, Any], title: str, note: str = "") -> str:
    """The summary as a markdown table (mean, 95% interval, each seed's final value)."""
    seeds = [s["seed"] for s in summary["per_seed"]]
    lines = [f"# {title}", ""] + ([note, ""] if note else [])
    lines += ["| metric | mean | 95% interval | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---:|---|" + "---:|" * len(seeds)]
    for k, m in summary["mean"].items():
        lo, hi = summary["ci95"][k]
        per = " | ".join(f"{s[k]:.4g}" for s in summary["per_seed"])
        lines.append(f"| {k} | {m:.4g} | [{lo:.4g}, {hi:.4g}] | {per} |")
    return "\n".join(lines) + "\n"


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsFiles:
    """``metrics.jsonl`` and ``metrics.csv`` of one results directory, appended chunk by chunk."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.jsonl = self.directory / "metrics.jsonl"
        self.csv = self.directory / "metrics.csv"

    def reset(self, rows: list[dict[str, Any]] | None = None) -> None:
        """Start both files afresh, holding ``rows`` (those kept when resuming)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.jsonl.write_text("")
        self.csv.write_text("")
        if rows:
            self.append(rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.jsonl, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        new = self.csv.stat().st_size == 0
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
