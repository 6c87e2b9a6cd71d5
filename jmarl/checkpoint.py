"""Orbax checkpoints of the full vmapped train state, so that a run resumes bit for bit.

A checkpoint holds the state of every run of a program (params, optimiser state, env states, RNG,
counters, adaptive coefficients, replay buffers unless left out, below: the whole TrainState pytree)
and a small JSON record (chunks done, the run's identity: resolved config, seeds, base seed, sweep, and
its fingerprint). The step number is the number of compiled chunks done. Saving is asynchronous: the
device-to-host copy happens inside ``save``, so the next chunk may donate the state's buffers;
writing to disk overlaps with training. The last ``keep`` checkpoints are kept.

Interrupted writes: Orbax writes a checkpoint into ``<step>.orbax-checkpoint-tmp``, then records a
commit timestamp in ``_CHECKPOINT_METADATA``, writes ``commit_success.txt`` and renames the directory
to ``<step>``. A leftover temporary directory is never listed (and is replaced when that step is
saved again); a step directory without either completion mark (or without its ``state``/``record``
items) is *incomplete*: it is skipped in favour of the latest complete checkpoint and, when a run
resumes writing, moved aside to ``<step>.incomplete`` so that the step can be written again. A
complete checkpoint whose files are damaged is refused with :class:`DamagedCheckpoint`, which names
it and the latest older complete one (the caller says what to do: the runner, how to resume; the
evaluation tool, ``--step``). Orbax reads a checkpoint's arrays concurrently in an event loop that it
closes as soon as one read fails; the reads still in flight then report "Event loop is closed" as
unraisable exceptions when they finish, and the read coroutines it drops report their own errors when
they are collected: :func:`quiet_late_reads` silences exactly those.

Restoring checks before reading any array that the checkpoint was written by the same run (its
identity; differing keys are named; a checkpoint of the same run with a smaller ``total_steps`` is the
same run before its budget was extended, :func:`same_run`) and that every leaf's path, shape and dtype
match what the program expects.

Checkpoints without the replay buffer. An off-policy train state keeps its episode buffer in the field
``buffer`` (jmarl.offpolicy.OffPolicyState), by far its largest part. :func:`without_replay` drops it
(``None``: no leaves on disk) and the record's ``replay_buffer`` says ``"omitted"`` (``"saved"``: the whole
state; ``"none"``: the learner keeps no buffer; older records lack the key and hold the whole state).
Restoring such a checkpoint takes the buffer from a freshly initialised state (empty, same shapes) and,
with it, the episodes in progress (:data:`EPISODE_FIELDS`): their first steps lived in the buffer's slots,
so finishing them would store episodes that start mid-way; the envs start new episodes instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or written by a different run."""


class DamagedCheckpoint(CheckpointError):
    """A complete checkpoint whose files cannot be read: ``step``, what could not be read (``part``), its
    ``directory`` (the checkpoints folder) and the complete steps present (``steps``)."""

    def __init__(self, directory: Path, step: int, part: str, steps: list[int]):
        self.directory, self.step, self.part, self.steps = directory, step, part, list(steps)
        older = self.older
        tail = (f"the latest older complete checkpoint is {older}" if older is not None
                else "there is no older complete checkpoint")
        super().__init__(f"checkpoint {step} under {directory} is damaged (its {part} could not be read); {tail} "
                         f"(present: {self.steps})")

    @property
    def older(self) -> int | None:
        """The latest complete step before the damaged one (None: none)."""
        earlier = [s for s in self.steps if s < self.step]
        return earlier[-1] if earlier else None

    @property
    def step_dir(self) -> Path:
        return self.directory / str(self.step)


REPLAY_FIELD = "buffer"  # the replay buffer's field in an off-policy train state
# Fields of the episodes in progress, which a buffer-less checkpoint cannot continue (module docstring).
EPISODE_FIELDS = ("env_state", "timestep", "hidden", "last_action", "episode_start")
REPLAY_SAVED, REPLAY_OMITTED, REPLAY_NONE = "saved", "omitted", "none"


