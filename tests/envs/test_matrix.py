"""Matrix games: the named tables against the papers' printed numbers, scores worked by hand, the
indexing convention under jit, and payoff validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.matrix import MatrixGame, named_matrix_game

# TAD-PPO App. D.1 Table 3, read off the printed tables: (matrix 1..10, printed row, printed column, value).
# Printed rows are agent 2's action A^(row), columns agent 1's action A^(col), so the env cell is
# payoff[matrix - 1, col - 1, row - 1] (axis 1 = agent 1 = actions[0], axis 2 = agent 2 = actions[1]).
TAD_CELLS = [
    (1, 1, 1, 10), (1, 2, 2, 9), (1, 1, 2, -10), (1, 3, 4, 0),
    (2, 1, 3, 10), (2, 2, 1, -10), (2, 4, 2, 10),
    (3, 1, 5, 10), (3, 5, 1, 10), (3, 2, 5, 9), (3, 1, 4, -20),
    (4, 3, 5, 8), (4, 5, 3, 8), (4, 5, 5, 6), (4, 4, 5, 7),
    (5, 1, 5, 6), (5, 5, 1, 10), (5, 1, 2, -15), (5, 2, 1, -20), (5, 4, 2, 9), (5, 2, 4, 7),
    (6, 5, 2, 10), (6, 2, 5, -3.0), (6, 2, 4, 9.6), (6, 4, 2, -2.0), (6, 3, 1, -20.0),
    (7, 1, 5, 10), (7, 5, 1, -11.3), (7, 2, 2, 5.8), (7, 4, 1, 0.8),
    (8, 3, 3, 10), (8, 4, 1, 9.8), (8, 1, 4, -5.5), (8, 2, 2, -20.0),
    (9, 5, 3, 10), (9, 3, 5, -6.8), (9, 4, 1, 9.0), (9, 2, 3, 8.8),
    (10, 5, 4, 10), (10, 4, 5, -13.0), (10, 5, 5, 8.2), (10, 1, 3, -20.0),
]

# Each matrix's bold optimum as (agent 1 action, agent 2 action) = (printed column - 1, printed row - 1).
TAD_OPTIMA = [(0, 0), (0, 0), (4, 0), (4, 0), (0, 4), (1, 4), (4, 0), (2, 2), (2, 4), (3, 4)]


@pytest.fixture(scope="module")
def tad():
    return envs.make("matrix_tad10")


def test_tad_cells_match_the_printed_table(tad):
    payoff = np.asarray(tad.payoff)
    assert payoff.shape == (10, 5, 5)
    for matrix, row, col, value in TAD_CELLS:
        assert payoff[matrix - 1, col - 1, row - 1] == pytest.approx(value, abs=1e-6), (matrix, row, col)


def test_tad_optimum_and_spec(tad):
    payoff = np.asarray(tad.payoff)
    np.testing.assert_array_equal(payoff.reshape(10, -1).max(axis=1), np.full(10, 10.0))
    for k, (a1, a2) in enumerate(TAD_OPTIMA):
        assert payoff[k, a1, a2] == 10
    assert tad.optimal_score == 100.0 and tad.num_tasks == 10
    s = tad.spec
    assert (s.name, s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (
        "matrix_tad10", 2, 10, 10, 5, 1)
    assert s.optimal_return == 10.0 and s.reward_bounds == (-20.0, 10.0) and not s.has_won


def test_tad_scores_worked_by_hand(tad):
    assert float(tad.score(np.array(TAD_OPTIMA))) == pytest.approx(100.0)
    # Same pairs with the agents' roles swapped, read off the printed tables:
    # 10 + 10 + 10 + 10 + 6 - 3.0 - 11.3 + 10 - 6.8 - 13.0 = 21.9
    swapped = np.array(TAD_OPTIMA)[:, ::-1]
    assert float(tad.score(swapped)) == pytest.approx(21.9, abs=1e-4)
    # Everyone plays A^(1): the top-left cells, 10 + 10 - 20 - 20 - 20 + 0.8 - 14.4 - 1.4 - 4.5 - 8.4
    assert float(tad.score(np.zeros((10, 2), np.int32))) == pytest.approx(-67.9, abs=1e-4)
    assert float(jax.jit(tad.score)(jnp.asarray(TAD_OPTIMA))) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="shape"):
        tad.score(np.zeros((9, 2), np.int32))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        tad.score(np.full((10, 2), 5))


def test_step_reward_is_the_table_entry_under_jit(tad):
    payoff = np.asarray(tad.payoff)

    @jax.jit
    @jax.vmap
    def play(key):
        k_reset, k_act, k_step = jax.random.split(key, 3)
        state, first = tad.reset(k_reset)
        actions = jax.random.randint(k_act, (2,), 0, 5)
        _, ts = tad.step(k_step, state, actions)
        return first, ts, actions

    first, ts, actions = play(jax.random.split(jax.random.PRNGKey(0), 512))
    task, actions = np.asarray(first.info["task"]), np.asarray(actions)
    assert set(task.tolist()) == set(range(10))
    np.testing.assert_array_equal(np.asarray(ts.reward), payoff[task, actions[:, 0], actions[:, 1]])
    np.testing.assert_array_equal(np.asarray(first.obs), np.repeat(np.eye(10)[task][:, None], 2, axis=1))
    np.testing.assert_array_equal(np.asarray(first.state), np.eye(10)[task])
    assert np.asarray(ts.terminated).all() and not np.asarray(ts.truncated).any()
    np.testing.assert_array_equal(np.asarray(ts.info["episode_return"]), np.asarray(ts.reward))
    np.testing.assert_array_equal(np.asarray(ts.info["task"]), task)


def test_reset_task_and_asymmetric_cells_through_step(tad):
    # Matrix 6 printed row 5, column 2 is 10: agent 1 plays A^(2) (index 1), agent 2 plays A^(5) (index 4).
    state, ts = tad.reset_task(jax.random.PRNGKey(1), 5)
    np.testing.assert_array_equal(np.asarray(ts.obs), np.tile(np.eye(10)[5], (2, 1)))
    _, out = tad.step(jax.random.PRNGKey(2), state, jnp.array([1, 4]))
    assert float(out.reward) == 10.0
    _, out = tad.step(jax.random.PRNGKey(2), state, jnp.array([4, 1]))  # printed row 2, column 5
    assert float(out.reward) == pytest.approx(-3.0)
    state, _ = jax.jit(tad.reset_task)(jax.random.PRNGKey(1), jnp.int32(4))  # matrix 5
    _, out = tad.step(jax.random.PRNGKey(2), state, jnp.array([4, 0]))  # printed row 1, column 5
    assert float(out.reward) == 6.0
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        tad.reset_task(jax.random.PRNGKey(1), 10)


@pytest.mark.parametrize(
    "name, cells, optimum, bounds",
    [
        # QTRAN (TAD-PPO Fig. 3a) and the penalty game (Table 1) are symmetric.
        ("matrix_qtran", {(0, 0): 8, (0, 1): -12, (1, 0): -12, (1, 1): 0, (2, 2): 0}, 8, (-12, 8)),
        ("matrix_penalty", {(0, 0): 10, (1, 1): 5, (2, 2): 1, (0, 2): -30, (2, 1): -30}, 10, (-30, 10)),
        # DPO Table 3: rows = agent 1 (p, 1-p), columns = agent 2 (q, 1-q), [[a, b], [c, d]].
        ("matrix_dpo1", {(0, 0): 5, (0, 1): 7, (1, 0): 6, (1, 1): 4}, 7, (4, 7)),
        ("matrix_dpo2", {(0, 0): 1, (0, 1): 3, (1, 0): 5, (1, 1): 4}, 5, (1, 5)),
        ("matrix_dpo3", {(0, 0): 7, (0, 1): 1, (1, 0): 1, (1, 1): 3}, 7, (1, 7)),
        ("matrix_dpo4", {(0, 0): 20, (0, 1): 0, (1, 0): 0, (1, 1): 10}, 20, (0, 20)),
    ],
)
def test_named_single_games(name, cells, optimum, bounds):
    env = envs.make(name)
    assert env.spec.name == name and env.num_tasks == 1 and env.spec.obs_dim == 1
    assert env.spec.optimal_return == optimum and env.optimal_score == optimum
    assert env.spec.reward_bounds == bounds
    state, ts = env.reset(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(ts.obs), np.ones((2, 1)))
    for (a1, a2), value in cells.items():
        _, out = env.step(jax.random.PRNGKey(0), state, jnp.array([a1, a2]))
        assert float(out.reward) == value, (name, a1, a2)


def test_generic_three_agent_game():
    # payoff[a1, a2, a3] = 4 a1 + 2 a2 + a3
    env = envs.make("matrix", payoff=np.arange(8).reshape(2, 2, 2))
    s = env.spec
    assert (s.num_agents, s.num_actions, s.obs_dim, s.state_dim) == (3, 2, 1, 1)
    assert s.optimal_return == 7 and s.reward_bounds == (0, 7)
    state, ts = env.reset(jax.random.PRNGKey(0))
    assert ts.obs.shape == (3, 1) and ts.avail_actions.shape == (3, 2)
    for actions, value in (((1, 0, 1), 5), ((0, 1, 1), 3), ((1, 1, 0), 6)):
        _, out = jax.jit(env.step)(jax.random.PRNGKey(0), state, jnp.array(actions))
        assert float(out.reward) == value


def test_tasks_axis_and_blind_agents():
    # Two 2x2 tasks (num_agents says the first axis holds tasks): task 0 pays 1 at (0, 0), task 1 at (1, 1).
    payoff = [[[1, 0], [0, 0]], [[0, 0], [0, 1]]]
    seen = MatrixGame(payoff, num_agents=2)
    assert seen.num_tasks == 2 and seen.spec.obs_dim == 2 and seen.spec.optimal_return == 1.0
    assert seen.optimal_score == 2.0
    # Without num_agents the same [2, 2, 2] array is one three-agent game.
    assert MatrixGame(payoff).spec.num_agents == 3
    # Blind agents must commit to one joint action: the best average is 0.5.
    blind = MatrixGame(payoff, num_agents=2, tasks_observed=False)
    assert blind.spec.obs_dim == 1 and blind.spec.state_dim == 2 and blind.spec.optimal_return == 0.5
    _, ts = blind.reset_task(jax.random.PRNGKey(0), 1)
    np.testing.assert_array_equal(np.asarray(ts.obs), np.ones((2, 1)))
    np.testing.assert_array_equal(np.asarray(ts.state), [0.0, 1.0])
    # Tasks with unequal sizes along the first axis are read as tasks without a hint.
    assert MatrixGame(np.zeros((3, 4, 4))).num_tasks == 3


@pytest.mark.parametrize(
    "payoff, kwargs, message",
    [
        ("abc", {}, "real numbers"),
        ([[1, 2], [3]], {}, "rectangular"),
        ([[True, False], [False, True]], {}, "real numbers"),
        ([[1 + 1j, 0], [0, 1]], {}, "real numbers"),
        ([1.0, 2.0, 3.0], {}, "at least 2 dims"),
        ([[1, 2, 3], [4, 5, 6]], {}, "same number of actions"),
        (np.zeros((2, 3, 2)), {}, "same number of actions"),
        ([[np.nan, 0], [0, 1]], {}, "finite"),
        ([], {}, "empty"),
        ([[1, 0], [0, 1]], {"num_agents": 1}, "num_agents"),
        ([[1, 0], [0, 1]], {"num_agents": 3}, "3 agents"),
    ],
)
def test_bad_payoffs_are_rejected(payoff, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatrixGame(payoff, **kwargs)


def test_make_and_unknown_named_game():
    env = envs.make("matrix", payoff=[[1, 0], [0, 1]])
    assert env.spec.optimal_return == 1 and env.spec.num_agents == 2
    with pytest.raises(ValueError, match="valid games"):
        named_matrix_game("tad11")
    with pytest.raises(ValueError, match="actions must lie"):
        env.step(jax.random.PRNGKey(0), env.reset(jax.random.PRNGKey(0))[0], jnp.array([0, 2]))
