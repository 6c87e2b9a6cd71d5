"""The episode buffer: hand-worked slot allocation, whole masked episodes against a Python record of a
real auto-reset rollout (terminations and truncations), in-progress slots never reallocated, sampling
only complete episodes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import EnvSpec
from jmarl import replay

SPEC = EnvSpec(name="fake", num_agents=2, obs_dim=3, state_dim=4, num_actions=3, episode_limit=5)


def fake_step(env_ids, episode_ids, steps, done, terminated=None):
    """One step of E fake envs whose obs encode (episode id, step) so that slots can be identified."""
    e = len(env_ids)
    obs = np.zeros((e, 2, 3), np.float32)
    obs[:, :, 0], obs[:, :, 1] = np.asarray(episode_ids)[:, None], np.asarray(steps)[:, None]
    nxt = obs.copy()
    nxt[:, :, 1] += 1
    state = np.zeros((e, 4), np.float32)
    state[:, 0] = episode_ids
    avail = np.ones((e, 2, 3), bool)
    term = np.asarray(done if terminated is None else terminated)
    return dict(obs=obs, state=state, avail=avail, actions=np.zeros((e, 2), np.int32),
                reward=np.asarray(steps, np.float32), terminated=term, next_obs=nxt, next_state=state,
                next_avail=avail, done=np.asarray(done))


add = jax.jit(replay.add_step)


def test_slot_allocation_worked_by_hand():
    """E=2, C=4 (the minimum): env 0's episodes last 2 and 1 steps, env 1's first lasts 3 steps."""
    buf = replay.init_buffer(SPEC, 4, 2)
    np.testing.assert_array_equal(buf.write_slot, [0, 1])
    assert int(buf.pointer) == 2
    buf = add(buf, **fake_step([0, 1], [0, 1], [0, 0], [False, False]))
    buf = add(buf, **fake_step([0, 1], [0, 1], [1, 1], [True, False]))
    # env 0 finished in slot 0; candidates 2, 3, 0, 1 with slot 1 busy: env 0 takes 2, pointer -> 3
    np.testing.assert_array_equal(buf.write_slot, [2, 1])
    assert int(buf.pointer) == 3
    np.testing.assert_array_equal(buf.complete, [True, False, False, False])
    buf = add(buf, **fake_step([0, 1], [2, 1], [0, 2], [True, True]))
    # both finish: candidates 3, 0, 1, 2, none busy: env 0 -> 3, env 1 -> 0 (clearing episode 0), pointer -> 1
    np.testing.assert_array_equal(buf.write_slot, [3, 0])
    assert int(buf.pointer) == 1
    np.testing.assert_array_equal(buf.complete, [False, True, True, False])
    np.testing.assert_array_equal(buf.mask, [[0] * 5, [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5])
    np.testing.assert_array_equal(buf.write_step, [0, 0])
    ep = replay.episode(buf, 1)
    assert ep["length"] == 3
    np.testing.assert_array_equal(ep["obs"][:, 0, 1], [0, 1, 2, 3])  # index T holds the obs after the last step
    np.testing.assert_array_equal(ep["obs"][:, 0, 0], 1)


def test_capacity_and_dtype_are_checked():
    with pytest.raises(ValueError, match="at least 2 x num_envs"):
        replay.init_buffer(SPEC, 7, 4)
    with pytest.raises(ValueError, match="dtype must be one of"):
        replay.init_buffer(SPEC, 8, 2, dtype="float16")


def test_streaming_never_reallocates_a_slot_in_progress():
    """Random episode ends with one long-running env and a small buffer: every complete slot holds one
    whole episode exactly as written, and every in-progress slot holds its episode's prefix."""
    rng = np.random.default_rng(0)
    num_envs, cap, limit = 4, 9, SPEC.episode_limit
    buf = replay.init_buffer(SPEC, cap, num_envs)
    episode_ids, steps = np.arange(num_envs), np.zeros(num_envs, int)
    next_id, finished = num_envs, {}
    for _ in range(120):
        # env 0 always runs to the limit; the others end at random
        done = (rng.random(num_envs) < 0.5) | (steps + 1 >= limit)
        done[0] = steps[0] + 1 >= limit
        buf = add(buf, **fake_step(range(num_envs), episode_ids, steps, done))
        slots = np.asarray(buf.write_slot)
        assert len(set(slots.tolist())) == num_envs
        for e in range(num_envs):
            if done[e]:
                finished[int(episode_ids[e])] = steps[e] + 1
                episode_ids[e], steps[e], next_id = next_id, 0, next_id + 1
            else:
                steps[e] += 1
        for e in range(num_envs):  # in-progress slots: not complete, rows so far intact
            s = slots[e]
            assert not bool(buf.complete[s])
            np.testing.assert_array_equal(np.asarray(buf.mask[s]), np.arange(limit) < steps[e])
            np.testing.assert_array_equal(np.asarray(buf.obs[s, : steps[e], 0, 0]), episode_ids[e])
    complete = np.flatnonzero(np.asarray(buf.complete))
    assert len(complete) == cap - num_envs  # every slot used, all but the running ones complete
    seen = set()
    for s in complete:
        ep = replay.episode(buf, s)
        ident = int(ep["obs"][0, 0, 0])
        assert ident in finished and ident not in seen
        seen.add(ident)
        assert ep["length"] == finished[ident]
        np.testing.assert_array_equal(ep["obs"][:, :, 0], ident)
        np.testing.assert_array_equal(ep["obs"][:, 0, 1], np.arange(ep["length"] + 1))
        np.testing.assert_array_equal(ep["reward"], np.arange(ep["length"]))


