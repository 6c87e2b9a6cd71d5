"""The DPO learner's pieces (dpo.md eq. 20-21) against numbers worked by hand or in NumPy.

The network is not under test: its outputs on a hand-built trajectory are read back through
``DPO.apply`` and the objective is then recomputed in float64 NumPy from the paper's formulas.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
from jmarl.distributions import categorical_entropy, categorical_kl
from jmarl.masks import mask_actions

T, E, N, A = 3, 2, 2, 2  # hallway: 2 agents, 2 actions
SMALL = dict(num_envs=E, num_steps=T, hidden_dim=8, recurrent=False)


def make(algo="dpo", **overrides):
    return jmarl.make_algorithm(jmarl.make_config(algo, "hallway", **SMALL, **overrides))


@pytest.fixture(scope="module")
def base():
    algo = make()
    state = algo.init(jax.random.PRNGKey(0))
    return algo, state.params, state.betas


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# ----- categorical KL and entropy --------------------------------------------------------------


def test_kl_and_entropy_by_hand():
    """p = [0.5, 0.5], q = [0.9, 0.1]: KL(p||q) = ln(5/3), KL(q||p) = 0.9 ln 1.8 - 0.1 ln 5.

    Entropies: H(p) = ln 2, H(q) = -0.9 ln 0.9 + 0.1 ln 10.
    """
    p, q = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.9, 0.1]))
    np.testing.assert_allclose(categorical_kl(p, q), math.log(5 / 3), rtol=1e-6)
    np.testing.assert_allclose(categorical_kl(q, p), 0.9 * math.log(1.8) - 0.1 * math.log(5), rtol=1e-6)
    np.testing.assert_allclose(categorical_kl(q, q), 0.0, atol=1e-7)
    np.testing.assert_allclose(categorical_entropy(p), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(categorical_entropy(q), -0.9 * math.log(0.9) + 0.1 * math.log(10), rtol=1e-6)


def test_masked_action_contributes_nothing_and_stays_finite():
    """A third action masked the way the network masks it (logit -1e9) changes neither KL nor entropy, nor gradients."""
    old = jax.nn.log_softmax(jnp.array([math.log(0.9), math.log(0.1), -1e9]))
    new_logits = jnp.array([0.3, 0.3, -1e9])
    new = jax.nn.log_softmax(new_logits)
    np.testing.assert_allclose(categorical_kl(old, new), 0.9 * math.log(1.8) - 0.1 * math.log(5), rtol=1e-5)
    np.testing.assert_allclose(categorical_entropy(new), math.log(2), rtol=1e-6)
    grad = jax.grad(lambda z: categorical_kl(old, jax.nn.log_softmax(z)) + categorical_entropy(jax.nn.log_softmax(z)))
    g = grad(new_logits)
    assert np.all(np.isfinite(g))
    assert g[2] == 0.0


def test_distrax_categorical_agrees_on_masked_logits():
    """distrax (a dev-only dependency) is the library form of these functions. On logits masked with
    MASKED it agrees to float32 rounding and gives no NaN, but not bit for bit: it log-softmaxes again inside
    kl_divergence and entropy, so jmarl keeps its own (bitwise-stable training numbers)."""
    distrax = pytest.importorskip("distrax")
    rng = np.random.default_rng(0)
    avail = jnp.asarray(rng.random((256, 7)) < 0.5).at[:, 0].set(True)
    old_logits, new_logits = (mask_actions(jnp.asarray(3 * rng.normal(size=(256, 7)), jnp.float32), avail)
                              for _ in range(2))
    old, new = jax.nn.log_softmax(old_logits), jax.nn.log_softmax(new_logits)
    d_old, d_new = distrax.Categorical(logits=old_logits), distrax.Categorical(logits=new_logits)
    ours = {"kl": categorical_kl(old, new), "entropy": categorical_entropy(new)}
    theirs = {"kl": d_old.kl_divergence(d_new), "entropy": d_new.entropy()}
    for k in ours:
        assert np.isfinite(ours[k]).all() and np.isfinite(theirs[k]).all()
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-5)
    actions = jnp.zeros(256, jnp.int32)  # action 0 is available everywhere
    np.testing.assert_array_equal(d_new.log_prob(actions), new[:, 0])


# ----- eq. 21: adapting the betas --------------------------------------------------------------

# KL per state [T=2, E=2, N=3] (one more agent than hallway: adapt_betas only reads the shapes).
# With d_target = 0.01 and delta = 1.5 the dead band is (0.00667, 0.015):
# agent 0 mean 0.02 (above), agent 1 mean 0.005 (below), agent 2 mean 0.01 (inside).
KL_STATES = np.stack([[[0.0, 0.04], [0.01, 0.03]],
                      [[0.002, 0.008], [0.004, 0.006]],
                      [[0.01, 0.01], [0.01, 0.01]]], axis=-1).astype(np.float32)
BETAS = np.array([[0.01, 0.01], [0.02, 0.03], [0.5, 0.7]], np.float32)


def adapt(algo, kl=KL_STATES, betas=BETAS):
    return np.asarray(algo.adapt_betas(jnp.asarray(betas), jnp.asarray(kl)))


def test_adapt_betas_per_agent_default():
    """Eq. 21 per agent: x2 above d_target*delta, /2 below d_target/delta, unchanged in the dead band."""
    algo = make()
    assert (algo.config.d_target, algo.config.delta, algo.config.omega) == (0.01, 1.5, 2.0)
    expected = [[0.02, 0.02], [0.01, 0.015], [0.5, 0.7]]
    np.testing.assert_allclose(adapt(algo), expected, rtol=1e-6)


def test_adapt_betas_other_delta_omega():
    """delta = 3, omega = 4: band (0.00333, 0.03) holds all three agents; a mean of 0.05 gives x4, 0.001 gives /4."""
    algo = make(delta=3.0, omega=4.0)
    np.testing.assert_allclose(adapt(algo), BETAS, rtol=1e-6)
    kl = np.broadcast_to(np.array([0.05, 0.001, 0.01], np.float32), (2, 2, 3))
    np.testing.assert_allclose(adapt(algo, kl), [[0.04, 0.04], [0.005, 0.0075], [0.5, 0.7]], rtol=1e-6)


def test_adapt_betas_shared():
    """beta_shared: one decision from the mean over agents, (0.02 + 0.005 + 0.05) / 3 = 0.025 > 0.015, so all x2."""
    algo = make(beta_shared=True)
    kl = KL_STATES.copy()
    kl[..., 2] = 0.05
    np.testing.assert_allclose(adapt(algo, kl), 2 * BETAS, rtol=1e-6)
    np.testing.assert_allclose(adapt(algo), BETAS, rtol=1e-6)  # mean 0.035 / 3 = 0.0117: dead band


def test_adapt_betas_sqrt_target():
    """sqrt_target: beta1 follows mean sqrt(KL + 1e-6) against sqrt(d_target) = 0.1 (band 0.0667..0.15), beta2 the KL.

    agent 0, KL 0, 0.04, 0, 0.04: mean 0.02 (beta2 x2), mean sqrt (0.001 + 0.2) / 2 = 0.1005 (beta1 kept);
    agent 1, KL 0, 0, 0, 0.04: mean 0.01 (beta2 kept), mean sqrt (3 * 0.001 + 0.2) / 4 = 0.0508 (beta1 / 2;
    the square root of the mean KL, 0.1, would have kept it); agent 2, KL 0.03: both x2 (sqrt 0.173).
    """
    kl = np.stack([[[0.0, 0.04], [0.0, 0.04]], [[0.0, 0.0], [0.0, 0.04]], [[0.03, 0.03], [0.03, 0.03]]],
                  axis=-1).astype(np.float32)
    expected = [[0.01, 0.02], [0.01, 0.03], [1.0, 1.4]]
    np.testing.assert_allclose(adapt(make(sqrt_target=True), kl), expected, rtol=1e-6)


def test_adapt_betas_clamped():
    """beta_min = 1e-3, beta_max = 1: 0.6, 0.9 doubled clamp to 1; 0.0015, 0.002 halved clamp up to 1e-3."""
    algo = make(beta_min=1e-3, beta_max=1.0)
    betas = np.array([[0.6, 0.9], [0.0015, 0.002], [0.5, 0.5]], np.float32)
    np.testing.assert_allclose(adapt(algo, betas=betas), [[1.0, 1.0], [1e-3, 1e-3], [0.5, 0.5]], rtol=1e-6)


@pytest.mark.parametrize("beta_min", [0.0, 1e-3])
def test_adapt_betas_without_sqrt_term_keeps_beta1_zero(beta_min):
    """use_sqrt=False: beta1 stays 0 (even against beta_min or a stray nonzero value) while beta2 adapts."""
    algo = make(use_sqrt=False, beta_min=beta_min)
    out = adapt(algo)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_allclose(out[:, 1], [0.02, 0.015, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(adapt(make("dpo_no_kl"))[:, 1], 0.0)


def test_author_code_variant():
    """dpo_author: betas from 1.0, one shared decision, beta1 against sqrt(d_target), clamped to [1e-3, 1e3].

    KL 0.004, 0.004, 0.011 for agents 0-2: the mean 0.00633 is below 0.00667, so every beta2 halves; the
    mean sqrt(KL + 1e-6), (0.06325 + 0.06325 + 0.10489) / 3 = 0.0771, is inside sqrt's band (0.0667, 0.15),
    so every beta1 is kept. Per agent, agent 2 (0.011) would have kept its beta2 and agents 0-1
    (sqrt 0.063) halved their beta1. The clamp takes 1500 down to 1e3 and 0.00075 up to 1e-3.
    """
    algo = make("dpo_author")
    cfg = algo.config
    assert (cfg.ent_coef, cfg.inv_n, cfg.layer_norm, cfg.centralised_critic) == (0.01, False, True, False)
    np.testing.assert_array_equal(algo.init(jax.random.PRNGKey(0)).betas, np.ones((N, 2)))
    kl = np.broadcast_to(np.array([0.004, 0.004, 0.011], np.float32), (2, 2, 3))
    betas = np.array([[1.0, 1.0], [1500.0, 0.0015], [0.3, 0.5]], np.float32)
    np.testing.assert_allclose(adapt(algo, kl, betas), [[1.0, 0.5], [1000.0, 1e-3], [0.3, 0.25]], rtol=1e-6)


def test_adapt_betas_disabled_for_ippo():
    """IPPO does not adapt (adapt_betas=False): betas come back unchanged."""
    np.testing.assert_array_equal(adapt(make("ippo")), BETAS)


def test_initial_betas(base):
    """Both betas start at the paper's beta_init = 0.01 for every agent."""
    _, _, betas = base
    np.testing.assert_allclose(betas, np.full((N, 2), 0.01), rtol=1e-6)


