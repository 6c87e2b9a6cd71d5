"""DPO's structural options: recurrent replay, parameter sharing, centralised critic."""

import jax
import numpy as np
import pytest

import jmarl

TINY = dict(num_envs=4, num_steps=24, hidden_dim=16, num_layers=2, epochs=1)


def test_recurrent_replay_reproduces_the_rollout():
    """Training recomputes the policy over each stored sequence from the rollout's first carries, with
    the carry reset where an episode starts. With unchanged params it must give back exactly the
    log-probs and values the rollout acted with, across episode ends inside the batch."""
    algo = jmarl.make_algorithm(jmarl.make_config("dpo", "hallway", recurrent=True, **TINY))
    state = algo.init(jax.random.PRNGKey(0))
    carries0 = state.carries
    state, traj = jax.jit(algo.collect)(state)
    assert traj["done"].any(), "the batch must contain episode ends to test the resets"
    logp, values = jax.jit(algo._replay)(state.params, carries0, traj)
    np.testing.assert_allclose(logp, traj["logp"], atol=1e-5)
    np.testing.assert_allclose(values, traj["values"], atol=1e-5)
    # without the resets the replay would differ: the check above is not vacuous
    no_reset = {**traj, "reset": np.zeros_like(traj["reset"])}
    _, values_no_reset = jax.jit(algo._replay)(state.params, carries0, no_reset)
    assert not np.allclose(values_no_reset, traj["values"], atol=1e-5)


@pytest.mark.parametrize("options", [dict(share_params=True), dict(centralised_critic=True),
                                     dict(share_params=True, centralised_critic=True, recurrent=True)])
def test_sharing_and_centralised_critic_train(options):
    config = jmarl.make_config("ippo", "matrix_penalty", total_steps=4 * 24, eval_every=2, **TINY, **options)
    algo = jmarl.make_algorithm(config)
    state = algo.init(jax.random.PRNGKey(1))
    leaves = jax.tree.leaves(state.params)
    kernel = state.params["params"]["Dense_0"]["kernel"]
    if config.share_params:
        assert kernel.ndim == 2  # one network for all agents
    else:
        assert kernel.shape[0] == algo.n  # one network per agent, stacked
    _, metrics = jax.jit(jmarl.make_train(config))(jax.random.PRNGKey(1))
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(metrics))
    assert leaves


def test_independent_agents_do_not_share_gradients():
    """Without sharing, agent 0's parameters move only because of agent 0's own loss terms: zeroing
    agent 1's advantages and value targets changes agent 1's update and leaves agent 0's unchanged."""
    algo = jmarl.make_algorithm(jmarl.make_config("dpo", "matrix_penalty", **TINY))
    state = algo.init(jax.random.PRNGKey(2))
    carries0 = state.carries
    state, traj = algo.collect(state)
    adv = np.random.default_rng(0).normal(size=traj["values"].shape).astype(np.float32)
    targets = np.random.default_rng(1).normal(size=traj["values"].shape).astype(np.float32)
    grad = jax.jit(jax.grad(lambda p, a, t: algo.loss(p, state.betas, carries0, traj, a, t)[0]))
    g1 = grad(state.params, adv, targets)
    adv2, targets2 = adv.copy(), targets.copy()
    adv2[..., 1], targets2[..., 1] = 0.0, 0.0
    g2 = grad(state.params, adv2, targets2)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert any(not np.allclose(a[1], b[1]) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True))
