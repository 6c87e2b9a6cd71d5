"""Checkpoints without the replay buffer (``checkpoint_replay=False``, ``--no-checkpoint-replay``): no buffer
leaves on disk, a smaller checkpoint; a resumed run restores everything else, starts from an empty buffer and new
episodes, waits for a full batch before learning again and runs to the end; on-policy learners are unaffected."""

import json
import math
import os
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
import jmarl.program
import jmarl.spec
from jmarl import runner
from jmarl.checkpoint import (
    EPISODE_FIELDS,
    REPLAY_FIELD,
    Checkpoints,
    has_replay,
    replay_status,
    with_fresh_replay,
    without_replay,
)
from jmarl.offpolicy import OffPolicyConfig
from jmarl.registry import action_kinds, config_class
from jmarl.replay import EpisodeBuffer
from jmarl.run_dir import load_checkpoint
from jmarl.runner import run
from jmarl.spec import abstract_state

# 8 chunks of one update: 4 envs x 10 steps of a 25-step env, so an env finishes an episode every 2.5 updates and
# the buffer holds 4 complete episodes and 4 in progress at checkpoint 3. Resumed there with an empty buffer and new
# episodes, the envs finish their first episodes in the 3rd update after the resume: updates 4 and 5 cannot learn
# (fewer than batch_size = 4 complete episodes), 6, 7 and 8 can.
CONFIG = jmarl.make_config("vdn", "mpe_line_control", total_steps=320, num_envs=4, num_steps=10, hidden_dim=8,
                           eval_every=1, eval_episodes=2, batch_size=4, buffer_size=32, target_update_episodes=4,
                           mixing_embed_dim=8, updates_per_episode=0.0)
RESUME_AT = 3  # chunks done at the checkpoint the interrupted run resumes from; checkpoints every 3 chunks
CHUNKS = 8
QUIET = dict(log=lambda line: None, plots=False)


class Interrupt(Exception):
    pass


def interrupt_at_progress_line(n: int):
    """A log that raises at the n-th progress line: chunk n is logged, its checkpoint not yet written."""
    seen = []

    def log(line: str) -> None:
        if line.startswith("["):
            seen.append(line)
            if len(seen) == n:
                raise Interrupt

    return log


def rows(directory):
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def stored_arrays(step_dir):
    """Names of the arrays in a checkpoint's state item, read from Orbax's own metadata file."""
    tree = json.loads((step_dir / "state" / "_METADATA").read_text())["tree_metadata"]
    return {k for k, v in tree.items() if v["value_metadata"]["value_type"] != "None"}


def disk_bytes(directory):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(directory) for f in files)


