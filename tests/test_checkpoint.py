"""Checkpoints: a run interrupted and resumed ends exactly where an uninterrupted run ends; damaged or
foreign checkpoints give a clear error."""

import json
import shutil

import jax
import numpy as np
import pytest

import jmarl
from jmarl.checkpoint import CheckpointError, Checkpoints
from jmarl.config import ConfigError
from jmarl.run_dir import load_checkpoint
from jmarl.runner import run

# 4 chunks of one update each (32 env steps per update); small enough to compile in seconds.
CONFIG = jmarl.make_config("ippo", "matrix_dpo4", total_steps=128, num_envs=4, num_steps=8, hidden_dim=8,
                           num_layers=1, epochs=2, eval_every=1, eval_episodes=4)
QUIET = dict(log=lambda line: None, plots=False)


class Interrupt(Exception):
    pass


def interrupt_after(chunks: int):
    seen = []

    def log(line: str) -> None:
        if line.startswith("["):  # a progress line
            seen.append(line)
            if len(seen) == chunks:
                raise Interrupt

    return log


def rows(directory):
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and the same run interrupted during chunk 3 then resumed."""
    base = tmp_path_factory.mktemp("ckpt")
    full, cut = base / "full", base / "cut"
    full_summary = run(CONFIG, seeds=2, out_dir=full, checkpoint_every=0, **QUIET)
    with pytest.raises(Interrupt):  # the progress line of chunk 3 raises before chunk 3 is checkpointed
        run(CONFIG, seeds=2, out_dir=cut, checkpoint_every=2, plots=False, log=interrupt_after(3))
    before = rows(cut)
    lines = []
    resumed_summary = run(CONFIG, seeds=2, out_dir=cut, checkpoint_every=2, resume=True, plots=False,
                          log=lines.append)
    return full, cut, full_summary, resumed_summary, before, lines


def test_resumed_run_equals_uninterrupted_run(runs):
    full, cut, full_summary, resumed_summary, before, lines = runs
    assert [r["env_steps"] for r in before] == [32, 32, 64, 64, 96, 96]  # chunk 3 was logged, not checkpointed
    assert any("resumed" in line and "at chunk 2/4" in line for line in lines)
    assert [line.split("|")[1].strip() for line in lines if line.startswith("[")] == ["env steps 96/128",
                                                                                       "env steps 128/128"]
    assert rows(cut) == rows(full)  # rows after the checkpoint at chunk 2 were dropped, then recomputed
    assert resumed_summary == full_summary
    _, state_full, _, rec_full = load_checkpoint(full)
    _, state_cut, _, rec_cut = load_checkpoint(cut)
    assert rec_full["chunks_done"] == rec_cut["chunks_done"] == 4
    leaves_full, leaves_cut = jax.tree.leaves(state_full), jax.tree.leaves(state_cut)
    assert len(leaves_full) == len(leaves_cut) > 10
    for a, b in zip(leaves_full, leaves_cut, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(np.asarray(state_full.env_steps)[0]) == 128


def test_only_the_last_checkpoints_are_kept(runs):
    _, cut, *_ = runs
    assert Checkpoints(cut / "checkpoints").steps() == [2, 4]  # every 2 updates = 2 chunks; keep 3


def test_resume_refuses_a_checkpoint_of_another_run(runs, tmp_path):
    _, cut, *_ = runs
    other = tmp_path / "other"
    shutil.copytree(cut, other)
    changed = jmarl.make_config("ippo", "matrix_dpo4", **{**_fields(CONFIG), "lr": 1e-3})
    with pytest.raises(CheckpointError, match="belong to a different run"):
        run(changed, seeds=2, out_dir=other, resume=True, **QUIET)
    with pytest.raises(CheckpointError, match="belong to a different run"):
        run(CONFIG, seeds=3, out_dir=other, resume=True, **QUIET)


def test_a_new_run_refuses_a_directory_with_checkpoints(runs):
    _, cut, *_ = runs
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run(CONFIG, seeds=2, out_dir=cut, **QUIET)


def test_damaged_checkpoint_gives_a_clear_error(runs, tmp_path):
    _, cut, *_ = runs
    damaged = tmp_path / "damaged"
    shutil.copytree(cut, damaged)
    state_dir = damaged / "checkpoints" / "4" / "state"
    for f in state_dir.rglob("*"):
        if f.is_file() and "metadata" not in f.name:
            f.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint 4 .* (could not be read|unreadable|no readable)"):
        load_checkpoint(damaged)


def test_mismatched_state_names_the_leaf(tmp_path):
    ckpt = Checkpoints(tmp_path / "c")
    ckpt.save(1, {"params": {"w": np.ones((2, 3), np.float32)}, "step": np.zeros((), np.int32)}, {"chunks_done": 1})
    ckpt.wait()
    target = {"params": {"w": np.zeros((2, 4), np.float32)}, "step": np.zeros((), np.int32)}
    with pytest.raises(CheckpointError, match=r"params/w: stored \(2, 3\) float32, expected \(2, 4\) float32"):
        ckpt.restore(target)
    with pytest.raises(CheckpointError, match="missing extra"):
        ckpt.restore({**target, "extra": np.zeros(1)})
    ckpt.close()
    with pytest.raises(CheckpointError, match="no checkpoint under"):
        Checkpoints(tmp_path / "empty").restore(target)


def _fields(config):
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(config).items() if k not in ("algo", "env")}


# Tiny settings per learner family (keys a config lacks are dropped); hallway has multi-step episodes.
TINY_ANY = dict(total_steps=256, num_envs=4, num_steps=16, hidden_dim=8, epochs=1, eval_every=1, eval_episodes=2,
                batch_size=4, buffer_size=64, target_update_episodes=4, target_update_updates=4, mixing_embed_dim=8,
                hypernet_dim=8, central_embed_dim=8, central_hidden_dim=8, value_embed_dim=8, value_hidden_dim=8,
                recurrent=False)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["tad_ppo", "remix", "lan"])
def test_every_learner_resumes_exactly(algo, tmp_path):
    """The exact-continuation check for the other learner families (replay buffers, value norms, attention)."""
    import dataclasses

    cls = jmarl.registry.config_class(algo)
    names = {f.name for f in dataclasses.fields(cls)}
    config = jmarl.make_config(algo, "hallway", **{k: v for k, v in TINY_ANY.items() if k in names})
    full = run(config, seeds=2, out_dir=tmp_path / "full", checkpoint_every=0, **QUIET)
    with pytest.raises(Interrupt):
        run(config, seeds=2, out_dir=tmp_path / "cut", checkpoint_every=1, plots=False, log=interrupt_after(3))
    resumed = run(config, seeds=2, out_dir=tmp_path / "cut", resume=True, **QUIET)
    assert resumed == full
    assert rows(tmp_path / "cut") == rows(tmp_path / "full")
    _, a, _, _ = load_checkpoint(tmp_path / "full")
    _, b, _, _ = load_checkpoint(tmp_path / "cut")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_only_late_read_task_errors_are_kept_out_of_the_log():
    """asyncio's "Task exception was never retrieved" for a tensorstore read that failed after the restore had
    already failed is dropped; any other record, or another exception, still goes through."""
    import logging
    import sys as _sys

    from jmarl.checkpoint import _LateReadTasks

    def record(msg, err):
        try:
            raise err
        except type(err):
            info = _sys.exc_info()
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, info)

    late = 'OUT_OF_RANGE: Error reading "w13/0.0" in OCDBT database at local file "c/2/state/"'
    keep = _LateReadTasks().filter
    assert not keep(record("Task exception was never retrieved\nfuture: <Task finished>", ValueError(late)))
    assert keep(record("Task exception was never retrieved\nfuture: <Task finished>", ValueError("bad value")))
    assert keep(record("Task exception was never retrieved", RuntimeError(late)))
    assert keep(record("Unclosed client session", ValueError(late)))
