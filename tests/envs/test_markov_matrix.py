"""The Markov game of TAD's matrices (envs.markov_matrix): shapes, a scripted episode's reward summed by hand
from Table 3, uniform and action-dependent transitions against their tables, and the optimum (by hand, the
backward induction against a search over every policy of a small game, and by playing its policy)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.markov_matrix import MarkovMatrixGame, optimal_values


def test_spec_reset_and_step_shapes():
    env = MarkovMatrixGame()
    s = env.spec
    assert (s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (2, 10, 10, 5, 10)
    assert s.reward_bounds == (-20.0, 10.0) and not s.has_won
    state, ts = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert ts.obs.shape == (2, 10) and ts.state.shape == (10,) and ts.avail_actions.shape == (2, 5)
    assert ts.avail_actions.all() and ts.active.all()
    m = int(ts.info["matrix"])
    np.testing.assert_array_equal(ts.state, np.eye(10)[m])
    np.testing.assert_array_equal(ts.obs, np.eye(10)[[m, m]])
    state, ts = jax.jit(env.step)(jax.random.PRNGKey(1), state, jnp.asarray([0, 0]))
    assert ts.reward.shape == () and not bool(ts.terminated) and not bool(ts.truncated)
    assert int(ts.info["episode_length"]) == 1
    timed = MarkovMatrixGame(observe_time=True)
    assert timed.spec.obs_dim == timed.spec.state_dim == 11
    state, ts = timed.reset(jax.random.PRNGKey(0))
    for t in range(1, 4):
        state, ts = timed.step(jax.random.PRNGKey(t), state, jnp.asarray([1, 2]))
        assert float(ts.state[-1]) == pytest.approx(t / 10) and float(ts.obs[1, -1]) == pytest.approx(t / 10)
    with pytest.raises(ValueError, match="transitions must be"):
        MarkovMatrixGame(transitions="markov")
    with pytest.raises(ValueError, match="episode_length must be"):
        MarkovMatrixGame(episode_length=0)


def test_scripted_episode_reward_by_hand():
    """Agent 1 always plays action 0 and agent 2 action 4 (printed column 1, row 5). From Table 3 that cell
    (row 5, column 1) pays -10, 10, 10, 10, 10, 3.8, -11.3, -11.8, 2.2, 1.8 in matrices 1..10."""
    cell = [-10, 10, 10, 10, 10, 3.8, -11.3, -11.8, 2.2, 1.8]
    env = MarkovMatrixGame()
    state, ts = env.reset(jax.random.PRNGKey(7))
    played, total = [], 0.0
    step = jax.jit(env.step)
    for t in range(10):
        state, ts = step(jax.random.PRNGKey(100 + t), state, jnp.asarray([0, 4]))
        played.append(int(ts.info["matrix"]))
        total += cell[played[-1]]
        assert float(ts.reward) == pytest.approx(cell[played[-1]], abs=1e-5)
        assert bool(ts.terminated) == (t == 9) and not bool(ts.truncated)
    assert float(ts.info["episode_return"]) == pytest.approx(total, abs=1e-4)
    assert int(ts.info["episode_length"]) == 10
    assert len(set(played)) > 3  # the tables change within the episode


def next_states(env, matrix, joint, samples):
    """Many one-step transitions from ``matrix`` under a fixed joint action: the next tables drawn."""
    a = env.spec.num_actions
    actions = jnp.asarray([joint // a, joint % a])

    def one(key):
        state, _ = env.reset(jax.random.PRNGKey(0))
        state = state.replace(env_state=state.env_state.replace(matrix=jnp.int32(matrix)))
        state, ts = env.step(key, state, actions)
        return state.env_state.matrix, ts.info["matrix"], ts.reward

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(matrix * 100 + joint), samples))


@pytest.mark.parametrize("transitions", ["uniform", "random"])
def test_transitions_follow_their_table(transitions):
    env = MarkovMatrixGame(transitions=transitions, seed=3)
    payoff = np.asarray(env.payoff)
    samples = 4000
    for matrix, joint in ((0, 0), (4, 7), (9, 24)):
        nxt, played, reward = map(np.asarray, next_states(env, matrix, joint, samples))
        assert (played == matrix).all()
        np.testing.assert_allclose(reward, payoff[matrix, joint // 5, joint % 5])
        freq = np.bincount(nxt, minlength=10) / samples
        expected = np.full(10, 0.1) if transitions == "uniform" else env.probs[matrix, joint]
        np.testing.assert_allclose(env.probs[matrix, joint], expected)
        assert np.abs(freq - expected).max() < 4 * np.sqrt(0.25 / samples) + 1e-3, (freq, expected)
    if transitions == "random":  # the distribution depends on the joint action
        assert np.abs(env.probs[0, 0] - env.probs[0, 1]).max() > 0.05
        np.testing.assert_array_equal(env.probs, MarkovMatrixGame(transitions="random", seed=3).probs)


def test_optimal_return():
    """Every one of TAD's tables has the maximum 10, so whatever the transitions the optimum is 10 per step."""
    assert MarkovMatrixGame().spec.optimal_return == 100.0
    assert MarkovMatrixGame(episode_length=3).spec.optimal_return == 30.0
    assert MarkovMatrixGame(transitions="random", seed=5, episode_length=7).spec.optimal_return == pytest.approx(70.0)


