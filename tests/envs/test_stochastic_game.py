"""DPO's stochastic game: the documented game definition rebuilt in NumPy, the exact optimum checked
against NumPy backward induction, and the optimal policy's return measured through ``step``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.stochastic_game import StochasticGame

SMALL = dict(num_states=4, num_agents=2, num_actions=3, num_successors=2, episode_limit=6)


# ---- the game as the module docstring defines it, in NumPy -------------------------------------------
def _mix(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _absorb(x, v):
    return _mix(x ^ (np.asarray(v, np.uint32) * np.uint32(0x9E3779B9) + np.uint32(0x632BE5AB)))


def numpy_game(seed, num_states, num_agents, num_actions, num_successors, **_):
    """reward [S, J], successors [S, J, K], probabilities [S, J, K] from the documented hash."""
    s = np.arange(num_states, dtype=np.uint32)[:, None, None]
    j = np.arange(num_actions**num_agents, dtype=np.uint32)[None, :, None]
    fields = np.arange(1 + 2 * num_successors, dtype=np.uint32)
    with np.errstate(over="ignore"):
        h = _absorb(_absorb(_absorb(_absorb(np.zeros((), np.uint32), seed % 2**32), s), j), fields)
    reward = (h[..., 0] >> 8).astype(np.float64) / 2**24
    successors = (h[..., 1 : 1 + num_successors] % num_states).astype(np.int64)
    weights = (h[..., 1 + num_successors :] % 8).astype(np.float64) + 1
    return reward, successors, weights / weights.sum(-1, keepdims=True)


def loop_backward_induction(reward, successors, probs, horizon, discount):
    """Plain-loop finite-horizon DP: V[t, s] = max_j r + discount * sum_k p_k V[t+1, succ_k]."""
    num_states, num_joint, num_succ = successors.shape
    values = np.zeros((horizon + 1, num_states))
    for t in range(horizon - 1, -1, -1):
        for s in range(num_states):
            best = -np.inf
            for j in range(num_joint):
                future = sum(probs[s, j, k] * values[t + 1, successors[s, j, k]] for k in range(num_succ))
                best = max(best, reward[s, j] + discount * future)
            values[t, s] = best
    return values


def vector_backward_induction(reward, successors, probs, horizon, discount):
    values = np.zeros((horizon + 1, reward.shape[0]))
    q_all = []
    for t in range(horizon - 1, -1, -1):
        q = reward + discount * (probs * values[t + 1][successors]).sum(-1)
        values[t] = q.max(-1)
        q_all.append(q)
    return values, q_all[::-1]


# ---- Monte Carlo through env.step ------------------------------------------------------------------
def make_mc(env, num_episodes):
    """jit(vmap) episodes that play ``actions[t, s]`` (table [T, S, N]); returns plain episode returns."""
    horizon, num_states = env.spec.episode_limit, env.optimal_values.shape[1]

    def episode(key, actions):
        state, ts = env.reset(key)

        def body(carry, k):
            state, ts, alive, ret = carry
            s = jnp.argmax(ts.state[:num_states])
            t = jnp.minimum(state.episode_length, horizon - 1)
            state, ts = env.step(k, state, actions[t, s])
            ret = ret + jnp.where(alive, ts.reward, 0.0)
            return (state, ts, alive & ~ts.done, ret), ts.terminated & alive

        init = (state, ts, jnp.array(True), jnp.zeros((), jnp.float32))
        (_, _, _, ret), early = jax.lax.scan(body, init, jax.random.split(key, horizon))
        return ret, early.any()

    run = jax.jit(jax.vmap(episode, in_axes=(0, None)))
    return lambda key, actions: run(jax.random.split(key, num_episodes), jnp.asarray(actions))


@pytest.fixture(scope="module")
def default_game():
    return envs.make("stochastic_game")


def test_default_spec(default_game):
    s = default_game.spec
    assert (s.name, s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (
        "stochastic_game", 6, 100, 100, 5, 25)
    assert s.reward_bounds == (0.0, 1.0) and not s.has_won
    assert default_game.optimal_values.shape == (26, 100) and default_game.optimal_policy.shape == (25, 100)
    assert default_game.optimal_actions.shape == (25, 100, 6)


def test_tables_follow_the_documented_definition(default_game):
    default = dict(seed=0, num_states=100, num_agents=6, num_actions=5, num_successors=3)
    for env, cfg in ((default_game, default), (StochasticGame(seed=7, **SMALL), dict(seed=7, **SMALL))):
        reward, successors, probs = env.tables()
        want_r, want_s, want_p = numpy_game(**cfg)
        np.testing.assert_array_equal(reward, want_r.astype(np.float32))
        np.testing.assert_array_equal(successors, want_s)
        np.testing.assert_allclose(probs, want_p, rtol=1e-6)


@pytest.mark.parametrize("discount", [1.0, 0.8])
def test_small_optimum_matches_loop_dp(discount):
    env = StochasticGame(seed=3, discount=discount, **SMALL)
    game = numpy_game(seed=3, **SMALL)
    values = loop_backward_induction(*game, horizon=6, discount=discount)
    np.testing.assert_allclose(env.optimal_values, values, rtol=1e-5, atol=1e-5)
    assert env.spec.optimal_return == pytest.approx(values[0].mean(), rel=1e-5)
    # the greedy joint actions attain the optimum, and the per-agent table decodes them (agent 0 first)
    _, q = vector_backward_induction(*game, horizon=6, discount=discount)
    for t in range(6):
        chosen = q[t][np.arange(4), env.optimal_policy[t]]
        np.testing.assert_allclose(chosen, values[t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(env.q_values(t)), q[t], rtol=1e-5, atol=1e-5)
    a = env.optimal_actions
    np.testing.assert_array_equal(a[..., 0] * 3 + a[..., 1], env.optimal_policy)


def test_default_optimum_matches_vectorised_dp(default_game):
    game = numpy_game(seed=0, num_states=100, num_agents=6, num_actions=5, num_successors=3)
    values, q = vector_backward_induction(*game, horizon=25, discount=1.0)
    np.testing.assert_allclose(default_game.optimal_values, values, rtol=1e-6, atol=1e-5)
    assert default_game.spec.optimal_return == pytest.approx(values[0].mean(), abs=1e-4)
    for t in (0, 12, 24):
        chosen = q[t][np.arange(100), default_game.optimal_policy[t]]
        np.testing.assert_allclose(chosen, values[t], atol=1e-5)


def test_optimal_policy_return_through_step(default_game):
    mc = make_mc(default_game, 1024)
    returns, early = mc(jax.random.PRNGKey(0), default_game.optimal_actions)
    returns = np.asarray(returns, np.float64)
    assert not np.asarray(early).any()
    se = returns.std() / np.sqrt(returns.size)
    assert abs(returns.mean() - default_game.spec.optimal_return) < 4 * se + 1e-4
    # a fixed joint action (everyone plays 0) is far from the optimum: about 0.5 per step
    worse, _ = mc(jax.random.PRNGKey(1), np.zeros_like(default_game.optimal_actions))
    assert float(np.mean(worse)) < default_game.spec.optimal_return - 5


def test_small_discounted_return_through_step():
    # discount 0.8 is a continuation probability: episodes end early and the plain sum matches the DP value
    env = StochasticGame(seed=3, discount=0.8, **SMALL)
    mc = make_mc(env, 20000)
    returns, early = mc(jax.random.PRNGKey(2), env.optimal_actions)
    returns = np.asarray(returns, np.float64)
    # each of the 6 steps ends the episode with probability 0.2 (termination beats truncation at the limit)
    assert float(np.mean(early)) == pytest.approx(1 - 0.8**6, abs=0.015)
    se = returns.std() / np.sqrt(returns.size)
    assert abs(returns.mean() - env.spec.optimal_return) < 4 * se


def test_step_matches_tables(default_game):
    reward, successors, probs = default_game.tables()

    @jax.jit
    @jax.vmap
    def one_step(key):
        state, ts = default_game.reset(key)
        actions = (jax.random.bits(key, (6,), jnp.uint32) % 5).astype(jnp.int32)
        _, out = default_game.step(jax.random.fold_in(key, 1), state, actions)
        return ts.obs, actions, out

    obs, actions, out = one_step(jax.random.split(jax.random.PRNGKey(5), 256))
    s0 = np.asarray(obs)[:, 0].argmax(-1)
    joint = np.ravel_multi_index(np.asarray(actions).T, (5,) * 6)
    np.testing.assert_array_equal(np.asarray(out.reward), reward[s0, joint])
    s1 = np.asarray(out.state).argmax(-1)
    assert all(s1[i] in successors[s0[i], joint[i]] for i in range(256))
    assert not np.asarray(out.terminated).any() and np.asarray(out.obs).shape == (256, 6, 100)


def test_transition_frequencies():
    env = StochasticGame(seed=11, **SMALL)
    _, successors, probs = env.tables()
    state, _ = env.reset(jax.random.PRNGKey(0))
    state = state.replace(env_state=state.env_state.replace(state=jnp.int32(2)))
    actions = jnp.array([1, 2])  # joint index 1 * 3 + 2 = 5
    step = jax.jit(jax.vmap(env.step, in_axes=(0, None, None)))
    _, ts = step(jax.random.split(jax.random.PRNGKey(1), 20000), state, actions)
    freq = np.bincount(np.asarray(ts.state).argmax(-1), minlength=4) / 20000
    want = np.zeros(4)
    np.add.at(want, successors[2, 5], probs[2, 5])
    np.testing.assert_allclose(freq, want, atol=0.015)


def test_seeds_and_options():
    a, b, c = (StochasticGame(seed=s, **SMALL) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.tables()[0], b.tables()[0])
    assert a.spec.optimal_return == b.spec.optimal_return
    assert not np.array_equal(a.tables()[0], c.tables()[0])
    assert a.spec.optimal_return != c.spec.optimal_return
    timed = StochasticGame(seed=5, observe_time=True, **SMALL)
    assert timed.spec.obs_dim == timed.spec.state_dim == 5
    state, ts = timed.reset(jax.random.PRNGKey(0))
    _, ts = timed.step(jax.random.PRNGKey(0), state, jnp.array([0, 0]))
    assert float(ts.obs[0, -1]) == pytest.approx(1 / 6) and float(ts.state[:4].sum()) == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_states=0), "num_states"),
        (dict(num_agents=2.5), "num_agents"),
        (dict(num_actions=True), "num_actions"),
        (dict(episode_limit=0), "episode_limit"),
        (dict(discount=1.5), "discount"),
        (dict(seed="x"), "seed"),
        (dict(num_agents=12), "too large"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StochasticGame(**kwargs)
