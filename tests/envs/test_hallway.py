"""Hallway: scripted episodes with hand-worked returns, a brute-force optimum, and random-play properties."""

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.hallway import Hallway, HallwayState

L, R = 0, 1
KEY = jax.random.PRNGKey(0)
ENV = envs.make("hallway")
RESET = jax.jit(ENV.reset)
STEP = jax.jit(ENV.step)


def play(joint_actions, env_step=STEP, env_reset=RESET):
    """Run the listed joint actions from a reset; returns the numpy timesteps after each step."""
    state, ts = env_reset(KEY)
    out = []
    for actions in joint_actions:
        state, ts = env_step(KEY, state, np.asarray(actions, np.int32))
        out.append(jax.device_get(ts))
    return out


def ref_step(pos, actions):
    """Independent statement of the rules: (new positions, reward, terminated)."""
    new = tuple(min(max(p + (-1 if a == L else 1), 0), 4) for p, a in zip(pos, actions, strict=True))
    if new == (4, 4):
        return new, 7.0, True
    if new == (0, 0):
        return new, 4.0, True
    return new, -1.0, 0 in new or 4 in new


def test_spec():
    s = ENV.spec
    assert (s.name, s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (
        "hallway", 2, 10, 10, 2, 100)
    assert s.optimal_return == 5.0 and s.reward_bounds == (-1.0, 7.0) and s.has_won
    assert Hallway(full_observation=False).spec.obs_dim == 5
    assert Hallway(episode_limit=2).spec.optimal_return == 4.0  # g1 is out of reach in 2 steps
    assert Hallway(episode_limit=3).spec.optimal_return == 5.0


def test_far_goal_returns_five():
    steps = play([(R, R)] * 3)
    assert [float(t.reward) for t in steps] == [-1.0, -1.0, 7.0]
    assert [bool(t.terminated) for t in steps] == [False, False, True]
    last = steps[-1]
    assert float(last.info["episode_return"]) == 5.0 and int(last.info["episode_length"]) == 3
    assert bool(last.info["won"]) and bool(last.info["reached_g1"]) and not bool(last.truncated)


def test_near_goal_returns_four():
    (last,) = play([(L, L)])
    assert float(last.reward) == 4.0 and bool(last.terminated)
    assert float(last.info["episode_return"]) == 4.0
    assert bool(last.info["won"]) and not bool(last.info["reached_g1"])


@pytest.mark.parametrize(
    "script, length",
    [
        ([(L, R)], 1),  # agent 0 reaches g2 alone at once
        ([(R, R), (R, R), (R, L)], 3),  # agent 0 reaches g1 first
        ([(R, R), (R, L), (R, L)], 3),  # different goals in the same step (cells 3 and 1 -> 4 and 0)
    ],
)
def test_miscoordination_ends_with_only_step_costs(script, length):
    steps = play(script)
    assert [bool(t.terminated) for t in steps] == [False] * (length - 1) + [True]
    assert all(float(t.reward) == -1.0 for t in steps)
    last = steps[-1]
    assert float(last.info["episode_return"]) == -length
    assert not bool(last.info["won"]) and not bool(last.truncated)


def test_dithering_is_truncated_at_100():
    steps = play([(R, R), (L, L)] * 50)
    assert not any(bool(t.terminated) or bool(t.truncated) for t in steps[:-1])
    last = steps[-1]
    assert bool(last.truncated) and not bool(last.terminated)
    assert float(last.info["episode_return"]) == -100.0 and int(last.info["episode_length"]) == 100


def test_observation_and_state_by_hand():
    (ts,) = play([(R, L)])  # agent 0 on cell 2, agent 1 on cell 0 (g2): ends, but obs is still defined
    np.testing.assert_array_equal(ts.obs[0], [0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ts.obs[1], [1, 0, 0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ts.state, [0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    partial = Hallway(full_observation=False)
    (ts,) = play([(R, L)], jax.jit(partial.step), jax.jit(partial.reset))
    np.testing.assert_array_equal(ts.obs, [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(ts.avail_actions, np.ones((2, 2), bool))


def test_walls_and_out_of_range_actions_leave_agents_in_place():
    step_env = jax.jit(ENV.step_env)
    # Ends of the hallway: unreachable mid-episode (goals end it), but clipped all the same.
    state = HallwayState(np.asarray([0, 4], np.int32))
    state, ts = step_env(KEY, state, np.asarray([L, R], np.int32))
    np.testing.assert_array_equal(state.positions, [0, 4])
    assert bool(ts.terminated) and float(ts.reward) == -1.0
    # Values outside {0, 1} are rejected when concrete, and mean "stay" when traced under jit.
    state, _ = RESET(KEY)
    with pytest.raises(ValueError, match="actions must lie in"):
        ENV.step(KEY, state, np.asarray([2, 0], np.int32))
    state, ts = STEP(KEY, state, np.asarray([7, -3], np.int32))
    np.testing.assert_array_equal(state.env_state.positions, [1, 1])
    assert float(ts.reward) == -1.0 and not bool(ts.terminated)


def test_brute_force_optimum_matches_spec():
    """Finite-horizon dynamic programming over the reference rules gives 5 (100 steps) and 4 (2 steps)."""
    cells = range(5)

    def best(horizon):
        value = {s: 0.0 for s in itertools.product(cells, cells)}
        for _ in range(horizon):
            new = {}
            for s in value:
                options = []
                for a in itertools.product((L, R), repeat=2):
                    s2, r, done = ref_step(s, a)
                    options.append(r + (0.0 if done else value[s2]))
                new[s] = max(options)
            value = new
        return value[(1, 1)]

    assert best(100) == ENV.spec.optimal_return == 5.0
    assert best(2) == Hallway(episode_limit=2).spec.optimal_return == 4.0


@pytest.mark.parametrize(
    "kwargs, message",
    [({"full_observation": 1}, "full_observation"), ({"episode_limit": 0}, "episode_limit"),
     ({"episode_limit": 10.0}, "episode_limit"), ({"episode_limit": True}, "episode_limit")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        envs.make("hallway", **kwargs)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=100, max_size=100))
def test_random_play_follows_reference_rules(joint_actions):
    state, ts = RESET(KEY)
    pos, total = (1, 1), 0.0
    for t, actions in enumerate(joint_actions, start=1):
        state, ts = STEP(KEY, state, np.asarray(actions, np.int32))
        ts = jax.device_get(ts)
        pos, reward, done = ref_step(pos, actions)
        total += float(ts.reward)
        np.testing.assert_array_equal(state.env_state.positions, pos)
        assert 0 <= min(pos) and max(pos) <= 4
        assert float(ts.reward) == reward and bool(ts.terminated) == done
        assert float(ts.info["episode_return"]) == pytest.approx(total)
        assert ENV.spec.reward_bounds[0] <= float(ts.reward) <= ENV.spec.reward_bounds[1]
        if bool(ts.terminated) or bool(ts.truncated):
            assert bool(ts.truncated) == (t == 100 and not done)
            break
    assert t <= ENV.spec.episode_limit and (bool(ts.terminated) or bool(ts.truncated))
