"""HAPPO against independent numbers: the sequential factors against NumPy products of the earlier agents'
ratios (with a scripted update and inside the real update, from the log-probabilities of the learned
policies), the surrogate against a NumPy loop and hand-worked values, the random order of the agents'
updates, that an agent's update touches only its own parameters, the matrix score against the payoff
tables, a compiled run without the registry, and (slow) what HAPPO learns on the hallway."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmarl.algos.happo import ENV_DEFAULTS, HAPPO, VARIANTS, HAPPOConfig, happo_surrogate, sequential_update
from jmarl.config import ConfigError, validate
from jmarl.core import make_chunk, plan
from jmarl.evaluate import matrix_score

SMALL = dict(algo="happo", env="stochastic_game", num_envs=4, num_steps=5, hidden_dim=8, epochs=2,
             num_minibatches=2, recurrent=False, lr=3e-3)


def make(**overrides):
    return HAPPO(validate(HAPPOConfig(**{**SMALL, **overrides})))


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ----- defaults ---------------------------------------------------------------------------------


def test_defaults_are_harls_happo_for_smac():
    cfg = validate(HAPPOConfig(env="smax_3m"))
    assert (cfg.lr, cfg.adam_eps, cfg.clip, cfg.value_clip, cfg.epochs, cfg.num_minibatches) == (5e-4, 1e-5, 0.2, 0.2,
                                                                                                 5, 1)
    assert (cfg.ent_coef, cfg.gamma, cfg.gae_lambda, cfg.huber_delta, cfg.max_grad_norm) == (0.01, 0.99, 0.95, 10.0,
                                                                                              10.0)
    assert (cfg.hidden_dim, cfg.recurrent, cfg.layer_norm, cfg.value_norm, cfg.value_norm_beta) == (64, True, True,
                                                                                                    True, 0.99999)
    assert (cfg.num_envs, cfg.num_steps, cfg.active_masks, cfg.fixed_order, cfg.norm_adv) == (20, 160, True, False,
                                                                                              True)
    assert VARIANTS == {"happo": {}}
    assert ENV_DEFAULTS["smax_5m_vs_6m"] == {"clip": 0.05, "value_clip": 0.05, "gamma": 0.95}
    assert ENV_DEFAULTS["smax_6h_vs_8z"]["epochs"] == 10
    with pytest.raises(ConfigError, match="clip must be > 0"):
        validate(dataclasses.replace(cfg, clip=0.0))
    assert {"lr", "clip", "ent_coef", "gamma", "gae_lambda"} <= set(HAPPO.sweepable)
    with pytest.raises(ConfigError, match="divisible"):
        make(num_envs=5)


# ----- the sequential factors and the surrogate ---------------------------------------------------


def test_factor_is_the_product_of_the_earlier_agents_ratios():
    """Three agents, order (2, 0, 1), hand-set log-probabilities before and after each agent's update."""
    rng = np.random.default_rng(0)
    t, e, n = 4, 3, 3
    old = np.log(rng.uniform(0.05, 0.95, size=(t, e, n))).astype(np.float32)
    new = (old + rng.normal(0.0, 0.4, size=(t, e, n))).astype(np.float32)
    order = np.array([2, 0, 1])

    def update_agent(carry, agent, factor, position):  # a scripted update: the new log-probs are given
        return carry + 1, jnp.take(jnp.asarray(new - old), agent, axis=2), {"agent": agent, "position": position}

    carry, factors, stats = jax.jit(lambda o: sequential_update(o, 0, jnp.ones((t, e)), update_agent))(order)
    ratio = np.exp(new.astype(np.float64) - old)
    expected = np.stack([np.ones((t, e)), ratio[..., 2], ratio[..., 2] * ratio[..., 0]])
    np.testing.assert_allclose(factors, expected, rtol=1e-5)
    assert int(carry) == 3
    np.testing.assert_array_equal(stats["agent"], order)
    np.testing.assert_array_equal(stats["position"], [0, 1, 2])


