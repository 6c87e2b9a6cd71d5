"""Learning curves as the papers plot them: mean across seeds with a 95% bootstrap band, x = env steps.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never changes the
caller's backend and works without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jmarl.results import bootstrap_band, eval_keys

LABELS = {"return": "greedy return", "won": "win rate", "optimality_gap": "gap to the optimum",
          "score": "matrix score"}


def curve(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(env steps, mean, band low, band high) of ``key`` across seeds; points every seed reached."""
    seeds = sorted({r["seed"] for r in rows})
    by_step: dict[int, dict[int, float]] = {}
    for r in rows:
        by_step.setdefault(r["env_steps"], {})[r["seed"]] = r[key]
    steps = np.array(sorted(s for s, v in by_step.items() if len(v) == len(seeds)), dtype=np.int64)
    values = np.array([[by_step[s][seed] for seed in seeds] for s in steps], dtype=np.float64).reshape(len(steps), -1)
    if len(steps) == 0:
        return steps, values[:, 0], values[:, 0], values[:, 0]
    lo, hi = bootstrap_band(values)
    return steps, values.mean(axis=1), lo, hi


def curve_figure(series: dict[str, list[dict[str, Any]]], key: str, title: str = "",
                 optimum: float | None = None) -> Figure:
    """The figure :func:`plot_curves` saves. A series of one evaluation point (a one-chunk run) has no line
    to draw: it gets a marker, and its band a vertical bar."""
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, rows in series.items():
        steps, mean, lo, hi = curve(rows, key)
        single = len(steps) == 1
        (line,) = ax.plot(steps, mean, label=label, marker="o" if single else None)
        if single:
            ax.vlines(steps, lo, hi, colors=line.get_color(), alpha=0.4, linewidth=4)
        else:
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
    if optimum is not None:
        ax.axhline(optimum, color="black", linestyle="--", linewidth=1, label="optimum")
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel(LABELS.get(key, key))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1 or optimum is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(series: dict[str, list[dict[str, Any]]], key: str, path: str | Path, title: str = "",
                optimum: float | None = None) -> Path:
    """One PNG of ``key``: a mean line and band per label in ``series``; a dashed optimum line if given."""
    path = Path(path)
    curve_figure(series, key, title, optimum).savefig(path)
    return path


def learning_curves(rows: list[dict[str, Any]], directory: str | Path, title: str, order: Sequence[str] = (),
                    optimum: float | None = None) -> list[Path]:
    """``curve_<key>.png`` for every evaluation key of ``rows``; the return plot shows the optimum."""
    seeds = len({r["seed"] for r in rows})
    label = f"mean of {seeds} seed{'s' if seeds > 1 else ''} (95% bootstrap band)"
    return [plot_curves({label: rows}, key, Path(directory) / f"curve_{key}.png", title,
                        optimum if key == "return" else None)
            for key in eval_keys(rows[0], order)]