# ----- eq. 20: the objective -------------------------------------------------------------------


def build_inputs(algo, params, seed=0, same_policy=False):
    """A hand-built trajectory in DPO.collect's layout, with the network's own outputs read back.

    One state (t=1, env 0, agent 1) has action 1 masked. Old log-probs are the new ones with the
    logits perturbed (so KL > 0 and ratios leave [0.8, 1.2]) unless ``same_policy``.
    """
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, E, N, 10)).astype(np.float32)
    avail = np.ones((T, E, N, A), bool)
    avail[1, 0, 1, 1] = False
    reset = np.zeros((T, E), bool)
    reset[0] = True
    actions = rng.integers(0, A, size=(T, E, N)).astype(np.int32)
    actions[1, 0, 1] = 0
    carries0 = algo.init_carries(E)
    logits, values = [], []
    for t in range(T):
        _, lg, v = algo.apply(params, carries0, jnp.asarray(obs[t]), jnp.asarray(obs[t]), jnp.asarray(avail[t]),
                              jnp.asarray(reset[t]))
        logits.append(np.asarray(lg, np.float64))
        values.append(np.asarray(v, np.float64))
    logits, values = np.stack(logits), np.stack(values)  # [T, E, N, A], [T, E, N]
    logp_new = np_log_softmax(logits)
    if same_policy:
        logp_old = logp_new
    else:
        logp_old = np_log_softmax(logits + np.where(avail, 1.5 * rng.normal(size=logits.shape), 0.0))
    old_values = values + rng.choice([-0.5, -0.1, 0.1, 0.5], size=values.shape)  # in and out of the 0.2 clip
    traj = dict(obs=obs, critic_obs=obs, avail=avail, reset=reset, actions=actions,
                logp=logp_old.astype(np.float32), values=old_values.astype(np.float32),
                next_values=rng.normal(size=(T, E, N)).astype(np.float32),
                reward=rng.normal(size=(T, E)).astype(np.float32), terminated=np.zeros((T, E), bool),
                done=np.zeros((T, E), bool), ep_return=np.zeros((T, E), np.float32))
    adv = rng.normal(size=(T, E, N))
    targets = values + rng.normal(size=(T, E, N))
    ref = dict(logp_new=logp_new, logp_old=logp_old, values=values, old_values=old_values, adv=adv,
               targets=targets, actions=actions)
    return carries0, jax.tree.map(jnp.asarray, traj), ref