def test_surrogate_by_hand():
    """M * min(r A, clip(r) A) with clip 0.2: both clip sides, both signs of A, M above and below 1."""
    ratio = jnp.array([1.5, 1.5, 0.5, 0.5, 1.1])
    adv = jnp.array([2.0, -1.0, 1.0, -1.0, 3.0])
    factor = jnp.array([0.5, 3.0, 2.0, 2.0, 0.25])
    # r=1.5,A=2: min(3, 2.4)=2.4 -> 1.2; r=1.5,A=-1: min(-1.5,-1.2)=-1.5 -> -4.5; r=.5,A=1: min(.5,.8)=.5 -> 1;
    # r=.5,A=-1: min(-.5,-.8)=-.8 -> -1.6; r=1.1 (inside): 3.3 -> 0.825
    np.testing.assert_allclose(happo_surrogate(ratio, adv, factor, 0.2), [1.2, -4.5, 1.0, -1.6, 0.825], rtol=1e-6)
    # M enters outside the clip: the same as min(r M A, clip(r) M A), and the factor itself is never clipped
    np.testing.assert_allclose(happo_surrogate(ratio, adv, factor, 0.2),
                               jnp.minimum(ratio * factor * adv, jnp.clip(ratio, 0.8, 1.2) * factor * adv), rtol=1e-6)


