"""The chunk loop: runs a :class:`jmarl.spec.RunSpec`, one compiled program after another.

Between compiled chunks (``eval_every`` updates + a greedy evaluation) the host draws the progress
bar, appends metrics and writes checkpoints, so nothing inside the compiled program grows with
training length. The run axis (traced sweep points x seeds, jmarl/sweep.py) is split over devices
(jmarl/program.py); keys that change the program run one program each, one after another. What the
results directory holds is described in jmarl/run_dir.py.

Stopping early, between chunks:
- a chunk in which any run's training metrics or parameters became NaN or infinite (the chunk's
  ``nonfinite/...`` flags, jmarl/core.py) is neither logged nor checkpointed: :class:`NonFiniteError`
  names the run, the update and what went non-finite, and the last good checkpoint;
- SIGINT or SIGTERM during the chunk loop lets the current chunk finish, checkpoints it (whatever
  ``checkpoint_every`` says), waits for the write and raises :class:`Interrupted`; resuming then ends
  exactly like an uninterrupted run. A second SIGINT while the checkpoint is written aborts at once.
- SIGINT (KeyboardInterrupt) before a program's first chunk (while compiling, restoring or
  initialising) raises :class:`Interrupted` too; a new run that has trained nothing yet removes what
  it created in the results directory (run_dir.remove_unstarted), never anything that was there.

What it prints: a line before compiling and the compile time after it (saying when the executables
came from jax's persistent compilation cache, jmarl/compile_cache.py), the memory plan, a progress
line after every chunk (and a line every minute that a long chunk runs), the final table. The line of
an interruption is the exception's message; the runner does not print it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmarl import devices as dev
from jmarl import memory, run_dir
from jmarl import sweep as sw
from jmarl.checkpoint import (
    CheckpointError,
    Checkpoints,
    DamagedCheckpoint,
    fingerprint,
    has_replay,
    replay_omitted,
    replay_status,
    with_fresh_replay,
    without_replay,
)
from jmarl.compile_cache import CacheEvents
from jmarl.config import defaults_of_later_fields
from jmarl.core import NONFINITE, Plan
from jmarl.loggers import open_loggers
from jmarl.program import Program, compile_program
from jmarl.progress import Progress, print_line
from jmarl.results import EVAL_KEYS, MetricsFiles, eval_keys, format_table, metric_rows, read_rows, summarise
from jmarl.spec import ProgramSpec, RunOptions, RunSpec, make_run_spec, seed_keys


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinite metrics or parameters; nothing of that chunk was kept."""


class Interrupted(RuntimeError):
    """SIGINT / SIGTERM stopped the run after a chunk; ``signum`` is the signal received, ``env_steps`` the
    env steps per run when it stopped (None when it stopped before its first chunk)."""

    def __init__(self, message: str, signum: int, env_steps: int | None = None):
        super().__init__(message)
        self.signum, self.env_steps = signum, env_steps


class TimeLimitReached(Interrupted):
    """The run stopped at its ``time_limit_s`` after a chunk, its checkpoint saved (``signum`` 0)."""


class _Stopped(Exception):
    """Raised by one program after its checkpoint; :func:`run` turns it into :class:`Interrupted` naming the
    results directory to resume (the parent of a program's directory in a sequential sweep)."""

    def __init__(self, env_steps: int, signum: int, saved: bool):
        super().__init__(env_steps, signum, saved)
        self.env_steps, self.signum, self.saved = env_steps, signum, saved