def has_replay(state: Any) -> bool:
    """Whether ``state`` carries a replay buffer (an off-policy learner's state)."""
    return getattr(state, REPLAY_FIELD, None) is not None


def without_replay(state: Any) -> Any:
    """``state`` with its replay buffer left out (``None``: no leaves); unchanged without one."""
    return state.replace(**{REPLAY_FIELD: None}) if has_replay(state) else state


def replay_status(state: Any, save_replay: bool) -> str:
    """The record's ``replay_buffer`` for a checkpoint of ``state``."""
    if not has_replay(state):
        return REPLAY_NONE
    return REPLAY_SAVED if save_replay else REPLAY_OMITTED


def replay_omitted(record: dict[str, Any]) -> bool:
    """Whether the checkpoint with this record was written without its replay buffer."""
    return record.get("replay_buffer") == REPLAY_OMITTED


def with_fresh_replay(restored: Any, fresh: Any) -> Any:
    """``restored`` (a state without its buffer) with the buffer and the episodes in progress of ``fresh``
    (a newly initialised state of the same program): an empty buffer and new episodes, everything
    else (parameters, optimiser, target networks, RNG, counters) as restored."""
    taken = {name: getattr(fresh, name) for name in (REPLAY_FIELD, *EPISODE_FIELDS) if hasattr(fresh, name)}
    return restored.replace(**taken)


COMMIT_FILE = "commit_success.txt"
STEP_METADATA = "_CHECKPOINT_METADATA"
ITEMS = ("state", "record")
TMP_MARK = ".orbax-checkpoint-tmp"


def fingerprint(record: dict[str, Any]) -> str:
    """A short hash of what must not change across a resume (JSON-serialisable)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def as_json(value: Any) -> Any:
    """``value`` as it reads back from a JSON record (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    """The config's keys at the top level beside ``seeds``, ``base_seed`` and ``sweep``."""
    out = {k: v for k, v in identity.items() if k != "config"}
    out.update(identity.get("config", {}))
    return out


def same_run(stored: Any, given: dict[str, Any], later_fields: dict[str, Any] | None = None) -> bool:
    """Whether a checkpoint whose record holds the identity ``stored`` belongs to the run ``given``: equal,
    or equal but for a smaller ``total_steps`` (the run's budget was extended since it was written).
    ``later_fields``: config fields added after the checkpoint may have been written, with the value a run
    without them had (:func:`jmarl.config.defaults_of_later_fields`); the stored config lacking them has it."""
    if not isinstance(stored, dict):
        return False
    a, b = as_json(backfill(stored, later_fields)), as_json(given)
    if a == b:
        return True
    before, after = a.get("config", {}).pop("total_steps", None), b.get("config", {}).pop("total_steps", None)
    return a == b and isinstance(before, int) and isinstance(after, int) and before <= after


def backfill(stored: dict[str, Any], later_fields: dict[str, Any] | None) -> dict[str, Any]:
    """``stored`` with the ``later_fields`` its config lacks added at their given values."""
    config = stored.get("config")
    if not later_fields or not isinstance(config, dict):
        return stored
    return {**stored, "config": {**{k: v for k, v in later_fields.items() if k not in config}, **config}}


def identity_mismatch(stored: dict[str, Any], given: dict[str, Any], limit: int = 6,
                      later_fields: dict[str, Any] | None = None) -> str:
    """``"env: stored smax_3m, given hallway; hidden_dim: stored 64, given 128"``: the keys that differ (a
    later field the stored config lacks differs only when given another value than its default)."""
    a, b, filled = _flat(as_json(stored)), _flat(as_json(given)), _flat(as_json(backfill(stored, later_fields)))
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "(absent)") != b.get(k, "(absent)")
                  and filled.get(k, "(absent)") != b.get(k, "(absent)"))
    keys.sort(key=lambda k: (k not in ("algo", "env"), k))  # the algorithm and env first
    parts = [f"{k}: stored {a.get(k, '(absent)')}, given {b.get(k, '(absent)')}" for k in keys[:limit]]
    return "; ".join(parts) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def is_complete(step_dir: Path) -> bool:
    """Whether Orbax finished writing ``step_dir`` (either completion mark, and both items)."""
    if not all((step_dir / item).is_dir() for item in ITEMS):
        return False
    if (step_dir / COMMIT_FILE).exists():
        return True
    try:
        return json.loads((step_dir / STEP_METADATA).read_text()).get("commit_timestamp_nsecs") is not None
    except (OSError, ValueError, AttributeError):
        return False