def fields(state, names):
    return {name: getattr(state, name) for name in names}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run ``full`` with the buffer in its checkpoints; run ``cut`` without, interrupted after checkpoint 2 and
    resumed; the state the resume continues from is captured."""
    base = tmp_path_factory.mktemp("replay")
    full, cut = base / "full", base / "cut"
    options = dict(seeds=2, checkpoint_every=RESUME_AT, keep_checkpoints=CHUNKS, plots=False)
    run(CONFIG, out_dir=full, log=lambda line: None, **options)
    with pytest.raises(Interrupt):
        run(CONFIG, out_dir=cut, checkpoint_replay=False, log=interrupt_at_progress_line(RESUME_AT + 1), **options)
    before = rows(cut)
    at_resume, lines = [], []

    def spy(restored, fresh):
        state = with_fresh_replay(restored, fresh)
        at_resume.append(jax.device_get(state))
        return state

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "with_fresh_replay", spy)
        run(CONFIG, out_dir=cut, checkpoint_replay=False, resume=True, log=lines.append, **options)
    assert len(at_resume) == 1
    return full, cut, before, at_resume[0], lines


def test_a_checkpoint_without_replay_holds_no_buffer_arrays_and_is_smaller(runs):
    full, cut, *_ = runs
    with_buffer = stored_arrays(full / "checkpoints" / str(RESUME_AT))
    without = stored_arrays(cut / "checkpoints" / str(RESUME_AT))
    buffer_arrays = {k for k in with_buffer if k.startswith(f"('{REPLAY_FIELD}',")}
    assert len(buffer_arrays) == 11  # obs, state, avail, actions, reward, terminated, mask, complete, 3 pointers
    assert without == with_buffer - buffer_arrays
    assert disk_bytes(cut / "checkpoints" / str(RESUME_AT)) < disk_bytes(full / "checkpoints" / str(RESUME_AT))
    assert Checkpoints(full / "checkpoints").record(RESUME_AT)["replay_buffer"] == "saved"
    assert Checkpoints(cut / "checkpoints").record(RESUME_AT)["replay_buffer"] == "omitted"


def test_the_checkpoint_holds_the_same_values_less_the_buffer(runs):
    """Until the interruption both runs computed the same thing: the buffer-less checkpoint equals the whole
    one without its buffer (load_checkpoint gives its buffer as None)."""
    full, cut, *_ = runs
    _, whole, _, _ = load_checkpoint(full, RESUME_AT)
    _, partial, _, record = load_checkpoint(cut, RESUME_AT)
    assert getattr(partial, REPLAY_FIELD) is None and record["chunks_done"] == RESUME_AT
    a, b = jax.tree.leaves(whole.replace(buffer=None)), jax.tree.leaves(partial)
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_resume_restores_everything_but_the_buffer_and_the_episodes_in_progress(runs):
    full, _, _, resumed, _ = runs
    _, saved, _, _ = load_checkpoint(full, RESUME_AT)
    kept = [f.name for f in saved.__dataclass_fields__.values() if f.name not in (REPLAY_FIELD, *EPISODE_FIELDS)]
    assert {"params", "target_params", "opt_state", "key", "env_steps", "episodes", "grad_steps"} <= set(kept)
    for x, y in zip(jax.tree.leaves(fields(saved, kept)), jax.tree.leaves(fields(resumed, kept)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert int(resumed.env_steps[0]) == RESUME_AT * 40
    buf, envs = resumed.buffer, CONFIG.num_envs
    assert not buf.complete.any() and not buf.mask.any()  # empty, both seeds
    np.testing.assert_array_equal(buf.write_slot, np.tile(np.arange(envs), (2, 1)))
    np.testing.assert_array_equal(buf.write_step, np.zeros((2, envs)))
    assert buf.obs.shape == saved.buffer.obs.shape and buf.obs.dtype == saved.buffer.obs.dtype
    assert resumed.episode_start.all() and (resumed.last_action == -1).all() and not resumed.hidden.any()
    assert saved.buffer.complete.sum() > 0 and not saved.episode_start.all()  # what was dropped was not empty


def test_the_resumed_run_refills_the_buffer_waits_for_a_batch_and_ends(runs):
    full, cut, before, resumed, lines = runs
    after = rows(cut)
    assert [r["env_steps"] for r in after] == [40 * (i // 2 + 1) for i in range(2 * CHUNKS)]
    assert all(math.isfinite(v) for r in after for v in r.values() if isinstance(v, float))
    assert after[:2 * RESUME_AT] == rows(full)[:2 * RESUME_AT] == before[:2 * RESUME_AT]
    assert any("holds no replay buffer" in line and "differ from an uninterrupted run" in line for line in lines)
    assert not any("the checkpoint decides" in line for line in lines)  # this run leaves the buffer out too
    for seed in (0, 1):
        mine = [r for r in after if r["seed"] == seed][RESUME_AT:]
        assert [r["train/episodes_finished"] for r in mine] == [0, 0, 4, 0, 4]  # new episodes from the resume on
        assert [r["train/buffer_episodes"] for r in mine] == [0, 0, 4, 4, 8]  # from empty
        assert [r["train/loss"] != 0.0 for r in mine] == [False, False, True, True, True]  # learning waits
        theirs = [r for r in rows(full) if r["seed"] == seed][RESUME_AT:]
        assert [r["train/buffer_episodes"] for r in theirs] == [4, 8, 8, 8, 12]  # the uninterrupted run's buffer
    _, end, _, record = load_checkpoint(cut)
    assert record["chunks_done"] == CHUNKS and record["replay_buffer"] == "omitted"
    np.testing.assert_array_equal(end.grad_steps - resumed.grad_steps, [3 * CONFIG.train_steps] * 2)


def test_resuming_without_the_option_follows_the_checkpoint(runs, tmp_path):
    """The checkpoint decides how to restore; the run's own option decides what later checkpoints hold. The
    same buffer-less checkpoint resumed twice continues identically."""
    _, cut, *_ = runs
    again = tmp_path / "again"
    shutil.copytree(cut, again)
    for step in Checkpoints(again / "checkpoints").steps()[1:]:
        shutil.rmtree(again / "checkpoints" / str(step))
    lines = []
    run(CONFIG, seeds=2, out_dir=again, checkpoint_every=RESUME_AT, keep_checkpoints=CHUNKS, resume=True, plots=False,
        log=lines.append)
    assert any("holds no replay buffer" in line and "the checkpoint decides" in line for line in lines)
    assert rows(again) == rows(cut)
    ckpt = Checkpoints(again / "checkpoints")
    assert ckpt.steps() == [3, 6, 8]
    assert [ckpt.record(s)["replay_buffer"] for s in ckpt.steps()] == ["omitted", "saved", "saved"]
    assert any(k.startswith(f"('{REPLAY_FIELD}',") for k in stored_arrays(again / "checkpoints" / str(CHUNKS)))


@pytest.mark.parametrize("algo", jmarl.algorithm_names())
def test_the_buffer_is_found_in_every_off_policy_state_and_in_no_other(algo):
    """The field is looked up by name: every learner built on jmarl.offpolicy has it, the on-policy ones don't
    (traced shapes only, nothing compiled)."""
    config = jmarl.make_config(algo, "hallway" if "discrete" in action_kinds(algo) else "differential_game")
    state = abstract_state(config, (), 1)
    transitions = algo == "iddpg"  # a flat transition replay (flashbax's item buffer), not whole episodes
    off_policy = issubclass(config_class(algo), OffPolicyConfig) or transitions
    assert has_replay(state) == off_policy
    assert replay_status(state, False) == ("omitted" if off_policy else "none")
    if off_policy:
        buffer = getattr(state, REPLAY_FIELD)
        assert transitions or isinstance(buffer, EpisodeBuffer)
        big = max(x.size for x in jax.tree.leaves(buffer))
        assert not any(x.size >= big for x in jax.tree.leaves(without_replay(state)))
    else:
        assert without_replay(state) is state


@flax.struct.dataclass
class CounterState:
    params: dict
    env_steps: jax.Array


class Counter:
    """A stand-in learner without a replay buffer (as the on-policy ones) that compiles in a blink: its
    parameters move by a seed-dependent random step per update."""

    steps_per_update = 10

    def __init__(self, config):
        self.config = config

    def init(self, key):
        return CounterState({"w": jax.random.normal(key, (3,))}, jnp.zeros((), jnp.int32))

    def update(self, state):
        step = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), state.env_steps), (3,))
        params = {"w": state.params["w"] + step}
        return state.replace(params=params, env_steps=state.env_steps + 10), {"loss": jnp.sum(params["w"] ** 2)}

    def evaluate(self, state):
        return {"return": jnp.sum(state.params["w"])}


def test_a_learner_without_a_buffer_is_unaffected(tmp_path):
    """With the option off, a learner without a buffer checkpoints and resumes exactly as before."""
    config = jmarl.make_config("dpo", "matrix_dpo4", total_steps=160, eval_every=4, num_envs=2, num_steps=5,
                               hidden_dim=4, eval_episodes=1)  # 4 chunks of 4 updates
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jmarl.spec, "build_learner", Counter)
        jmarl.program.compile_program.cache_clear()
        try:
            run(config, seeds=2, out_dir=tmp_path / "full", log=lines.append, plots=False)
            with pytest.raises(Interrupt):
                run(config, seeds=2, out_dir=tmp_path / "cut", checkpoint_every=8, plots=False,
                    checkpoint_replay=False, log=interrupt_at_progress_line(3))
            run(config, seeds=2, out_dir=tmp_path / "cut", resume=True, checkpoint_replay=False, log=lines.append,
                plots=False)
        finally:
            jmarl.program.compile_program.cache_clear()
    assert not any("replay" in line for line in lines)
    assert any("resumed" in line and "at chunk 2/4" in line for line in lines)
    assert rows(tmp_path / "cut") == rows(tmp_path / "full")  # exact
    a, b = Checkpoints(tmp_path / "full" / "checkpoints"), Checkpoints(tmp_path / "cut" / "checkpoints")
    assert a.record(4)["replay_buffer"] == b.record(4)["replay_buffer"] == b.record(2)["replay_buffer"] == "none"
    assert stored_arrays(a.step_dir(4)) == stored_arrays(b.step_dir(4)) == {"('params', 'w')", "('env_steps',)"}


def test_the_command_line_flag(runs, capsys):
    from experiments.run import main

    _, cut, *_ = runs

    def checked(*argv):
        assert main([*argv, "--check"]) == 0
        return json.loads(capsys.readouterr().out)["run_options"]["checkpoint_replay"]

    assert checked("--algo", "vdn", "--env", "mpe_line_control") is True
    assert checked("--algo", "vdn", "--env", "mpe_line_control", "--no-checkpoint-replay") is False
    assert checked("--resume", str(cut)) is False  # the run's own setting, from its config.json
    assert checked("--resume", str(cut), "--checkpoint-replay") is True
    assert json.loads((cut / "config.json").read_text())["checkpoint_replay"] is False


def test_loading_without_the_buffer_skips_it_and_keeps_everything_else(runs):
    """``load_checkpoint(replay=False)`` (what evaluate.py uses) on a checkpoint that holds the buffer: the
    buffer comes back as None, every other array as stored."""
    full, *_ = runs
    _, whole, _, _ = load_checkpoint(full, RESUME_AT)
    _, light, _, record = load_checkpoint(full, RESUME_AT, replay=False)
    assert getattr(light, REPLAY_FIELD) is None and record["replay_buffer"] == "saved"
    a, b = jax.tree.leaves(whole.replace(buffer=None)), jax.tree.leaves(light)
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
