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


# ----- actor and critic sharing their first layers (jaxmarl's IPPO-RNN torso) -------------------------


def numpy_forward(p: dict, obs: np.ndarray, layers: list[str]) -> np.ndarray:
    """Dense+ReLU layers by hand: ``layers`` names the parameter dicts in order."""
    x = obs
    for name in layers:
        node = p
        for part in name.split("/"):
            node = node[part]
        x = np.maximum(x @ np.asarray(node["kernel"]) + np.asarray(node["bias"]), 0.0)
    return x


def test_shared_layers_forward_matches_numpy():
    """shared_layers=1 of 3 feed-forward layers: one Dense shared, then two Dense layers per head, checked
    against a NumPy forward pass; the critic's own input is not read (the critic sees the trunk's output)."""
    config = jmarl.make_config("ippo", "matrix_penalty", share_params=True, recurrent=False, num_layers=3,
                               hidden_dim=8, shared_layers=1)
    algo = jmarl.make_algorithm(config)
    params = algo.init(jax.random.PRNGKey(0)).params
    p = params["params"]
    assert set(p) == {"Torso_0", "Torso_1", "Torso_2", "Dense_0", "Dense_1"}
    assert set(p["Torso_0"]) == {"Dense_0"} and set(p["Torso_1"]) == set(p["Torso_2"]) == {"Dense_0", "Dense_1"}
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, algo.n, algo.env.spec.obs_dim)).astype(np.float32)
    avail = np.ones((5, algo.n, algo.num_actions), bool)
    carries = algo.init_carries(5)
    reset = np.zeros(5, bool)
    for critic_obs in (obs, 100 + obs):  # the critic input is ignored with shared layers
        _, logits, values = algo.apply(params, carries, obs, critic_obs, avail, reset)
        trunk = numpy_forward(p, obs, ["Torso_0/Dense_0"])
        a = numpy_forward(p, trunk, ["Torso_1/Dense_0", "Torso_1/Dense_1"])
        c = numpy_forward(p, trunk, ["Torso_2/Dense_0", "Torso_2/Dense_1"])
        np.testing.assert_allclose(logits, a @ np.asarray(p["Dense_0"]["kernel"]) + np.asarray(p["Dense_0"]["bias"]),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(values, (c @ np.asarray(p["Dense_1"]["kernel"]) + np.asarray(p["Dense_1"]["bias"]))
                                   [..., 0], rtol=1e-5, atol=1e-5)


def test_shared_gru_trunk_has_one_carry_and_the_peer_parameter_count():
    """shared_layers=2 with a GRU (jaxmarl's IPPO-RNN: Dense + GRU shared, a Dense per head): the GRU is
    in the trunk, both carry slots hold the same carry, and the kernels hold exactly the peer's weights."""
    h = 16
    config = jmarl.make_config("ippo", "hallway", share_params=True, recurrent=True, num_layers=3, hidden_dim=h,
                               shared_layers=2, num_envs=4, num_steps=8)
    algo = jmarl.make_algorithm(config)
    state = algo.init(jax.random.PRNGKey(0))
    p = state.params["params"]
    assert set(p["Torso_0"]) == {"Dense_0", "GRUCell_0"}
    d, a = algo.env.spec.obs_dim, algo.num_actions
    kernels = sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_leaves_with_path(p)
                  if path[-1].key == "kernel")
    assert kernels == d * h + 6 * h * h + 2 * h * h + h * a + h  # Dense, GRU (3 input + 3 hidden), heads
    _, traj = jax.jit(algo.collect)(state)
    carries, _, _ = algo.apply(state.params, state.carries, traj["obs"][0], traj["obs"][0], traj["avail"][0],
                               traj["reset"][0])
    np.testing.assert_array_equal(carries[0], carries[1])
    assert np.abs(np.asarray(carries[0])).sum() > 0


@pytest.mark.parametrize("options, message", [(dict(shared_layers=4), "shared_layers"),
                                              (dict(shared_layers=1, centralised_critic=True), "centralised_critic")])
def test_shared_layers_refuses_what_it_cannot_mean(options, message):
    with pytest.raises(jmarl.ConfigError, match=message):
        jmarl.make_algorithm(jmarl.make_config("ippo", "hallway", num_layers=3, **options))


def test_skipping_the_final_kl_replay_changes_no_learning():
    """IPPO skips the forward pass after the epochs (its KL only fed a metric): parameters and optimiser
    after two updates are bitwise those of the run that computes it, and kl_final is not reported."""
    config = jmarl.make_config("ippo", "hallway", recurrent=True, **TINY)
    assert not config.final_kl
    runs = []
    for final_kl in (False, True):
        algo = jmarl.make_algorithm(jmarl.make_config("ippo", "hallway", recurrent=True, final_kl=final_kl, **TINY))
        state = algo.init(jax.random.PRNGKey(2))
        update = jax.jit(algo.update)
        for _ in range(2):
            state, metrics = update(state)
        runs.append((state, metrics))
    (skip, m_skip), (full, m_full) = runs
    assert "kl_final" not in m_skip and float(m_full["kl_final"]) > 0
    for x, y in zip(jax.tree.leaves((skip.params, skip.opt_state, skip.betas)),
                    jax.tree.leaves((full.params, full.opt_state, full.betas)), strict=True):
        np.testing.assert_array_equal(x, y)
