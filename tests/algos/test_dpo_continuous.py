"""DPO, IPPO and IPPO-KL with Gaussian policies (continuous actions) against a float64 NumPy reference.

The network's heads on a hand-built batch are read back through ``DPO.apply``; the objective of eq. 20
is then recomputed from scipy's normal log-density and the closed-form Gaussian KL. One agent-step has
its action dimension marked as not controlled, which must drop out of the ratio, the KL and the entropy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jmarl

T, E, N, A = 3, 2, 2, 1  # differential_game: 2 agents, one action dimension each
SMALL = dict(num_envs=E, num_steps=T, hidden_dim=8)


def make(algo="dpo", **overrides):
    return jmarl.make_algorithm(jmarl.make_config(algo, "differential_game", **SMALL, **overrides))


@pytest.fixture(scope="module")
def params():
    return make().init(jax.random.PRNGKey(0)).params


def gaussian_kl(m0, s0, m1, s1):
    return np.log(s1 / s0) + (s0 ** 2 + (m0 - m1) ** 2) / (2 * s1 ** 2) - 0.5


def build(algo, params, seed=0):
    rng = np.random.default_rng(seed)
    obs = np.ones((T, E, N, 1), np.float32)
    avail = np.ones((T, E, N, A), bool)
    avail[2, 1, 0] = False  # one agent-step whose dimension is padded
    reset = np.zeros((T, E), bool)
    heads = []
    for t in range(T):
        _, h, _ = algo.apply(params, algo.init_carries(E), jnp.asarray(obs[t]), jnp.asarray(obs[t]),
                             jnp.asarray(avail[t]), jnp.asarray(reset[t]))
        heads.append(np.asarray(h, np.float64))
    heads = np.stack(heads)  # [T, E, N, 2]
    mean_new, log_std_new = heads[..., :1], heads[..., 1:]
    mean_old = mean_new + np.where(avail, rng.normal(scale=0.5, size=mean_new.shape), 0.0)
    log_std_old = log_std_new + np.where(avail, rng.normal(scale=0.3, size=mean_new.shape), 0.0)
    actions = np.where(avail, rng.normal(size=mean_new.shape) * 1.5, 0.0)
    values = np.zeros((T, E, N))
    traj = dict(obs=obs, avail=avail, reset=reset, actions=actions.astype(np.float32),
                logp=np.concatenate([mean_old, log_std_old], -1).astype(np.float32),
                values=values.astype(np.float32), next_values=np.zeros((T, E, N), np.float32),
                reward=np.zeros((T, E), np.float32), terminated=np.zeros((T, E), bool), done=np.zeros((T, E), bool),
                ep_return=np.zeros((T, E), np.float32))
    ref = dict(mean_new=mean_new, std_new=np.exp(log_std_new), mean_old=mean_old, std_old=np.exp(log_std_old),
               actions=actions, avail=avail, adv=rng.normal(size=(T, E, N)), targets=rng.normal(size=(T, E, N)))
    return jax.tree.map(jnp.asarray, traj), ref


def expected_loss(cfg, betas, ref, values):
    """Eq. 20 per agent with Gaussian log-densities (scipy), negated and summed, plus the value loss."""
    av = ref["avail"]
    logpdf = lambda m, s: np.where(av, stats.norm.logpdf(ref["actions"], m, s), 0.0).sum(-1)  # noqa: E731
    ratio = np.exp(logpdf(ref["mean_new"], ref["std_new"]) - logpdf(ref["mean_old"], ref["std_old"]))
    adv = ref["adv"]
    surrogate = ratio * adv
    if cfg.clip > 0:
        surrogate = np.minimum(surrogate, np.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
    if cfg.inv_n:
        surrogate = surrogate / N
    kl = np.where(av, gaussian_kl(ref["mean_old"], ref["std_old"], ref["mean_new"], ref["std_new"]), 0.0).sum(-1)
    entropy = np.where(av, stats.norm(0, ref["std_new"]).entropy(), 0.0).sum(-1)
    betas = np.asarray(betas, np.float64)
    objective = np.array([surrogate[..., i].mean() - betas[i, 0] * np.sqrt(kl[..., i] + cfg.kl_floor).mean()
                          - betas[i, 1] * kl[..., i].mean() + cfg.ent_coef * entropy[..., i].mean() for i in range(N)])
    v_err = (values - ref["targets"]) ** 2
    if cfg.value_clip > 0:
        v_err = np.maximum(v_err, (np.clip(values, -cfg.value_clip, cfg.value_clip) - ref["targets"]) ** 2)
    return (0.5 * v_err.mean(axis=(0, 1)) - objective).sum(), ratio, kl


@pytest.mark.parametrize("algo_name,betas", [
    ("dpo", [[0.01, 0.01], [0.01, 0.01]]),
    ("dpo", [[0.7, 0.3], [1.5, 2.0]]),
    ("ippo", [[0.0, 0.0], [0.0, 0.0]]),
    ("ippo_kl", [[0.0, 0.4], [0.0, 0.9]]),
])
def test_gaussian_loss_matches_numpy(params, algo_name, betas):
    algo = make(algo_name)
    traj, ref = build(algo, params)
    values = np.stack([np.asarray(algo.apply(params, algo.init_carries(E), traj["obs"][t], traj["obs"][t],
                                             traj["avail"][t], traj["reset"][t])[2], np.float64) for t in range(T)])
    total, _ = algo.loss(params, jnp.asarray(betas, jnp.float32), algo.init_carries(E), traj,
                         jnp.asarray(ref["adv"], jnp.float32), jnp.asarray(ref["targets"], jnp.float32))
    expected, ratio, kl = expected_loss(algo.config, betas, ref, values)
    assert kl.max() > 0.05 and kl[2, 1, 0] == 0.0 and ratio[2, 1, 0] == 1.0
    assert np.any(ratio > 1.2) and np.any(ratio < 0.8)
    np.testing.assert_allclose(float(total), expected, rtol=2e-5, atol=2e-5)


def test_initial_policy_and_actions(params):
    """The log-std starts at log_std_init (std 1); sampled actions are float vectors, greedy ones the mean."""
    algo = make()
    obs, avail = jnp.ones((4, N, 1)), jnp.ones((4, N, A), bool)
    _, head, _ = algo.apply(params, algo.init_carries(4), obs, obs, avail, jnp.zeros(4, bool))
    np.testing.assert_array_equal(head[..., 1], 0.0)
    _, greedy = algo.act(params, algo.init_carries(4), obs, avail, jnp.zeros(4, bool))
    np.testing.assert_array_equal(greedy, head[..., :1])
    _, sampled = algo.act(params, algo.init_carries(4), obs, avail, jnp.zeros(4, bool), jax.random.PRNGKey(1),
                          greedy=False)
    assert sampled.dtype == jnp.float32 and sampled.shape == (4, N, A) and float(jnp.std(sampled)) > 0.3
    dep = make(state_dependent_std=True, log_std_init=-0.5)
    p = dep.init(jax.random.PRNGKey(0)).params
    _, head, _ = dep.apply(p, dep.init_carries(4), obs, obs, avail, jnp.zeros(4, bool))
    np.testing.assert_allclose(head[..., 1], -0.5, atol=0.05)  # a near-zero kernel on top of the -0.5 bias
