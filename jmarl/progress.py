"""A progress bar printed between compiled chunks: env steps, throughput, ETA, latest evaluation.

Nothing here runs inside the compiled program; the runner calls :meth:`Progress.update` after each
chunk. On a terminal the bar redraws in place; in a log file each chunk gets its own line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

# What the bar shows of the latest evaluation (where the algorithm and env report it).
SHOWN = (("return", "return"), ("won", "win rate"), ("optimality_gap", "gap"))


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def render(done: int, total: int, rate: float | None, runs: int, evals: dict[str, float], width: int = 20) -> str:
    """One line: bar, env steps per run done/total, env steps/s over all ``runs``, ETA, evaluation.

    ``rate`` is env steps per second per run; None before anything was timed.
    """
    frac = min(1.0, done / total) if total else 1.0
    filled = int(round(frac * width))
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {frac:4.0%}", f"env steps {done:,}/{total:,}"]
    if rate:
        parts += [f"{rate * runs:,.0f} steps/s", f"ETA {format_duration((total - done) / rate)}"]
    shown = [f"{label} {evals[k]:.3f}" for k, label in SHOWN if k in evals]
    if shown:
        parts.append("eval: " + "  ".join(shown))
    return " | ".join(parts)


class Progress:
    """Tracks throughput from the first chunk run by this process (a resumed run starts mid-way)."""

    def __init__(self, total_steps: int, runs: int, log: Callable[[str], None] = print, in_place: bool | None = None):
        self.total, self.runs, self.log = total_steps, runs, log
        self.in_place = (log is print and sys.stdout.isatty()) if in_place is None else in_place
        self.t0: float | None = None
        self.start_steps = 0

    def start(self, done: int) -> None:
        self.t0, self.start_steps = time.perf_counter(), done

    def update(self, done: int, evals: dict[str, float]) -> str:
        elapsed = time.perf_counter() - (self.t0 if self.t0 is not None else time.perf_counter())
        rate = (done - self.start_steps) / elapsed if elapsed > 0 else None
        line = render(done, self.total, rate, self.runs, evals)
        if self.in_place:
            sys.stdout.write("\r" + line + ("\n" if done >= self.total else ""))
            sys.stdout.flush()
        else:
            self.log(line)
        return line
