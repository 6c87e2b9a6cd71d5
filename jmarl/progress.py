"""A progress bar printed between compiled chunks: env steps, throughput, ETA, latest evaluation.

Nothing here runs inside the compiled program; the runner calls :meth:`Progress.update` after each
chunk. On a terminal the bar redraws in place; in a log file each chunk gets its own line, flushed at
once (:func:`print_line`). A chunk that runs longer than ``heartbeat_s`` gets a line saying so from a
timer thread (:meth:`Progress.chunk`), which touches neither the device nor the program.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

# What the bar shows of the latest evaluation (where the algorithm and env report it).
SHOWN = (("return", "return"), ("won", "win rate"), ("optimality_gap", "gap"))


def print_line(line: str) -> None:
    """``print`` that flushes, so that a line shows when it is written even where stdout is a pipe or a file."""
    print(line, flush=True)


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

    def __init__(self, total_steps: int, runs: int, log: Callable[[str], None] = print_line,
                 in_place: bool | None = None, heartbeat_s: float | None = 60.0):
        self.total, self.runs, self.log = total_steps, runs, log
        self.in_place = (log in (print, print_line) and sys.stdout.isatty()) if in_place is None else in_place
        self.heartbeat_s = heartbeat_s
        self.t0: float | None = None
        self.start_steps = 0
        self.last = ""  # the latest progress line
        self.width = 0  # of what the in-place line shows now

    def _draw(self, line: str, end: str = "") -> None:
        sys.stdout.write("\r" + line.ljust(self.width) + end)
        sys.stdout.flush()
        self.width = 0 if end else len(line)

    @contextlib.contextmanager
    def chunk(self, number: int, chunks: int) -> Iterator[None]:
        """Around chunk ``number`` of ``chunks``: every ``heartbeat_s`` seconds that it runs, one line saying so."""
        if not self.heartbeat_s:
            yield
            return
        done, t0 = threading.Event(), time.perf_counter()

        def beat() -> None:
            while not done.wait(self.heartbeat_s):
                if done.is_set():  # the chunk ended while this wait returned: say nothing after it
                    return
                note = f"chunk {number}/{chunks} running for {format_duration(time.perf_counter() - t0)}"
                if self.in_place:
                    self._draw(f"{self.last} | {note}" if self.last else note)
                else:
                    self.log(note)

        thread = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()  # a line being written finishes before the chunk's own progress line

    def start(self, done: int) -> None:
        self.t0, self.start_steps = time.perf_counter(), done

    def update(self, done: int, evals: dict[str, float]) -> str:
        elapsed = time.perf_counter() - (self.t0 if self.t0 is not None else time.perf_counter())
        rate = (done - self.start_steps) / elapsed if elapsed > 0 else None
        line = render(done, self.total, rate, self.runs, evals)
        self.last = line
        if self.in_place:
            self._draw(line, "\n" if done >= self.total else "")
        else:
            self.log(line)
        return line
