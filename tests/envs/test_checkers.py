"""Checkers: hand-checked observations, scripted episodes, the optimum's bound, and a reference model."""

import itertools
from collections import deque

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.checkers import Checkers

KEY = jax.random.PRNGKey(0)
ENV = envs.make("checkers")
RESET = jax.jit(ENV.reset)
STEP = jax.jit(ENV.step)
CODE = {"D": 0, "L": 1, "U": 2, "R": 3, "N": 4}
LAYOUT = ("ALALAL..", "LALALA..", "ALALAL..")  # A apple, L lemon, . empty; rows top to bottom


def play(agent1, agent2, env_step=STEP, env_reset=RESET):
    """Run two equally long action strings (letters of CODE) from a reset; numpy timesteps per step."""
    state, ts = env_reset(KEY)
    out = []
    for a, b in zip(agent1, agent2, strict=True):
        state, ts = env_step(KEY, state, np.asarray([CODE[a], CODE[b]], np.int32))
        out.append((jax.device_get(state.env_state), jax.device_get(ts)))
    return out


class Reference:
    """The rules restated with Python lists, agent 1 moving first."""

    def __init__(self, step_cost=0.0):
        self.items = [list(row) for row in LAYOUT]
        self.pos = [(0, 6), (2, 6)]
        self.step_cost = step_cost

    def step(self, actions):
        offsets = {0: (1, 0), 1: (0, -1), 2: (-1, 0), 3: (0, 1), 4: (0, 0)}
        reward = 2 * self.step_cost
        for i, a in enumerate(actions):
            r, c = self.pos[i][0] + offsets[a][0], self.pos[i][1] + offsets[a][1]
            if 0 <= r < 3 and 0 <= c < 8 and (r, c) != self.pos[1 - i]:
                self.pos[i] = (r, c)
            item = self.items[r][c] if self.pos[i] == (r, c) else "."
            reward += {"A": 1.0, "L": -1.0, ".": 0.0}[item] * (10.0 if i == 0 else 1.0)
            self.items[self.pos[i][0]][self.pos[i][1]] = "."
        return reward, not any("A" in row for row in self.items)

    def obs(self):
        rows = []
        for r0, c0 in self.pos:
            o = [r0 / 3, c0 / 7]
            for r, c in itertools.product((r0 - 1, r0, r0 + 1), (c0 - 1, c0, c0 + 1)):
                cell = [0.0] * 5
                if not (0 <= r < 3 and 0 <= c < 8):
                    cell[4] = 1.0
                elif (r, c) in self.pos:
                    cell[2 + self.pos.index((r, c))] = 1.0
                elif self.items[r][c] != ".":
                    cell["LA".index(self.items[r][c])] = 1.0
                o += cell
            rows.append(o)
        return np.asarray(rows, np.float32)


