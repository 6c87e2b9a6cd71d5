"""Orbax checkpoints of the full vmapped train state, so that a run resumes bit for bit.

A checkpoint holds the state of every run of a program (params, optimiser state, env states, RNG,
counters, adaptive coefficients, replay buffers: the whole TrainState pytree) and a small JSON
record (chunks done, the run's fingerprint). The step number is the number of compiled chunks
done. Saving is asynchronous: the device-to-host copy happens inside ``save``, so the next chunk may
donate the state's buffers; writing to disk overlaps with training. The last ``keep`` checkpoints
are kept.

Restoring checks before reading any array that the checkpoint was written by the same run (the
fingerprint of its config, seeds and sweep) and that every leaf's path, shape and dtype match what
the program expects, and turns unreadable files into a :class:`CheckpointError` that says which
checkpoint failed and which others exist.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or written by a different run."""


def fingerprint(record: dict[str, Any]) -> str:
    """A short hash of what must not change across a resume (JSON-serialisable)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    """The checkpoints of one program under ``directory`` (created on the first save)."""

    def __init__(self, directory: str | Path, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "record": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, record: dict[str, Any]) -> None:
        """Start writing ``state`` (global arrays) and the JSON ``record`` as checkpoint ``step``."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))
        self.manager.save(step, args=args, force=True)

    def _step(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint under {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint {step} under {self.directory}; present: {steps}")
        return step

    def record(self, step: int | None = None) -> dict[str, Any]:
        """The JSON record of a checkpoint (the latest by default)."""
        step = self._step(step)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]
        except Exception as err:  # orbax raises many types for a damaged directory
            raise CheckpointError(f"checkpoint {step} under {self.directory} is unreadable "
                                  f"({type(err).__name__}: {err}); present: {self.steps()}") from err

    def restore(self, target: Any, step: int | None = None, expect: str | None = None) -> tuple[Any, dict]:
        """Restore into ``target``'s structure: a pytree of ``jax.ShapeDtypeStruct`` with shardings
        (global arrays) or of NumPy arrays (host copies). ``expect`` is the run's fingerprint."""
        step = self._step(step)
        record = self.record(step)
        if expect is not None and record.get("fingerprint") != expect:
            raise CheckpointError(f"checkpoint {step} under {self.directory} belongs to a different run "
                                  f"(its config, seeds or sweep differ); resume with the run's own settings")
        try:
            stored_tree = self.manager.item_metadata(step)["state"]
            stored = leaf_table(getattr(stored_tree, "tree", stored_tree))
        except Exception as err:
            raise CheckpointError(f"checkpoint {step} under {self.directory} has no readable state metadata "
                                  f"({type(err).__name__}: {err})") from err
        expected = leaf_table(target)
        if stored != expected:
            raise CheckpointError(f"checkpoint {step} under {self.directory} does not match this program's "
                                  f"train state: {describe_mismatch(expected, stored)}")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
        try:
            state = self.manager.restore(step, args=args)["state"]
        except Exception as err:
            raise CheckpointError(f"checkpoint {step} under {self.directory} could not be read "
                                  f"({type(err).__name__}: {err}); it may be incomplete or corrupt; "
                                  f"present: {self.steps()}") from err
        return state, record

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
