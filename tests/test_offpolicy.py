"""The shared off-policy core: TD(lambda) against a forward-view Python reference, agent inputs against NumPy,
the epsilon schedule and epsilon-greedy, acting vs learning (the Q-network replayed over stored episodes
reproduces the greedy actions the collection took), gradient steps gated on a full enough buffer, exact
env-step and episode counts, hard target copies at multiples of the episode interval, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
from jmarl import replay
from jmarl.config import ConfigError
from jmarl.masks import masked_mean
from jmarl.offpolicy import (
    agent_inputs,
    copy_target,
    crossed_multiple,
    epsilon_greedy,
    greedy,
    linear_epsilon,
    previous_actions,
    td_lambda_targets,
)

# ----- TD(lambda) -------------------------------------------------------------------------------


def lambda_return_forward(reward, terminated, next_values, length, gamma, lam):
    """Forward view over one episode of ``length`` steps: G_t = sum_n (1-lam) lam^(n-1) G_t^(n) with the
    last n-step return (to the episode's end) taking the remaining weight lam^(L-t-1). G_t^(n) sums n
    discounted rewards and bootstraps from next_values[t+n-1] unless that step terminated."""
    out = np.zeros(length)
    for t in range(length):
        total = 0.0
        for n in range(1, length - t + 1):
            ret, discount = 0.0, 1.0
            for k in range(n):
                ret += discount * reward[t + k]
                discount *= gamma
            end = t + n - 1
            ret += 0.0 if terminated[end] else discount * next_values[end]
            weight = (1 - lam) * lam ** (n - 1) if n < length - t else lam ** (n - 1)
            total += weight * ret
        out[t] = total
    return out


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.6), (0.9, 0.0), (0.8, 1.0)])
def test_td_lambda_matches_the_forward_view_with_padding_and_both_ends(gamma, lam):
    rng = np.random.default_rng(0)
    batch, limit = 5, 7
    lengths = np.array([7, 3, 7, 1, 5])
    terminal = np.array([True, True, False, False, True])  # episodes 2 and 3 are truncated (2 at the limit)
    reward = rng.normal(size=(batch, limit))
    next_values = rng.normal(size=(batch, limit))
    mask = np.arange(limit)[None] < lengths[:, None]
    terminated = np.zeros((batch, limit), bool)
    terminated[np.arange(batch), lengths - 1] = terminal
    # stale data after each episode's end must not leak in
    terminated |= ~mask & (rng.random((batch, limit)) < 0.5)
    got = np.asarray(td_lambda_targets(jnp.asarray(reward, jnp.float32), jnp.asarray(terminated), jnp.asarray(mask),
                                       jnp.asarray(next_values, jnp.float32), gamma, lam))
    for b in range(batch):
        ref = lambda_return_forward(reward[b], terminated[b], next_values[b], lengths[b], gamma, lam)
        np.testing.assert_allclose(got[b, : lengths[b]], ref, rtol=1e-5, atol=1e-5)


def test_td_lambda_hand_worked():
    """r = (1, 2), V(s1) = 10, V(s2) = 20, gamma 0.5, lambda 0.5, truncated after step 1:
    G_1 = 2 + 0.5 * 20 = 12; G_0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 12) = 6.5."""
    got = td_lambda_targets(jnp.asarray([[1.0, 2.0]]), jnp.zeros((1, 2), bool), jnp.ones((1, 2), bool),
                            jnp.asarray([[10.0, 20.0]]), 0.5, 0.5)
    np.testing.assert_allclose(got, [[6.5, 12.0]])
    terminated = jnp.asarray([[False, True]])  # terminated instead: G_1 = 2, G_0 = 1 + 0.5 * (5 + 1) = 4
    got = td_lambda_targets(jnp.asarray([[1.0, 2.0]]), terminated, jnp.ones((1, 2), bool),
                            jnp.asarray([[10.0, 20.0]]), 0.5, 0.5)
    np.testing.assert_allclose(got, [[4.0, 2.0]])
    np.testing.assert_allclose(masked_mean(jnp.asarray([1.0, 2.0, 100.0]), jnp.asarray([True, True, False])), 1.5)


# ----- inputs, epsilon ----------------------------------------------------------------------------


def test_agent_inputs_are_obs_last_action_and_id():
    obs = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # [B, N, D]
    last = np.array([[-1, 0, 2], [1, 1, -1]])
    got = np.asarray(agent_inputs(jnp.asarray(obs), jnp.asarray(last), 3))
    assert got.shape == (2, 3, 2 + 3 + 3)
    np.testing.assert_array_equal(got[..., :2], obs)
    expect_last = np.zeros((2, 3, 3))
    for b in range(2):
        for i in range(3):
            if last[b, i] >= 0:
                expect_last[b, i, last[b, i]] = 1
    np.testing.assert_array_equal(got[..., 2:5], expect_last)
    np.testing.assert_array_equal(got[..., 5:], np.broadcast_to(np.eye(3), (2, 3, 3)))
    actions = jnp.asarray([[[1, 2], [0, 0]]])  # [B=1, T=2, N=2]
    np.testing.assert_array_equal(previous_actions(actions), [[[-1, -1], [1, 2], [0, 0]]])


def test_linear_epsilon_schedule():
    eps = [float(linear_epsilon(jnp.asarray(s), 0.995, 0.05, 100_000.0)) for s in (0, 50_000, 100_000, 400_000)]
    np.testing.assert_allclose(eps, [0.995, 0.5225, 0.05, 0.05], rtol=1e-6)


def test_epsilon_greedy_respects_available_actions():
    q = jnp.asarray(np.random.default_rng(0).normal(size=(4000, 2, 4)), jnp.float32)
    avail = np.ones((4000, 2, 4), bool)
    avail[:, 0, [0, 3]] = False
    avail = jnp.asarray(avail)
    act = jax.jit(epsilon_greedy)
    np.testing.assert_array_equal(act(jax.random.PRNGKey(0), q, avail, 0.0), greedy(q, avail))
    uniform = np.asarray(act(jax.random.PRNGKey(1), q, avail, 1.0))
    assert set(uniform[:, 0].tolist()) == {1, 2}
    np.testing.assert_allclose(np.bincount(uniform[:, 1], minlength=4) / 4000, 0.25, atol=0.03)
    half = np.asarray(act(jax.random.PRNGKey(2), q, avail, 0.5))
    # a random action differs from the greedy one w.p. 1/2 (agent 0: 2 available) or 3/4 (agent 1)
    np.testing.assert_allclose((half != np.asarray(greedy(q, avail))).mean(), 0.5 * (0.5 + 0.75) / 2, atol=0.02)


# ----- target copies ---------------------------------------------------------------------------


def test_a_copy_is_due_when_the_episode_count_crosses_a_multiple():
    """Counts jump by several episodes per update: 198 -> 203 crosses 200 without landing on it, which a
    "count % period == 0" rule (optax.periodic_update) would miss."""
    before = jnp.asarray([0, 198, 199, 200, 200, 390], jnp.int32)
    after = jnp.asarray([5, 203, 200, 200, 399, 401], jnp.int32)
    np.testing.assert_array_equal(crossed_multiple(before, after, 200), [False, True, True, False, False, True])
    np.testing.assert_array_equal(jnp.mod(after, 200) == 0, [False, False, True, True, False, False])


def test_copy_target_selects_whole_trees():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(())}
    target = {"w": -jnp.arange(3.0), "b": jnp.zeros(())}
    for copy, want in ((True, params), (False, target)):
        got = copy_target(jnp.asarray(copy), params, target)
        for k in params:
            np.testing.assert_array_equal(got[k], want[k])


# ----- collection, learning gates, counts, targets ---------------------------------------------


def randomised(params, seed, scale=0.8):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), x.dtype), params)


def test_collection_acts_as_the_learner_replays():
    """Greedy collection (epsilon 0) on MPE line control (25-step episodes, random starts) with random
    parameters: replaying the agent network over each stored episode from a zero GRU state with the
    rebuilt last-action inputs gives back exactly the actions taken. Needs the GRU and last action reset
    at every episode start and the inputs built the same way when acting and learning."""
    cfg = jmarl.make_config("qmix", "mpe_line_control", num_envs=2, num_steps=60, hidden_dim=16, batch_size=2,
                            buffer_size=8, eps_start=0.0, eps_finish=0.0)
    algo = jmarl.make_algorithm(cfg)
    assert algo.steps_per_update == 120
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    state = state.replace(params=randomised(state.params, 1))
    state, stats = jax.jit(algo.collect)(state)
    assert int(state.env_steps) == 120 and int(state.episodes) == 4 and float(stats["episodes_finished"]) == 4
    buf = state.buffer
    assert int(buf.num_complete) == 4
    slots = np.flatnonzero(np.asarray(buf.complete)).tolist() + np.asarray(buf.write_slot).tolist()
    batch = replay.Episodes(*(jnp.take(getattr(buf, f), jnp.asarray(slots), axis=0).astype(
        jnp.float32 if f in ("obs", "state") else getattr(buf, f).dtype)
        for f in ("obs", "state", "avail", "actions", "reward", "terminated", "mask")))
    q = jax.jit(algo.agent_qs)(state.params["agent"], batch)
    replayed = np.asarray(greedy(q[:, :-1], batch.avail[:, :-1]))
    mask = np.asarray(batch.mask)
    assert mask.sum() == 120 and mask[-2:].sum(1).tolist() == [10, 10]  # the two episodes in progress
    np.testing.assert_array_equal(replayed[mask], np.asarray(batch.actions)[mask])
    # not vacuous: a GRU that saw one step before the episode (no reset) acts differently
    shifted = batch.replace(obs=jnp.roll(batch.obs, 1, axis=1), actions=jnp.roll(batch.actions, 1, axis=1))
    wrong = np.asarray(greedy(jax.jit(algo.agent_qs)(state.params["agent"], shifted)[:, 1:], batch.avail[:, :-1]))
    assert (wrong[mask] != np.asarray(batch.actions)[mask]).any()


@pytest.fixture(scope="module")
def matrix_run():
    """qmix on a one-step matrix game: 8 episodes per update, learning from 24 complete episodes on,
    target copies every 20 episodes; 8 updates, every state kept."""
    cfg = jmarl.make_config("qmix", "matrix_qtran", num_envs=8, num_steps=0, batch_size=24, buffer_size=64,
                            target_update_episodes=20, hidden_dim=8, mixing_embed_dim=4, hypernet_dim=8,
                            train_steps=2, updates_per_episode=0.0)
    algo = jmarl.make_algorithm(cfg)
    update = jax.jit(algo.update)
    states = [jax.jit(algo.init)(jax.random.PRNGKey(0))]
    metrics = []
    for _ in range(8):
        s, m = update(states[-1])
        states.append(s)
        metrics.append(m)
    return algo, states, metrics


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_gradient_steps_wait_for_batch_size_complete_episodes(matrix_run):
    algo, states, metrics = matrix_run
    assert algo.num_steps == 1 and algo.steps_per_update == 8
    assert [int(s.env_steps) for s in states] == [8 * i for i in range(9)]
    assert [int(s.episodes) for s in states] == [8 * i for i in range(9)]
    complete = [int(s.buffer.num_complete) for s in states]
    assert complete == [0, 8, 16, 24, 32, 40, 48, 56, 56]  # capacity 64 minus the 8 slots being written
    assert same(states[2].params, states[0].params) and same(states[2].opt_state, states[0].opt_state)
    assert [float(m["loss"]) == 0.0 for m in metrics[:2]] == [True, True]
    for i in range(3, 9):
        assert not same(states[i].params, states[i - 1].params)
    assert [int(s.grad_steps) for s in states] == [0, 0, 0, 2, 4, 6, 8, 10, 12]


def test_hard_target_copy_when_episodes_cross_a_multiple(matrix_run):
    _, states, metrics = matrix_run
    crossed = [(8 * (i + 1)) // 20 > (8 * i) // 20 for i in range(8)]  # at 24, 40, 64 episodes
    assert crossed == [False, False, True, False, True, False, False, True]
    assert [bool(m["target_copies"]) for m in metrics] == crossed
    for i, c in enumerate(crossed, start=1):
        if c:
            assert same(states[i].target_params, states[i].params)
        else:
            assert same(states[i].target_params, states[i - 1].target_params)
            assert i < 3 or not same(states[i].target_params, states[i].params)


def test_pymarl2_ratio_one_gradient_step_per_8_completed_episodes():
    """QMIX's default schedule (updates_per_episode 1/8): with 4 one-step envs, 4 episodes per update, so a
    gradient step every second update, from the update whose buffer first holds batch_size episodes; the
    fixed schedule would take one every update."""
    cfg = jmarl.make_config("qmix", "matrix_qtran", num_envs=4, batch_size=8, buffer_size=32, hidden_dim=8,
                            mixing_embed_dim=4, hypernet_dim=8)
    assert cfg.updates_per_episode == 0.125 and jmarl.make_config("remix", "matrix_qtran").updates_per_episode == 0.125
    algo = jmarl.make_algorithm(cfg)
    update = jax.jit(algo.update)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    steps, owed = [], []
    for _ in range(8):
        state, m = update(state)
        steps.append(int(state.grad_steps))
        owed.append(int(m["gradient_steps"]))
    # episodes 4, 8, 12, ...: floor(E/8) moves at 8, 16, 24, 32; the buffer holds 8 from the second update
    assert owed == [0, 1, 0, 1, 0, 1, 0, 1] and steps == [0, 1, 1, 2, 2, 3, 3, 4]


def test_config_errors_before_compiling():
    with pytest.raises(ConfigError, match="batch_size .* must be <= buffer_size"):
        jmarl.make_config("qmix", "matrix_qtran", batch_size=128, buffer_size=100)
    # 8 envs each hold a slot they are writing: a batch of 100 needs 108 slots
    with pytest.raises(ConfigError, match=r"buffer_size \(104\) must be at least .* = 108"):
        jmarl.make_algorithm(jmarl.make_config("qmix", "matrix_qtran", batch_size=100, buffer_size=104))
    # predator-prey's float32 buffer of the paper's 10000 episodes is ~6.9 GiB per seed
    with pytest.raises(ConfigError, match="bfloat16"):
        jmarl.make_algorithm(jmarl.make_config("remix", "predator_prey_p2", buffer_dtype="float32"))
    cfg = jmarl.make_config("remix", "predator_prey_p2")  # its env default: bfloat16, about 3.5 GiB
    assert cfg.buffer_dtype == "bfloat16" and cfg.buffer_size == 10_000
    algo = jmarl.make_algorithm(cfg)
    assert algo.num_steps == 200 and algo.steps_per_update == 1600
    fits = int(0.36 * 2**30 // replay.bytes_per_episode(algo.spec, "bfloat16"))
    assert 1000 < fits < 1100
    with pytest.raises(ConfigError, match=f"use buffer_size <= {fits},"):
        jmarl.make_algorithm(jmarl.make_config("qmix", "predator_prey_p2", buffer_size=1500, buffer_limit_gib=0.36))
    with pytest.raises(ConfigError, match="buffer_dtype must be one of"):
        jmarl.make_config("qmix", "matrix_qtran", buffer_dtype="float16")