def expected_loss(cfg, betas, ref, n=N):
    """Eq. 20 per agent, negated and summed over agents, plus the clipped value loss; float64."""
    lp_new, lp_old, act = ref["logp_new"], ref["logp_old"], ref["actions"][..., None]
    new_a = np.take_along_axis(lp_new, act, -1)[..., 0]
    old_a = np.take_along_axis(lp_old, act, -1)[..., 0]
    ratio, adv = np.exp(new_a - old_a), ref["adv"]
    surrogate = ratio * adv
    if cfg.clip > 0:
        surrogate = np.minimum(surrogate, np.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
    if cfg.inv_n:
        surrogate = surrogate / n
    p_old, p_new = np.exp(lp_old), np.exp(lp_new)
    kl = (p_old * (lp_old - lp_new)).sum(-1)
    entropy = -(p_new * lp_new).sum(-1)
    betas = np.asarray(betas, np.float64)
    objective = np.array([surrogate[..., i].mean() - betas[i, 0] * np.sqrt(kl[..., i] + cfg.kl_floor).mean()
                          - betas[i, 1] * kl[..., i].mean() + cfg.ent_coef * entropy[..., i].mean()
                          for i in range(n)])
    v, old_v, tgt = ref["values"], ref["old_values"], ref["targets"]
    v_err = (v - tgt) ** 2
    if cfg.value_clip > 0:
        v_err = np.maximum(v_err, (old_v + np.clip(v - old_v, -cfg.value_clip, cfg.value_clip) - tgt) ** 2)
    value_loss = 0.5 * v_err.mean(axis=(0, 1))
    stats = dict(value_loss=value_loss.mean(), kl=kl.mean(), entropy=entropy.mean())
    return (value_loss - objective).sum(), stats, ratio, kl


@pytest.mark.parametrize("algo_name,betas", [
    ("dpo", [[0.01, 0.01], [0.01, 0.01]]),  # defaults: 1/N surrogate, both KL terms at beta_init
    ("dpo", [[0.7, 0.3], [1.5, 2.0]]),  # large, per-agent betas
    ("ippo", [[0.0, 0.0], [0.0, 0.0]]),  # PPO clip 0.2, no 1/N, no KL terms
    ("ippo_kl", [[0.0, 0.4], [0.0, 0.9]]),  # KL term only, no 1/N
])
def test_loss_matches_numpy(base, algo_name, betas):
    """DPO.loss equals -(1/N ratio*A - b1 E sqrt(KL+floor) - b2 E KL + c_ent H) + 0.5 E clipped (V - y)^2, summed."""
    _, params, _ = base
    algo = make(algo_name)
    carries0, traj, ref = build_inputs(algo, params)
    total, stats = algo.loss(params, jnp.asarray(betas, jnp.float32), carries0, traj,
                             jnp.asarray(ref["adv"], jnp.float32), jnp.asarray(ref["targets"], jnp.float32))
    expected, expected_stats, ratio, kl = expected_loss(algo.config, betas, ref)
    # the data exercise what the formulas distinguish
    assert kl.min() >= 0 and kl.max() > 0.05 and kl[1, 0, 1] == 0.0
    assert np.any(ratio > 1.2) and np.any(ratio < 0.8)
    np.testing.assert_allclose(float(total), expected, rtol=2e-5, atol=2e-5)
    for k, v in expected_stats.items():
        np.testing.assert_allclose(float(stats[k]), v, rtol=2e-5, atol=2e-6, err_msg=k)


def test_loss_terms_are_what_they_claim(base):
    """Switching one setting moves the loss by exactly that term: 1/N, the sqrt and KL terms, the entropy, the clip."""
    _, params, _ = base
    algo = make(ent_coef=0.01)
    carries0, traj, ref = build_inputs(algo, params, seed=3)
    betas = np.array([[0.2, 0.5], [0.3, 0.0]])

    def total(cfg, b=betas):
        learner = jmarl.make_algorithm(cfg)
        out, _ = learner.loss(params, jnp.asarray(b, jnp.float32), carries0, traj,
                              jnp.asarray(ref["adv"], jnp.float32), jnp.asarray(ref["targets"], jnp.float32))
        return float(out)

    cfg = algo.config
    lp_new, lp_old, act = ref["logp_new"], ref["logp_old"], ref["actions"][..., None]
    ratio = np.exp(np.take_along_axis(lp_new, act, -1) - np.take_along_axis(lp_old, act, -1))[..., 0]
    surr = (ratio * ref["adv"]).mean(axis=(0, 1)).sum()
    kl = (np.exp(lp_old) * (lp_old - lp_new)).sum(-1)
    sqrt_term = (betas[:, 0] * np.sqrt(kl + cfg.kl_floor).mean(axis=(0, 1))).sum()
    kl_term = (betas[:, 1] * kl.mean(axis=(0, 1))).sum()
    ent = -(np.exp(lp_new) * lp_new).sum(-1).mean(axis=(0, 1)).sum()
    base_total = total(cfg)
    tol = dict(rtol=1e-5, atol=2e-5)
    # without 1/N the surrogate counts N times: the loss drops by (1 - 1/N) * surrogate
    np.testing.assert_allclose(total(dataclasses.replace(cfg, inv_n=False)), base_total - surr / 2, **tol)
    np.testing.assert_allclose(total(cfg, np.zeros((2, 2))), base_total - sqrt_term - kl_term, **tol)
    np.testing.assert_allclose(total(dataclasses.replace(cfg, ent_coef=0.0)), base_total + 0.01 * ent, **tol)


def test_entropy_bonus_defaults():
    """Eq. 20 has no entropy term, so DPO and its ablations default to none; IPPO and IPPO-KL keep MAPPO's 0.01.
    (DPO with 0.01 weighs the entropy N times more than IPPO does against its 1/N surrogate.)"""
    coefs = {name: jmarl.make_config(name, "stochastic_game").ent_coef
             for name in ("dpo", "dpo_no_sqrt", "dpo_no_kl", "ippo", "ippo_kl", "dpo_author")}
    assert coefs == {"dpo": 0.0, "dpo_no_sqrt": 0.0, "dpo_no_kl": 0.0, "ippo": 0.01, "ippo_kl": 0.01,
                     "dpo_author": 0.01}
    assert jmarl.make_config("ippo", "stochastic_game", ent_coef=0.05).ent_coef == 0.05  # --set still wins


def test_sqrt_kl_gradient_finite_at_equal_policies(base):
    """When old == new (KL = 0) the floor keeps d sqrt(KL + floor) finite: the loss gradient is finite everywhere."""
    _, params, _ = base
    algo = make()
    carries0, traj, ref = build_inputs(algo, params, same_policy=True)
    betas = jnp.array([[5.0, 1.0], [5.0, 1.0]])
    grads, stats = jax.jit(jax.grad(algo.loss, has_aux=True))(params, betas, carries0, traj,
                                                     jnp.asarray(ref["adv"], jnp.float32),
                                                     jnp.asarray(ref["targets"], jnp.float32))
    assert abs(float(stats["kl"])) < 1e-6
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))
    # the term alone: KL has a zero gradient at its minimum, so d sqrt(KL + floor) / d logits is ~0, not NaN
    logits = jnp.array([0.4, -0.2])
    old = jax.lax.stop_gradient(jax.nn.log_softmax(logits))
    g = jax.grad(lambda z: jnp.sqrt(categorical_kl(old, jax.nn.log_softmax(z)) + algo.config.kl_floor))(logits)
    assert np.all(np.isfinite(g)) and np.abs(g).max() < 1e-3