def test_actor_loss_equals_a_numpy_loop():
    """One agent's loss on a hand-built batch: its new log-probs come from given logits (the network is
    replaced), old log-probs, advantages, factors and active flags are set by hand."""
    algo = make(clip=0.2)
    rng = np.random.default_rng(3)
    t, e, a = 6, 4, algo.num_actions
    logits = rng.normal(0.0, 1.5, size=(t, e, a)).astype(np.float32)
    actions = rng.integers(0, a, size=(t, e))
    logp_new = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    old = (logp_new[np.arange(t)[:, None], np.arange(e), actions] + rng.normal(0, 0.5, size=(t, e))).astype(np.float32)
    adv = rng.normal(size=(t, e)).astype(np.float32)
    factor = rng.uniform(0.3, 2.5, size=(t, e)).astype(np.float32)
    active = rng.random((t, e)) < 0.8
    data = {"actions": jnp.asarray(actions, jnp.int32), "logp": jnp.asarray(old), "active": jnp.asarray(active),
            "avail": jnp.ones((t, e, a), bool)}
    # the loss reads the policy only through this
    algo.agent_policy = lambda p, c, d: jax.nn.log_softmax(jnp.asarray(logits))
    ent_coef = 0.3
    total, stats = algo.actor_loss(None, None, data, jnp.asarray(adv), jnp.asarray(factor), ent_coef)

    terms, entropies, clipped = [], [], 0
    for i in range(t):
        for j in range(e):
            if not active[i, j]:
                continue
            p = np.exp(logp_new[i, j].astype(np.float64))
            r = np.exp(logp_new[i, j, actions[i, j]] - old[i, j])
            plain, clip_term = r * adv[i, j], min(max(r, 0.8), 1.2) * adv[i, j]
            clipped += clip_term < plain
            terms.append(factor[i, j] * min(plain, clip_term))
            entropies.append(-(p * np.log(p)).sum())
    assert clipped > 3  # the clip binds on some samples
    policy_loss, entropy = -np.mean(terms), np.mean(entropies)
    np.testing.assert_allclose(stats["policy_loss"], policy_loss, rtol=1e-5)
    np.testing.assert_allclose(stats["entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(total, policy_loss - ent_coef * entropy, rtol=1e-5)


# ----- the order of the agents' updates and non-shared actors ---------------------------------------


def test_agent_order_is_a_random_permutation_per_key():
    algo = make()
    n = algo.n
    orders = np.asarray(jax.jit(jax.vmap(algo.agent_order))(jax.random.split(jax.random.PRNGKey(0), 3000)))
    assert n == 6 and (np.sort(orders, axis=1) == np.arange(n)).all()  # every agent exactly once
    first = np.bincount(orders[:, 0], minlength=n) / len(orders)
    assert np.abs(first - 1 / n).max() < 0.03  # any agent may go first, uniformly
    assert len({tuple(o) for o in orders}) > 690  # nearly all of the 720 orders (709 expected)
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(algo.agent_order(key), algo.agent_order(key))  # deterministic given the key
    np.testing.assert_array_equal(make(fixed_order=True).agent_order(key), np.arange(n))


class Recording(HAPPO):
    """Records, from inside the compiled update, which agent is updated with which factor."""

    calls: list

    def update_agent(self, actor_params, actor_opt, agent, factor, *args):
        jax.debug.callback(lambda a, f: self.calls.append((int(a), np.asarray(f))), agent, factor, ordered=True)
        return super().update_agent(actor_params, actor_opt, agent, factor, *args)


@pytest.fixture(scope="module")
def rollout():
    """A rollout of the 6-agent stochastic game (some agent-steps recorded as inactive by hand) and the state
    that collected it."""
    algo = make()
    state = algo.init(jax.random.PRNGKey(0))
    carries0 = state.carries
    state, traj = jax.jit(algo.collect)(state)
    active = np.random.default_rng(0).random(traj["active"].shape) < 0.85
    return state, carries0, {**traj, "active": jnp.asarray(active)}


def test_each_update_orders_the_agents_afresh_and_factors_follow_the_learned_policies(rollout):
    state, carries0, traj = rollout
    algo = Recording(validate(HAPPOConfig(**SMALL)))
    algo.calls = []
    learn = jax.jit(algo.learn)
    orders, n = [], algo.n
    for _ in range(3):
        before = state
        state, metrics = learn(state, carries0, traj)
        jax.effects_barrier()
        calls, algo.calls = algo.calls, []
        agents = [c[0] for c in calls]
        orders.append(tuple(agents))
        assert sorted(agents) == list(range(n))  # every agent updated once
        np.testing.assert_array_equal(agents, algo.agent_order(jax.random.split(before.key, 4)[1]))
        assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
        # the factor each agent trained with = product of the ratios of the agents updated before it, from the
        # log-probs of their policies after the update (each agent is updated once, so its final parameters)
        logp_new = np.stack([
            np.asarray(jnp.take_along_axis((algo.agent_policy(
                jax.tree.map(lambda x, i=i: x[i], state.params["actor"]), carries0[0][:, i],
                algo.agent_data(traj, i))), traj["actions"][..., i, None], -1)[..., 0]) for i in range(n)], -1)
        ratio = np.exp(logp_new.astype(np.float64) - np.asarray(traj["logp"]))
        product = np.ones(ratio.shape[:2])
        for position, (agent, factor) in enumerate(calls):
            np.testing.assert_allclose(factor, product, rtol=2e-4)
            if position > 0:
                assert np.abs(factor - 1).max() > 1e-3  # the earlier updates moved the policies
            product = product * ratio[..., agent]
    assert len(set(orders)) == 3  # a fresh permutation each update
    again = learn(before, carries0, traj)[0]  # the same key: the same order and the same result
    for x, y in zip(leaves(again.params), leaves(state.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_an_agents_update_changes_only_its_own_parameters(rollout):
    state, carries0, traj = rollout
    algo = make()
    adv = jnp.asarray(np.random.default_rng(1).normal(size=traj["actions"].shape), jnp.float32)
    factor = jnp.ones(traj["reward"].shape)

    @jax.jit
    def update(agent):
        return algo.update_agent(state.params["actor"], state.opt_state["actor"], agent, factor,
                                 jax.random.PRNGKey(2), carries0[0], traj, adv, 0.01)

    before_p, before_o = leaves(state.params["actor"]), leaves(state.opt_state["actor"])
    for agent in (0, 4):
        params, opt, new_logp, stats = update(agent)
        after_p, after_o = leaves(params), leaves(opt)
        for old, new in zip(before_p + before_o, after_p + after_o, strict=True):
            others = np.arange(len(old)) != agent
            np.testing.assert_array_equal(new[others], old[others])  # every other agent bit for bit
        assert any(np.abs(new[agent] - old[agent]).max() > 1e-4 for old, new in zip(before_p, after_p, strict=True))
        assert new_logp.shape == traj["reward"].shape and stats["grad_norm"].shape == (algo.config.epochs, 2)


# ----- evaluation and a compiled run ---------------------------------------------------------------


def test_matrix_score_is_the_payoff_of_the_greedy_actions():
    algo = make(env="matrix_tad10", num_envs=2, num_steps=1, num_minibatches=1)
    rng = np.random.default_rng(5)
    shapes = jax.eval_shape(algo.init, jax.random.PRNGKey(0)).params
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)
    raw = algo.env.unwrapped
    k, n = raw.num_tasks, algo.n
    obs = np.broadcast_to(np.eye(k, dtype=np.float32)[:, None], (k, n, k))  # each agent sees its task's one-hot
    _, logits = algo.policy(params["actor"], algo.init_carries(k)[0], jnp.asarray(obs), jnp.ones(k, bool),
                            jnp.ones((k, n, algo.num_actions), bool))
    joint = np.argmax(np.asarray(logits), -1)
    payoff = np.asarray(raw.payoff)
    expected = sum(payoff[task][tuple(joint[task])] for task in range(k))
    np.testing.assert_allclose(matrix_score(algo.env, functools.partial(algo.greedy_policy, params)), expected,
                               rtol=1e-6)
    assert len({tuple(j) for j in joint}) > 1  # not vacuous: the greedy joint action depends on the task


@pytest.mark.slow  # 20 s of compiling; the fast suite compiles updates in the agent-order test
def test_compiled_training_without_the_registry():
    """make_train's program built by hand: init, chunks of compiled updates and a greedy evaluation."""
    algo = make(env="hallway", recurrent=True, num_envs=4, num_steps=8, total_steps=96, eval_every=3,
                eval_episodes=2)
    p = plan(algo)
    chunk = make_chunk(algo, p.updates_per_chunk)
    state, metrics = jax.jit(lambda key: jax.lax.scan(lambda s, _: chunk(s), algo.init(key), None, p.num_chunks))(
        jax.random.PRNGKey(1))
    assert (p.num_chunks, p.updates_per_chunk) == (1, 3) and int(state.env_steps) == 96
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "grad_norm", "critic_grad_norm",
                "factor_mean", "factor_max", "ent_coef", "episode_return"):
        assert f"train/{key}" in metrics, key
    assert {"eval/return", "eval/won"} <= set(metrics)
    for key, value in metrics.items():
        if key.startswith("nonfinite/"):
            assert (np.asarray(value) == -1).all(), key
        else:
            assert np.isfinite(np.asarray(value)).all(), key
    assert float(metrics["train/factor_max"][-1]) > 1.0  # the later agents trained with a factor != 1
    carry, policy = algo.greedy_policy(state.params, 3)
    ts = jax.vmap(algo.env.reset)(jax.random.split(jax.random.PRNGKey(0), 3))[1]
    _, actions = policy(carry, ts.obs, ts.avail_actions, jnp.ones(3, bool))
    assert actions.shape == (3, algo.n)


# ----- learning -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_happo_learns_the_hallway_to_the_local_optimum():
    """experiments/presets/tad_hallway.toml's settings (no GRU, hidden 32, advantages in reward units, entropy 2
    annealed to 0, 30,720 steps): from random play (return < 1) every seed reaches the near goal together
    (return 4), the local optimum, like MAPPO, and none the far goal (5), which only TAD-PPO finds."""
    algo = HAPPO(validate(HAPPOConfig(env="hallway", recurrent=False, hidden_dim=32, norm_adv=False, num_envs=16,
                                      num_steps=32, eval_every=5, eval_episodes=4, ent_coef=2.0, ent_coef_final=0.0,
                                      total_steps=16 * 32 * 60)))
    p = plan(algo)
    chunk = make_chunk(algo, p.updates_per_chunk)
    train = lambda key: jax.lax.scan(lambda s, _: chunk(s), algo.init(key), None, p.num_chunks)  # noqa: E731
    _, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(1), 3))
    final = np.asarray(metrics["eval/return"][:, -1])
    assert (np.asarray(metrics["train/episode_return"][:, 0]) < 2.0).all()
    np.testing.assert_array_equal(final, 4.0)