def test_buffer_holds_a_real_rollout_with_terminal_observations():
    """Hallway with a 2-step limit (truncations) and random actions (terminations): each complete slot is
    one recorded episode, obs[length] is the final obs, terminated only where the env terminated."""
    env = envs.wrap(envs.make("hallway", episode_limit=2))
    spec, num_envs = env.spec, 3
    buf = replay.init_buffer(spec, 16, num_envs, dtype="bfloat16")
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))
    state, ts = reset(jax.random.split(jax.random.PRNGKey(0), num_envs))
    current = [dict(obs=[], actions=[], reward=[], terminated=[]) for _ in range(num_envs)]
    recorded = []
    key = jax.random.PRNGKey(1)
    for _ in range(40):
        key, k_act, k_env = jax.random.split(key, 3)
        actions = jax.vmap(envs.random_actions)(jax.random.split(k_act, num_envs), ts.avail_actions)
        state, nxt = step(jax.random.split(k_env, num_envs), state, actions)
        buf = add(buf, ts.obs, ts.state, ts.avail_actions, actions, nxt.reward, nxt.terminated,
                  nxt.info["final_obs"], nxt.info["final_state"], nxt.info["final_avail_actions"], nxt.done)
        for e in range(num_envs):
            c = current[e]
            c["obs"].append(np.asarray(ts.obs[e]))
            c["actions"].append(np.asarray(actions[e]))
            c["reward"].append(float(nxt.reward[e]))
            c["terminated"].append(bool(nxt.terminated[e]))
            if bool(nxt.done[e]):
                c["obs"].append(np.asarray(nxt.info["final_obs"][e]))
                recorded.append(c)
                current[e] = dict(obs=[], actions=[], reward=[], terminated=[])
        ts = nxt
    complete = np.flatnonzero(np.asarray(buf.complete))
    assert len(complete) >= 8
    truncated = 0
    for s in complete:
        ep = replay.episode(buf, s)
        matches = [r for r in recorded if len(r["reward"]) == ep["length"]
                   and np.array_equal(np.stack(r["actions"]), ep["actions"])
                   and np.array_equal(np.stack(r["obs"]), ep["obs"])]
        assert matches, f"slot {s} holds no recorded episode"
        r = matches[0]
        np.testing.assert_array_equal(ep["reward"], r["reward"])
        np.testing.assert_array_equal(ep["terminated"], r["terminated"])
        assert not ep["terminated"][:-1].any()
        truncated += int(not ep["terminated"][-1])
        assert np.asarray(buf.mask[s]).sum() == ep["length"]
        assert not np.asarray(buf.mask[s, ep["length"]:]).any()
    assert truncated > 0 and truncated < len(complete)  # both kinds of end were stored


def test_sampling_draws_only_complete_episodes_uniformly():
    buf = replay.init_buffer(SPEC, 10, 2)
    complete = np.zeros(10, bool)
    complete[[1, 4, 7]] = True
    buf = buf.replace(complete=jnp.asarray(complete), reward=jnp.arange(10, dtype=jnp.float32)[:, None]
                      * jnp.ones((1, SPEC.episode_limit)))
    batch = jax.jit(replay.sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 3000)
    assert batch.obs.dtype == jnp.float32 and batch.obs.shape == (3000, 6, 2, 3)
    drawn = np.asarray(batch.reward[:, 0]).astype(int)
    assert set(drawn.tolist()) == {1, 4, 7}
    counts = np.bincount(drawn, minlength=10)[[1, 4, 7]]
    assert np.all(np.abs(counts - 1000) < 120), counts  # 3.9 sigma of a binomial(3000, 1/3)


def test_bytes_per_episode_counts_every_array():
    buf = replay.init_buffer(SPEC, 4, 2, dtype="bfloat16")
    leaves = [buf.obs, buf.state, buf.avail, buf.actions, buf.reward, buf.terminated, buf.mask, buf.complete]
    assert sum(x.nbytes for x in leaves) == 4 * replay.bytes_per_episode(SPEC, "bfloat16")
    # predator-prey, 10000 episodes: about 7.3 GB in float32, half of the float part in bfloat16
    pp = envs.make("predator_prey").spec
    assert 7.0e9 < 10_000 * replay.bytes_per_episode(pp) < 7.6e9