def test_spec():
    s = ENV.spec
    assert (s.name, s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (
        "checkers", 2, 47, 100, 5, 100)
    assert s.optimal_return == 87.0 and s.reward_bounds == (-11.0, 11.0) and not s.has_won
    costly = Checkers(step_cost=-0.01).spec
    assert costly.optimal_return is None and costly.reward_bounds == pytest.approx((-11.02, 10.98))


def test_initial_observation_by_hand():
    _, ts = RESET(KEY)
    wall, lemon, apple, me1, me2, empty = ([0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0],
                                           [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0])
    # Agent 1 at (0, 6): the row above is off the grid, (0, 5) lemon, (1, 5) apple.
    agent1 = [0.0, 6 / 7] + wall + wall + wall + lemon + me1 + empty + apple + empty + empty
    # Agent 2 at (2, 6): (1, 5) apple, (2, 5) lemon, the row below is off the grid.
    agent2 = [2 / 3, 6 / 7] + apple + empty + empty + lemon + me2 + empty + wall + wall + wall
    np.testing.assert_allclose(ts.obs, np.asarray([agent1, agent2], np.float32), rtol=1e-6)
    grid = np.asarray(ts.state[:96]).reshape(3, 8, 4)
    assert grid[..., 0].sum() == 9 and grid[..., 1].sum() == 9
    assert grid[0, 6, 2] == 1 and grid[2, 6, 3] == 1 and grid[..., 2:].sum() == 2
    np.testing.assert_allclose(ts.state[96:], [0, 6 / 7, 2 / 3, 6 / 7], rtol=1e-6)
    assert int(ts.info["apples_left"]) == 9 and int(ts.info["lemons_left"]) == 9


def test_agent1_walks_along_row_0_into_the_wall():
    steps = play("LLLLLLL", "NNNNNNN")
    assert [float(t.reward) for _, t in steps] == [-10, 10, -10, 10, -10, 10, 0]
    state, last = steps[-1]
    np.testing.assert_array_equal(state.positions, [[0, 0], [2, 6]])
    assert float(last.info["episode_return"]) == 0.0
    assert int(last.info["apples_left"]) == 6 and int(last.info["lemons_left"]) == 6
    # Walking back over the emptied row gives nothing.
    steps = play("LLLLLLRRRRRR", "NNNNNNNNNNNN")
    assert [float(t.reward) for _, t in steps[6:]] == [0.0] * 6


def test_agent2_eats_lemons_and_apples_at_one_tenth():
    steps = play("NNNNNN", "LLLLLL")
    assert [float(t.reward) for _, t in steps] == [-1, 1, -1, 1, -1, 1]
    steps = play("LL", "LL")  # both at once: lemon + lemon, then apple + apple
    assert [float(t.reward) for _, t in steps] == [-11, 11]


def test_walls_block_moves_off_the_grid():
    steps = play("URRR", "DRRR")  # up from row 0, down from row 2, then right past column 7
    positions = [s.positions.tolist() for s, _ in steps]
    assert positions == [[[0, 6], [2, 6]], [[0, 7], [2, 7]], [[0, 7], [2, 7]], [[0, 7], [2, 7]]]
    assert all(float(t.reward) == 0.0 for _, t in steps)


def test_agents_block_each_other_agent1_first():
    # Both aim at (1, 6): agent 1 moves first and takes it, agent 2 stays.
    steps = play("D", "U")
    np.testing.assert_array_equal(steps[-1][0].positions, [[1, 6], [2, 6]])
    # A swap fails for both: each target is still occupied when its agent moves.
    steps = play("DD", "UU")
    np.testing.assert_array_equal(steps[-1][0].positions, [[1, 6], [2, 6]])
    # Agent 2 may follow into the cell agent 1 leaves in the same step.
    steps = play("DR", "UU")
    np.testing.assert_array_equal(steps[-1][0].positions, [[1, 7], [1, 6]])
    # But agent 1 may not step into the cell agent 2 is leaving.
    steps = play("DRL", "UUU")
    np.testing.assert_array_equal(steps[-1][0].positions, [[1, 7], [0, 6]])
    steps = play("DRLL", "UUUN")
    np.testing.assert_array_equal(steps[-1][0].positions, [[1, 6], [0, 6]])


# Agent 2 eats the three lemons of row 1 one at a time, backing out each time so agent 1 can pass.
PLAN_AGENT1 = "DLRUNNNNNDLLUDDULRUNNNNNDLLUDDULRUNNNNNDLLUDD"
PLAN_AGENT2 = "NNNULLRRDNNULNNNNNLLLRRDNULNNNNNNLLLRRDNNNNNN"


def test_optimal_plan_returns_87_and_ends_on_the_last_apple():
    steps = play(PLAN_AGENT1, PLAN_AGENT2)
    rewards = [float(t.reward) for _, t in steps]
    expected = [0.0] * 45
    for t in (2, 13, 15, 17, 28, 30, 32, 43, 45):
        expected[t - 1] = 10.0  # agent 1's apples
    for t in (6, 21, 36):
        expected[t - 1] = -1.0  # agent 2's lemons (1, 4), (1, 2), (1, 0)
    assert rewards == expected
    assert [bool(t.terminated) for _, t in steps] == [False] * 44 + [True]
    state, last = steps[-1]
    assert float(last.info["episode_return"]) == 87.0 == ENV.spec.optimal_return
    assert int(last.info["apples_left"]) == 0 and int(last.info["lemons_left"]) == 6
    assert not state.lemons[1].any() and state.lemons[0].sum() == 3 and state.lemons[2].sum() == 3


def test_three_lemons_are_the_fewest_that_open_every_apple():
    """Brute force over lemon subsets: the bound behind optimal_return = 90 - 3."""
    apples = {(r, c) for r in range(3) for c in range(8) if LAYOUT[r][c] == "A"}
    lemons = sorted((r, c) for r in range(3) for c in range(8) if LAYOUT[r][c] == "L")
    empty = {(r, c) for r in range(3) for c in range(8) if LAYOUT[r][c] == "."}

    def opens_all(removed):
        free = apples | empty | set(removed)
        seen, todo = {(0, 6)}, deque([(0, 6)])
        while todo:
            r, c = todo.popleft()
            for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if nxt in free and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return apples <= seen

    assert len(apples) == 9 and len(lemons) == 9
    assert not any(opens_all(s) for k in range(3) for s in itertools.combinations(lemons, k))
    working = [s for s in itertools.combinations(lemons, 3) if opens_all(s)]
    assert working == [((1, 0), (1, 2), (1, 4))]


def test_truncated_at_100_with_step_cost():
    steps = play("N" * 100, "N" * 100)
    assert not any(bool(t.terminated) or bool(t.truncated) for _, t in steps[:-1])
    last = steps[-1][1]
    assert bool(last.truncated) and not bool(last.terminated) and int(last.info["episode_length"]) == 100
    assert float(last.info["episode_return"]) == 0.0
    costly = Checkers(step_cost=-0.01)
    steps = play("LN", "NN", jax.jit(costly.step), jax.jit(costly.reset))
    assert [float(t.reward) for _, t in steps] == pytest.approx([-10.02, -0.02])


def test_out_of_range_actions_are_noop_under_jit():
    state, _ = RESET(KEY)
    with pytest.raises(ValueError, match="actions must lie in"):
        ENV.step(KEY, state, np.asarray([5, 0], np.int32))
    state, ts = STEP(KEY, state, np.asarray([9, -1], np.int32))
    np.testing.assert_array_equal(state.env_state.positions, [[0, 6], [2, 6]])
    assert float(ts.reward) == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [({"step_cost": 0.01}, "must be <= 0"), ({"step_cost": float("nan")}, "finite"),
     ({"step_cost": "x"}, "step_cost"), ({"episode_limit": 0}, "episode_limit")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        envs.make("checkers", **kwargs)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=100, max_size=100))
def test_random_play_follows_reference_rules(joint_actions):
    ref = Reference()
    state, ts = RESET(KEY)
    fruit = np.asarray(state.env_state.apples) | np.asarray(state.env_state.lemons)
    total = 0.0
    for t, actions in enumerate(joint_actions, start=1):
        state, ts = STEP(KEY, state, np.asarray(actions, np.int32))
        ts, inner = jax.device_get((ts, state.env_state))
        reward, done = ref.step(actions)
        total += float(ts.reward)
        assert inner.positions.tolist() == [list(p) for p in ref.pos]
        assert (inner.positions >= 0).all() and (inner.positions < [3, 8]).all()
        now = inner.apples | inner.lemons
        assert not (now & ~fruit).any()  # eaten fruit never comes back
        fruit = now
        assert float(ts.reward) == reward and bool(ts.terminated) == done
        np.testing.assert_allclose(ts.obs, ref.obs(), rtol=1e-6)
        assert float(ts.info["episode_return"]) == pytest.approx(total, abs=1e-4)
        if bool(ts.terminated) or bool(ts.truncated):
            assert bool(ts.truncated) == (t == 100 and not done)
            break
    assert t <= ENV.spec.episode_limit and (bool(ts.terminated) or bool(ts.truncated))