_quiet_lock = threading.Lock()
_quiet_hook: Any = None


def _is_late_read(unraisable: Any) -> bool:
    """A report left behind by Orbax's concurrent reads after one failed (module docstring): a read that
    finished after the event loop closed, or a read coroutine of Orbax's that was dropped unfinished."""
    obj, err = unraisable.object, unraisable.exc_value
    if obj is None:
        return isinstance(err, RuntimeError) and str(err) == "Event loop is closed"
    code = getattr(obj, "cr_code", None)
    return code is not None and "orbax" in code.co_filename


class _LateReadTasks(logging.Filter):
    """asyncio's "Task exception was never retrieved" for a read of Orbax's that failed after another read
    had already failed the restore (tensorstore's errors are ValueErrors naming a status and "Error reading")."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        late = (str(record.msg).startswith("Task exception was never retrieved") and isinstance(err, ValueError)
                and re.match(r"[A-Z_]+: Error (reading|opening)", str(err)) is not None)
        return not late


_late_tasks = _LateReadTasks()


def quiet_late_reads() -> None:
    """Drop the reports of :func:`_is_late_read` from now on (every other unraisable exception goes to the
    hook that was there before), and asyncio's log lines of the same late reads. Called before each read:
    the reports can come before the error does."""
    global _quiet_hook
    asyncio_log = logging.getLogger("asyncio")
    if _late_tasks not in asyncio_log.filters:
        asyncio_log.addFilter(_late_tasks)
    with _quiet_lock:
        if sys.unraisablehook is _quiet_hook:
            return
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if not _is_late_read(unraisable):
                previous(unraisable)

        sys.unraisablehook = _quiet_hook = hook


def _key_name(key: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_table(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """{'a/b/0': (shape, dtype)} for every leaf, with dataclass fields, dict keys and indices alike."""
    table = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        table["/".join(_key_name(k) for k in path)] = (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
    return table


def describe_mismatch(expected: dict, stored: dict, limit: int = 3) -> str:
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    changed = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:limit])}" + (" ..." if len(missing) > limit else ""))
    if extra:
        parts.append(f"unexpected {', '.join(extra[:limit])}" + (" ..." if len(extra) > limit else ""))
    for k in changed[:limit]:
        parts.append(f"{k}: stored {stored[k][0]} {stored[k][1]}, expected {expected[k][0]} {expected[k][1]}")
    return "; ".join(parts)


class Checkpoints:
    """The checkpoints of one program under ``directory`` (created on the first save).

    ``writer``: this process will save here (a run or a resumed run): incomplete step directories
    are moved aside first. Readers (evaluation, export) leave the directory as it is.
    """

    def __init__(self, directory: str | Path, keep: int = 3, writer: bool = False):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).resolve()
        self.moved_aside: list[Path] = []
        if writer:
            self.moved_aside = [self._move_aside(d) for d in self.incomplete() if d.name.isdigit()]
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "record": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def _move_aside(self, step_dir: Path) -> Path:
        target, n = step_dir.with_name(f"{step_dir.name}.incomplete"), 1
        while target.exists():
            n += 1
            target = step_dir.with_name(f"{step_dir.name}.incomplete{n}")
        step_dir.rename(target)
        return target

    def incomplete(self) -> list[Path]:
        """Leftovers of interrupted writes: Orbax temporary directories and step directories without
        a completion mark (neither is ever restored)."""
        if not self.directory.is_dir():
            return []
        return sorted(d for d in self.directory.iterdir()
                      if d.is_dir() and (TMP_MARK in d.name or (d.name.isdigit() and not is_complete(d))))

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints."""
        return sorted(s for s in self.manager.all_steps() if is_complete(self.directory / str(s)))

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, record: dict[str, Any]) -> None:
        """Start writing ``state`` (global arrays) and the JSON ``record`` as checkpoint ``step``."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))
        self.manager.save(step, args=args, force=True)

    def _step(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            skipped = self.incomplete()
            raise CheckpointError(f"no checkpoint under {self.directory}" + (
                f" (only incomplete writes: {', '.join(d.name for d in skipped)})" if skipped else ""))
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint {step} under {self.directory}; present: {steps}")
        return step

    def _damaged(self, step: int, what: str) -> DamagedCheckpoint:
        """A complete checkpoint that cannot be read (Orbax's own error is the exception's cause)."""
        return DamagedCheckpoint(self.directory, step, what, self.steps())

    def record(self, step: int | None = None) -> dict[str, Any]:
        """The JSON record of a checkpoint (the latest complete one by default)."""
        step = self._step(step)
        quiet_late_reads()
        try:
            return self.manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]
        except Exception as err:  # orbax raises many types for a damaged directory
            raise self._damaged(step, "record") from err

    def check_identity(self, record: dict[str, Any], identity: dict[str, Any], step: int,
                       later_fields: dict[str, Any] | None = None) -> None:
        """Refuse a checkpoint written by a different run, naming what differs (a checkpoint written before
        the run's budget was extended, or before a field of ``later_fields`` existed, belongs to it:
        :func:`same_run`)."""
        stored = record.get("run")
        if record.get("fingerprint") == fingerprint(identity) or same_run(stored, identity, later_fields):
            return
        detail = identity_mismatch(stored, identity, later_fields=later_fields) if isinstance(stored, dict) else (
            "its config, seeds or sweep differ (an older checkpoint without its run's settings)")
        raise CheckpointError(f"the checkpoints under {self.directory} belong to a different run (checkpoint {step}): "
                              f"{detail}; resume with the run's own settings (its config.json)")

    def restore(self, target: Any, step: int | None = None, expect: dict[str, Any] | None = None,
                later_fields: dict[str, Any] | None = None, partial: bool = False) -> tuple[Any, dict]:
        """Restore into ``target``'s structure: a pytree of ``jax.ShapeDtypeStruct`` with shardings
        (global arrays) or of NumPy arrays (host copies). ``expect`` is the run's identity
        (``fingerprint(expect)`` must match the record's, or :func:`same_run` hold with ``later_fields``).
        ``partial``: ``target`` may leave out stored leaves (a state without its replay buffer), which are
        then not read at all."""
        step = self._step(step)
        record = self.record(step)
        if expect is not None:
            self.check_identity(record, expect, step, later_fields)
        try:
            stored_tree = self.manager.item_metadata(step)["state"]
            stored = leaf_table(getattr(stored_tree, "tree", stored_tree))
        except Exception as err:
            raise self._damaged(step, "state metadata") from err
        expected = leaf_table(target)
        if partial:
            stored = {k: v for k, v in stored.items() if k in expected}
        if stored != expected:
            raise CheckpointError(f"checkpoint {step} under {self.directory} does not match this program's "
                                  f"train state: {describe_mismatch(expected, stored)}")
        quiet_late_reads()
        try:
            if partial:  # the manager's state handler reads whole trees: a PyTree reader of the same files
                restore_args = ocp.checkpoint_utils.construct_restore_args(target)
                args = ocp.args.PyTreeRestore(target, restore_args, partial_restore=True)
                with ocp.PyTreeCheckpointer() as reader:
                    state = reader.restore(self.step_dir(step) / "state", args=args)
            else:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
                state = self.manager.restore(step, args=args)["state"]
        except Exception as err:
            raise self._damaged(step, "arrays") from err
        return state, record

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
