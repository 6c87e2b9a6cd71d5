"""HAPPO with Gaussian policies: the objective against scipy, and the policies' structure and actions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jmarl


def make(**overrides):
    small = dict(num_envs=4, num_steps=2, hidden_dim=8, recurrent=False, **overrides)
    return jmarl.make_algorithm(jmarl.make_config("happo", "differential_game", **small))


def test_gaussian_actor_loss_matches_scipy():
    """M * min(r A, clip(r) A) with r = prod over controlled dims of N(a; m, s) / pi_old(a), and the Gaussian
    entropy; a padded dimension adds nothing to the ratio or the entropy."""
    algo = make()
    rng = np.random.default_rng(0)
    t, e, a = 5, 3, 2
    mean, log_std = rng.normal(size=(t, e, a)), rng.uniform(-1, 0.5, size=(t, e, a))
    avail = np.ones((t, e, a), bool)
    avail[..., 1] = rng.random((t, e)) < 0.5  # the second dimension padded on about half the steps
    actions = rng.normal(size=(t, e, a)) * 1.3
    logp_new = np.where(avail, stats.norm.logpdf(actions, mean, np.exp(log_std)), 0.0).sum(-1)
    old = logp_new + rng.normal(0, 0.4, size=(t, e))
    adv, factor = rng.normal(size=(t, e)), rng.uniform(0.3, 2.5, size=(t, e))
    data = {"actions": jnp.asarray(actions, jnp.float32), "logp": jnp.asarray(old, jnp.float32),
            "avail": jnp.asarray(avail), "active": jnp.ones((t, e), bool)}
    policy = np.concatenate([np.where(avail, mean, 0.0), np.where(avail, log_std, 0.0)], -1).astype(np.float32)
    algo.agent_policy = lambda p, c, d: jnp.asarray(policy)  # the loss reads the policy only through this
    total, stats_ = algo.actor_loss(None, None, data, jnp.asarray(adv, jnp.float32),
                                    jnp.asarray(factor, jnp.float32), 0.2)
    ratio = np.exp(logp_new - old)
    clip = algo.config.clip
    assert np.any(ratio > 1 + clip) and np.any(ratio < 1 - clip)
    surrogate = factor * np.minimum(ratio * adv, np.clip(ratio, 1 - clip, 1 + clip) * adv)
    entropy = np.where(avail, stats.norm(0, np.exp(log_std)).entropy(), 0.0).sum(-1)
    np.testing.assert_allclose(float(total), -surrogate.mean() - 0.2 * entropy.mean(), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(float(stats_["entropy"]), entropy.mean(), rtol=2e-5)


def test_continuous_actors_and_actions():
    """Each agent has its own log-std vector at HARL's initial std; greedy actions are the means, sampled ones
    spread around them; a rollout stores the sampled action's log-density."""
    algo = make()
    state = algo.init(jax.random.PRNGKey(0))
    log_std = state.params["actor"]["log_std"]
    assert log_std.shape == (2, 1)
    np.testing.assert_allclose(np.exp(log_std), 0.5 / (1 + np.exp(-1.0)), rtol=1e-3)
    carry, obs = algo.init_carries(4)[0], jnp.ones((4, 2, 1))
    avail, reset = jnp.ones((4, 2, 1), bool), jnp.zeros(4, bool)
    _, policy = algo.policy(state.params["actor"], carry, obs, reset, avail)
    _, greedy = algo.act(state.params, carry, obs, avail, reset)
    np.testing.assert_array_equal(greedy, policy[..., :1])
    state, traj = algo.collect(state)
    assert traj["actions"].dtype == jnp.float32 and traj["actions"].shape == (2, 4, 2, 1)
    _, policy = algo.policy(state.params["actor"], carry, obs, reset, avail)  # the policy did not change
    expected = stats.norm.logpdf(np.asarray(traj["actions"])[..., 0], np.asarray(policy[..., 0]),
                                 np.exp(np.asarray(policy[..., 1])))
    np.testing.assert_allclose(traj["logp"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("algo_name", ["happo", "dpo", "ippo"])
def test_learns_the_differential_game_local_optimum(algo_name):
    """From the untrained greedy joint action (0, 0), return -4.44, to the wide bump's top at (-5, -5), return 0
    (or the narrow optimum, 10) in 200 updates of 32 one-step episodes, on each of 2 seeds. Adam moves a mean
    by about lr per gradient step and the bump is 5 away: HAPPO's 5 epochs (DPO's 15) get there at lr 5e-3."""
    extra = {"recurrent": False, "lr": 5e-3} if algo_name == "happo" else {}
    cfg = jmarl.make_config(algo_name, "differential_game", total_steps=6400, num_envs=32, num_steps=1,
                            eval_episodes=4, eval_every=1000, **extra)
    algo = jmarl.make_algorithm(cfg)
    before = float(algo.evaluate(algo.init(jax.random.PRNGKey(0)))["return"])
    np.testing.assert_allclose(before, -4.44, atol=0.2)
    _, metrics = jax.jit(jax.vmap(jmarl.make_train(cfg)))(jax.random.split(jax.random.PRNGKey(0), 2))
    final = np.asarray(metrics["eval/return"])[:, -1]
    assert (final > -0.5).all(), final
