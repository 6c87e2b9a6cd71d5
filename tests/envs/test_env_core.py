"""The env API's bookkeeping (episode counters, truncation vs termination, auto-reset, wrappers)
checked on a tiny counting env whose every number is known by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.core import EnvSpec, MultiAgentEnv, make_timestep


class Counter(MultiAgentEnv):
    """2 agents, 3 actions. The state counts steps; reward = sum of actions; obs = [count, agent].

    Terminates when the count reaches ``end_at`` (if given); the limit is 4 steps.
    """

    def __init__(self, end_at=None):
        self.end_at = end_at
        self.spec = EnvSpec("counter", num_agents=2, obs_dim=2, state_dim=1, num_actions=3, episode_limit=4)

    def _ts(self, count, reward=0.0, terminated=False):
        obs = jnp.stack([jnp.full(2, count, jnp.float32), jnp.arange(2.0)], axis=1)
        avail = jnp.array([[True, True, True], [True, False, True]])
        return make_timestep(obs, jnp.array([count]), avail, reward, terminated)

    def reset_env(self, key):
        return jnp.zeros((), jnp.int32), self._ts(0)

    def step_env(self, key, state, actions):
        count = state + 1
        terminated = False if self.end_at is None else count >= self.end_at
        return count, self._ts(count, actions.sum(), terminated)


def run(env, actions_seq, key=0):
    state, ts = env.reset(jax.random.PRNGKey(key))
    out = [ts]
    for a in actions_seq:
        state, ts = env.step(jax.random.PRNGKey(key), state, jnp.array(a, jnp.int32))
        out.append(ts)
    return out


def test_episode_counters_and_truncation_at_limit():
    steps = run(Counter(), [[1, 2], [0, 0], [2, 2], [1, 0]])
    assert [float(t.info["episode_return"]) for t in steps] == [0, 3, 3, 7, 8]
    assert [int(t.info["episode_length"]) for t in steps] == [0, 1, 2, 3, 4]
    assert [bool(t.truncated) for t in steps] == [False, False, False, False, True]
    assert not any(bool(t.terminated) for t in steps)
    assert not bool(steps[-1].info["won"])


def test_termination_is_not_truncation_even_on_the_last_step():
    steps = run(Counter(end_at=4), [[0, 0]] * 4)
    assert bool(steps[-1].terminated) and not bool(steps[-1].truncated)
    steps = run(Counter(end_at=2), [[0, 0]] * 2)
    assert bool(steps[-1].terminated) and not bool(steps[-1].truncated)


def test_auto_reset_keeps_terminal_observation_and_finished_episode_stats():
    env = envs.wrap(Counter())
    steps = run(env, [[1, 1]] * 6)
    end = steps[4]  # 4th step hits the limit
    assert bool(end.truncated)
    np.testing.assert_array_equal(end.info["final_obs"][:, 0], [4, 4])  # terminal obs kept
    np.testing.assert_array_equal(end.obs[:, 0], [0, 0])  # next episode's first obs
    np.testing.assert_array_equal(end.info["final_state"], [4])
    assert float(end.info["episode_return"]) == 8.0 and int(end.info["episode_length"]) == 4
    # the next step belongs to a fresh episode
    assert int(steps[5].info["episode_length"]) == 1 and float(steps[5].info["episode_return"]) == 2.0
    np.testing.assert_array_equal(steps[5].obs[:, 0], [1, 1])
    # when the episode goes on, final_obs equals obs
    np.testing.assert_array_equal(steps[2].info["final_obs"], steps[2].obs)


def test_last_action_and_agent_id_wrappers():
    env = envs.wrap(Counter(), agent_id=True, last_action=True)
    assert env.spec.obs_dim == 2 + 3 + 2
    steps = run(env, [[2, 0], [1, 1], [0, 2], [2, 2], [1, 0]])
    np.testing.assert_array_equal(steps[0].obs[:, 2:5], np.zeros((2, 3)))
    np.testing.assert_array_equal(steps[1].obs[:, 2:5], [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(steps[2].obs[:, 2:5], [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(steps[3].obs[:, 5:], np.eye(2))
    # the episode ended at step 4: the next episode starts with no last action, the terminal obs keeps it
    np.testing.assert_array_equal(steps[4].obs[:, 2:5], np.zeros((2, 3)))
    np.testing.assert_array_equal(steps[4].info["final_obs"][:, 2:5], [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(steps[5].obs[:, 2:5], [[0, 1, 0], [1, 0, 0]])


def test_wrapped_rollout_is_jittable_and_vmappable():
    env = envs.wrap(Counter(), agent_id=True, last_action=True)

    def rollout(key):
        state, ts = env.reset(key)

        def body(carry, k):
            state, ts = carry
            a = envs.random_actions(k, ts.avail_actions)
            state, ts = env.step(k, state, a)
            return (state, ts), (ts.reward, ts.done)

        _, (r, d) = jax.lax.scan(body, (state, ts), jax.random.split(key, 10))
        return r, d

    r, d = jax.jit(jax.vmap(rollout))(jax.random.split(jax.random.PRNGKey(0), 3))
    assert r.shape == (3, 10)
    np.testing.assert_array_equal(d[0], [False, False, False, True] * 2 + [False, False])


def test_actions_are_validated():
    env = Counter()
    state, _ = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(jax.random.PRNGKey(0), state, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        env.step(jax.random.PRNGKey(0), state, jnp.array([0, 3]))
    with pytest.raises(ValueError, match="integers"):
        env.step(jax.random.PRNGKey(0), state, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        jax.jit(lambda a: env.step(jax.random.PRNGKey(0), state, a))(jnp.zeros(3, jnp.int32))


def test_random_actions_respect_the_mask():
    avail = jnp.array([[True, False, True, False], [False, False, False, True]])
    draws = jax.vmap(lambda k: envs.random_actions(k, avail))(jax.random.split(jax.random.PRNGKey(1), 2000))
    draws = np.asarray(draws)
    assert set(np.unique(draws[:, 0])) == {0, 2}
    assert set(np.unique(draws[:, 1])) == {3}
    # uniform over the available ones
    assert abs((draws[:, 0] == 0).mean() - 0.5) < 0.05


def test_spec_rejects_nonsense():
    with pytest.raises(ValueError, match="num_agents"):
        EnvSpec("x", num_agents=0, obs_dim=1, state_dim=1, num_actions=1, episode_limit=1)