class _EarlyStop(Exception):
    """SIGINT before a program's first chunk (a KeyboardInterrupt while compiling or starting): the 1-based
    number of that ``program``, after ``finished`` programs of the run finished in this process."""

    def __init__(self, program: int = 1, finished: int = 0):
        super().__init__(program, finished)
        self.program, self.finished = program, finished


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
        log: Callable[[str], None] = print_line, *, sweep: dict[str, tuple] | None = None, resume: bool = False,
        **options: Any) -> dict[str, Any]:
    """Train ``seeds`` seeds of ``config`` (times the ``sweep`` grid) and return the summary.

    Without a sweep the summary is ``{per_seed, mean, ci95}`` (also ``summary.json``); with one it is
    ``{"sweep": [{"point": {...}, **summary}, ...]}``. ``resume`` continues from the latest checkpoint
    under ``out_dir`` (the run must have been started with the same config, seeds and sweep).
    ``options`` are :class:`jmarl.spec.RunOptions` fields (devices, vmap_block, checkpoint_every, ...).
    """
    opts = RunOptions(seeds=seeds, base_seed=base_seed, **options)
    return execute(make_run_spec(config, sweep, opts, out_dir, resume), log)


def execute(spec: RunSpec, log: Callable[[str], None] = print_line) -> dict[str, Any]:
    """Compile and train every program of ``spec``, writing its results directory; returns the summary
    (:func:`run`). Raises :class:`Interrupted` after SIGINT / SIGTERM (its message is the line to show)."""
    main = dev.is_main_process()
    if not main:
        log = lambda line: None  # noqa: E731  only process 0 logs
    own = run_dir.own_paths(spec) if not spec.resume else []
    before = run_dir.snapshot(own)
    try:
        return _run_programs(spec, log)
    except _Stopped as stopped:
        message = _interrupted_message(stopped.env_steps, spec.out, stopped.saved, stopped.signum == 0)
        raise (TimeLimitReached if stopped.signum == 0 else Interrupted)(message, stopped.signum,
                                                                          stopped.env_steps) from None
    except _EarlyStop as early:
        if main and early.finished == 0:
            run_dir.remove_unstarted(own, before)
        raise Interrupted(_early_message(spec, early), signal.SIGINT) from None


def _early_message(spec: RunSpec, early: _EarlyStop) -> str:
    where = f" of program {early.program}/{len(spec.programs)}" if len(spec.programs) > 1 else ""
    line = f"interrupted before the first chunk{where}"
    if early.finished == 0 and not spec.resume:
        return f"{line}; nothing was saved"
    if spec.out is not None and spec.options.checkpoints:
        return f"{line}; resume with: python experiments/run.py --resume {spec.out}"
    where = "checkpoints are off" if spec.out is not None else "no results directory"
    return f"{line}; nothing was saved to resume from ({where})"


def _run_programs(spec: RunSpec, log: Callable[[str], None]) -> dict[str, Any]:
    if not spec.sequential:
        return _run_program(spec, spec.programs[0], log)

    out, sequential, traced = spec.out, spec.sequential, spec.traced
    log(f"{', '.join(sequential)} change{'s' if len(sequential) == 1 else ''} the compiled program: "
        f"running {len(spec.programs)} programs one after another")
    if out is not None and dev.is_main_process():
        run_dir.write_sequential_record(out, spec.config, spec.options, {**sequential, **traced}, list(sequential))
    results = []
    for i, program in enumerate(spec.programs):
        log(f"program {i + 1}/{len(spec.programs)}: {sw.point_name(program.point)}")
        try:
            summary = _run_program(spec, program, log)
        except _EarlyStop:
            raise _EarlyStop(i + 1, i) from None
        entries = summary["sweep"] if traced else [{"point": {}, **summary}]
        results += [{**e, "point": {**program.point, **e["point"]}} for e in entries]
    if out is not None and dev.is_main_process():
        leaves = [spec.program_dir(ps) / sw.point_name(tp) if traced else spec.program_dir(ps)
                  for ps in spec.programs for tp in spec.points]
        run_dir.write_sweep(out, results, leaves, spec.options.plots, spec.config)
    return {"sweep": results}