def test_backward_induction_against_every_policy():
    """optimal_values on a random game (3 states, 4 joint actions, horizon 2): mean_s V_0(s) is the best mean
    return over all 4^6 deterministic step-dependent policies, each evaluated exactly."""
    rng = np.random.default_rng(0)
    reward, probs = rng.normal(size=(3, 4)), rng.dirichlet(np.ones(3), size=(3, 4))
    best = -np.inf
    for flat in itertools.product(range(4), repeat=6):
        pi = np.asarray(flat).reshape(2, 3)  # pi[t, s]
        total = 0.0
        for s0 in range(3):
            j0 = pi[0, s0]
            total += reward[s0, j0] + sum(probs[s0, j0, s1] * reward[s1, pi[1, s1]] for s1 in range(3))
        best = max(best, total / 3)
    values = optimal_values(reward, probs, 2)
    assert values[0].mean() == pytest.approx(best, rel=1e-12)
    np.testing.assert_allclose(values[1], reward.max(1))
    np.testing.assert_array_equal(values[2], 0.0)


@pytest.mark.parametrize("transitions", ["uniform", "random"])
def test_playing_the_optimal_policy_earns_the_optimum(transitions):
    """The backward-induction policy (a function of the table and the step) played in the env earns
    spec.optimal_return, 100, in every episode."""
    env = MarkovMatrixGame(transitions=transitions, seed=2)
    reward = np.asarray(env.payoff, np.float64).reshape(10, 25)
    values = optimal_values(reward, env.probs, 10)
    policy = jnp.asarray(np.stack([(reward + env.probs @ values[t + 1]).argmax(1) for t in range(10)]))
    a = env.spec.num_actions

    def episode(key):
        state, ts = env.reset(key)

        def body(carry, k):
            state, ts = carry
            j = policy[state.env_state.time, state.env_state.matrix]
            state, ts = env.step(k, state, jnp.asarray([j // a, j % a]))
            return (state, ts), None

        (_, ts), _ = jax.lax.scan(body, (state, ts), jax.random.split(key, 10))
        return ts.info["episode_return"]

    returns = np.asarray(jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(0), 200)))
    assert env.spec.optimal_return == pytest.approx(100.0)
    np.testing.assert_allclose(returns, 100.0, rtol=0, atol=1e-4)


def test_clips_out_of_range_actions_under_jit():
    env = MarkovMatrixGame()
    state, _ = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step_env)
    _, clipped = step(jax.random.PRNGKey(1), state.env_state, jnp.asarray([7, -3]))
    _, edge = step(jax.random.PRNGKey(1), state.env_state, jnp.asarray([4, 0]))
    assert float(clipped.reward) == float(edge.reward)


def test_works_with_the_standard_wrappers():
    env = envs.wrap(MarkovMatrixGame(episode_length=3), agent_id=True, last_action=True)
    state, ts = env.reset(jax.random.PRNGKey(0))
    assert ts.obs.shape == (2, 10 + 5 + 2)
    for t in itertools.count():
        state, ts = env.step(jax.random.PRNGKey(t), state, jnp.asarray([0, 0]))
        if bool(ts.done):
            break
    assert t == 2 and bool(ts.terminated) and int(ts.info["episode_length"]) == 3


def check_markov_matrix(env, t):
    """The game's invariants on a trajectory in the env fuzz test's format (one env, [steps, ...]; ``before`` /
    ``after`` hold the raw state's ``matrix`` and ``time`` around each step): the reward is the table entry of
    the clipped actions, time advances by one and the game terminates at the episode length, the next table
    is one the transition table allows and is what the final state and observations show."""
    a, k = env.spec.num_actions, env.num_states
    before, after = t["before"], t["after"]
    actions = np.clip(t["actions"], 0, a - 1)
    np.testing.assert_array_equal(t["reward"], np.asarray(env.payoff)[(before["matrix"], *actions.T)])
    np.testing.assert_array_equal(after["time"], before["time"] + 1)
    np.testing.assert_array_equal(t["terminated"], after["time"] == env.spec.episode_limit)
    joint = (actions * a ** np.arange(env.spec.num_agents - 1, -1, -1)).sum(-1)
    assert (env.probs[before["matrix"], joint, after["matrix"]] > 0).all(), "moved to an impossible table"
    np.testing.assert_array_equal(t["final_state"][:, :k], np.eye(k)[after["matrix"]])
    assert (t["final_obs"] == t["final_state"][:, None, :]).all(), "every agent observes the state"


@pytest.mark.parametrize("transitions", ["uniform", "random"])
def test_invariants_on_a_random_rollout(transitions):
    """check_markov_matrix on 25 auto-reset steps of random actions, out-of-range ones included; a wrong
    reward fails it."""
    env = MarkovMatrixGame(transitions=transitions, episode_length=4)
    auto = envs.wrap(env)
    rng = np.random.default_rng(0)
    actions = jnp.asarray(rng.integers(-2, 8, (25, 2)), jnp.int32)

    def body(carry, xs):
        state, _ = carry
        key, act = xs
        raw_state, _ = env.step(jax.random.split(key)[0], state, act)
        nxt, ts = auto.step(key, state, act)
        record = {"actions": act, "reward": ts.reward, "terminated": ts.terminated,
                  "final_state": ts.info["final_state"], "final_obs": ts.info["final_obs"],
                  "before": {"matrix": state.env_state.matrix, "time": state.env_state.time},
                  "after": {"matrix": raw_state.env_state.matrix, "time": raw_state.env_state.time}}
        return (nxt, ts), record

    init = auto.reset(jax.random.PRNGKey(1))
    _, t = jax.jit(lambda xs: jax.lax.scan(body, init, xs))((jax.random.split(jax.random.PRNGKey(2), 25), actions))
    t = jax.tree.map(np.asarray, t)
    assert t["terminated"].sum() == 6
    check_markov_matrix(env, t)
    t["reward"] = t["reward"] + 0.5
    with pytest.raises(AssertionError):
        check_markov_matrix(env, t)