def _run_program(spec: RunSpec, program: ProgramSpec, log: Callable[[str], None]) -> dict[str, Any]:
    config, traced, opts, out = program.config, spec.traced, spec.options, spec.program_dir(program)
    points, seeds = spec.points, opts.seeds
    runs = spec.runs
    identity = spec.identity(program)
    p, main = program.plan, dev.is_main_process()
    steps_per_chunk = p.updates_per_chunk * p.steps_per_update
    leaf = [out / sw.point_name(pt) if (out is not None and traced) else out for pt in points]
    ckpt, writers = None, open_loggers((), (), config, ())
    try:
        if out is not None and opts.checkpoints:
            ckpt = Checkpoints(out / "checkpoints", opts.keep_checkpoints, writer=dev.is_main_process())
            for moved in ckpt.moved_aside:
                log(f"incomplete checkpoint (an interrupted write) moved aside to {moved}")
        resuming = spec.resume and ckpt is not None and bool(ckpt.steps())
        if resuming:
            latest = ckpt.steps()[-1]
            record = _resumable(ckpt, lambda: ckpt.record(latest))
            ckpt.check_identity(record, identity, latest, defaults_of_later_fields(config))
            before = record.get("run", {}).get("config", {}).get("total_steps")
            if isinstance(before, int) and before < config.total_steps:
                log(f"extending the run from total_steps={before:,} to {config.total_steps:,} env steps per seed "
                    f"({p.num_chunks} chunks)")
        log(f"compiling {config.algo} on {config.env}: {seeds} seed(s)"
            + (f" x {len(points)} sweep points" if traced else "")
            + f" = {runs} runs on {program.devices} device(s); {p.num_chunks} chunks of {p.updates_per_chunk} "
            f"updates x {p.steps_per_update} env steps (this can take a minute)")
        if hint := dev.cpu_split_hint(runs):
            log(hint)
        t0, cached = time.perf_counter(), CacheEvents()
        with cached:
            prog = compile_program(program)
        log(f"compiled in {time.perf_counter() - t0:.1f}s{cached.note()}")
        if prog.memory.warning:
            log(prog.memory.warning)
        log(prog.memory.line())
        every = checkpoint_chunks(p, opts.checkpoint_every)

        keys = np.asarray(jax.device_get(seed_keys(opts.base_seed, seeds)))
        host_inputs = dev.pad_runs((np.tile(keys, (len(points), 1)), sw.hparam_arrays(config, points, seeds)),
                                   prog.padded)
        keys_in, hparams = prog.put(host_inputs)
        done, state = 0, None
        if resuming:
            state, record = _resumable(ckpt, lambda: _restore(ckpt, prog, identity))
            done = record["chunks_done"]
            log(f"resumed from {ckpt.directory} at chunk {done}/{p.num_chunks} ({done * steps_per_chunk:,} env "
                f"steps per run)")
            if replay_omitted(record):
                with _device_memory(config, prog):
                    fresh = prog.init(prog.put(restart_keys(host_inputs[0], done)), hparams)
                state = with_fresh_replay(state, fresh)
                del fresh
                log(_no_replay_message(config, done, opts.checkpoint_replay))
        elif spec.resume:
            log(f"no checkpoint under {out}: starting from scratch")
        if main and out is not None:
            run_dir.prepare_files(config, out, leaf, points, opts, p, traced,
                                  done * steps_per_chunk if resuming else None)
            writers = open_loggers(opts.loggers, leaf, config, points)
        if state is None:
            with _device_memory(config, prog):
                state = prog.init(keys_in, hparams)
        if ckpt is not None and not opts.checkpoint_replay and has_replay(prog.abstract_state):
            log("checkpoints leave the replay buffer out (--no-checkpoint-replay): a run resumed from one starts "
                "with an empty buffer and will differ from an uninterrupted run")
    except KeyboardInterrupt:
        writers.close()
        if ckpt is not None:
            ckpt.close()  # nothing is being written yet
        raise _EarlyStop from None
    except BaseException:
        writers.close()
        if ckpt is not None:
            ckpt.close()
        raise

    progress = Progress(p.total_steps, runs, log)
    progress.start(done * steps_per_chunk)
    last_rows: list[list[dict]] = []
    stop = StopRequest()
    limit = opts.time_limit_s
    deadline = None if limit is None else time.monotonic() + limit
    try:
        with stop:
            for i in range(done, p.num_chunks):
                with _device_memory(config, prog), progress.chunk(i + 1, p.num_chunks):
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
                    writers.write(last_rows)
                flat = [r for rows in last_rows for r in rows]
                progress.update(flat[0]["env_steps"], {k: float(np.mean([r[k] for r in flat]))
                                                       for k in eval_keys(flat[0], EVAL_KEYS)})
                timed_out = deadline is not None and time.monotonic() >= deadline and i + 1 < p.num_chunks
                stopping = stop.signum is not None or timed_out
                if ckpt is not None and (i + 1 == p.num_chunks or (i + 1) % every == 0 or stopping):
                    _save(ckpt, prog, state, i + 1, identity, flat[0]["env_steps"], opts.checkpoint_replay)
                    if prog.grouped:
                        ckpt.wait()  # the next chunk rewrites the host state in place
                if stopping:
                    if ckpt is not None:
                        ckpt.wait()  # a second SIGINT here aborts (KeyboardInterrupt)
                    if progress.in_place:
                        sys.stdout.write("\n")
                    raise _Stopped(flat[0]["env_steps"], stop.signum or 0, ckpt is not None)
    except KeyboardInterrupt:
        raise  # aborting: do not wait for a checkpoint write (an incomplete one is never restored)
    except BaseException:
        if ckpt is not None:
            ckpt.close()
        raise
    finally:
        writers.close()
    if ckpt is not None:
        ckpt.close()

    summaries = []
    for j, pt in enumerate(points):
        rows = read_rows(leaf[j] / "metrics.jsonl") if out is not None else last_rows[j]
        final_step = max(r["env_steps"] for r in rows)
        summary = summarise([r for r in rows if r["env_steps"] == final_step], EVAL_KEYS)
        summaries.append({"point": pt, **summary})
        if main and out is not None:
            run_dir.write_leaf(leaf[j], summary, rows, config, pt, seeds, opts.plots)
    if not traced:
        log(format_table(summaries[0]))
        return {k: v for k, v in summaries[0].items() if k != "point"}
    log(run_dir.sweep_table(summaries))
    if main and out is not None:
        run_dir.write_sweep(out, summaries, leaf, opts.plots, config)
    return {"sweep": summaries}


def _resumable(ckpt: Checkpoints, read: Callable[[], Any]) -> Any:
    """``read()`` of the checkpoint to resume from; a damaged one is refused with what to do about it."""
    try:
        return read()
    except DamagedCheckpoint as err:
        if err.older is None:
            todo = "there is no older complete checkpoint: start the run again in another results directory"
        else:
            todo = (f"to continue from checkpoint {err.older}, move it aside (mv {err.step_dir} "
                    f"{err.step_dir}.damaged) and resume again")
        raise CheckpointError(f"cannot resume: checkpoint {err.step} under {err.directory} is damaged (its "
                              f"{err.part} could not be read); {todo}") from None


def _restore(ckpt: Checkpoints, prog: Program, identity: dict) -> tuple[Any, dict]:
    """The latest checkpoint as global arrays (padded runs are not stored: they are re-derived); without
    its replay buffer (None) when it was written without one."""
    abstract = prog.abstract_state
    if replay_omitted(ckpt.record()):
        abstract = without_replay(abstract)
    later = defaults_of_later_fields(prog.algo.config)
    if prog.padded == prog.runs and not prog.grouped:
        return ckpt.restore(abstract, expect=identity, later_fields=later)
    host = jax.tree.map(lambda x: np.zeros((prog.runs,) + x.shape[1:], x.dtype), abstract)
    state, record = ckpt.restore(host, expect=identity, later_fields=later)
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


def _interrupted_message(env_steps: int, out: Path | None, saved: bool, timed_out: bool = False) -> str:
    what = "stopped at the time limit" if timed_out else "interrupted"
    if saved:
        return f"{what} at env steps {env_steps}; resume with: python experiments/run.py --resume {out}"
    where = "checkpoints are off" if out is not None else "no results directory"
    return f"{what} at env steps {env_steps}; nothing was saved to resume from ({where})"
