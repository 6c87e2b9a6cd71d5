"""QTRAN-base: the td, opt and nopt-min losses against a NumPy reference built step by step (Python-loop GRU
unrolls, greedy actions over available actions by loops, one-step targets with terminal and padded steps),
the nopt min hand-worked, the gradient stops of pymarl's learner (Q_jt learns from the td term only, V_jt
from opt and nopt only), defaults, and a short compiled training run on QTRAN's matrix game."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmarl import replay
from jmarl.algos.qtran import ENV_DEFAULTS, QTRAN, VARIANTS, QTRANConfig, nopt_error, opt_error
from jmarl.config import ConfigError, validate
from jmarl.core import make_chunk, plan

SMALL = dict(algo="qtran", env="matrix_qtran", hidden_dim=8, mixing_embed_dim=6, num_envs=2, batch_size=4,
             buffer_size=8, gamma=0.9)


def make(**overrides):
    return QTRAN(validate(QTRANConfig(**{**SMALL, **overrides})))


# ----- defaults ---------------------------------------------------------------------------------


def test_defaults_are_pymarls_qtran():
    cfg = validate(QTRANConfig(algo="qtran", env="matrix_qtran"))
    assert (cfg.opt_loss, cfg.nopt_min_loss, cfg.mixing_embed_dim, cfg.qtran_arch, cfg.network_size) == (
        1.0, 0.1, 64, "qtran_paper", "small")
    assert (cfg.td_lambda, cfg.double_q, cfg.lr, cfg.batch_size, cfg.buffer_size) == (0.0, True, 5e-4, 128, 5_000)
    assert (cfg.eps_start, cfg.eps_finish, cfg.eps_anneal_steps, cfg.target_update_episodes) == (1.0, 0.05, 100_000,
                                                                                                 200)
    assert (cfg.hidden_dim, cfg.gamma, cfg.max_grad_norm, cfg.num_envs) == (64, 0.99, 10.0, 8)
    assert VARIANTS == {"qtran": {}} and ENV_DEFAULTS == {}
    with pytest.raises(ConfigError, match="qtran_arch must be one of"):
        validate(dataclasses.replace(cfg, qtran_arch="qmix"))
    with pytest.raises(ConfigError, match="nopt_min_loss must be >= 0"):
        validate(dataclasses.replace(cfg, nopt_min_loss=-1.0))
    assert {"opt_loss", "nopt_min_loss", "lr", "gamma"} <= set(QTRAN.sweepable)
    algo = make()
    params = algo.init_params(jax.random.PRNGKey(0))
    assert set(params) == {"agent", "joint_q", "value"}
    # the acting agent is the core's AgentQNetwork on params["agent"]
    (_, actions), _ = algo.act(params, algo.init_carry(3), jnp.zeros((3, 2, 1)), jnp.ones((3, 2, 3), bool),
                               jnp.ones(3, bool))
    assert actions.shape == (3, 2)


# ----- the hand-built batch and the NumPy reference ---------------------------------------------


def tiny_batch():
    """B=2, T=3, N=2, A=3: episode 0 runs 3 steps and is truncated (bootstraps from its last observation),
    episode 1 terminates after 2 steps; its third step is padding with no available action."""
    rng = np.random.default_rng(4)
    b, t, n, a = 2, 3, 2, 3
    avail = np.ones((b, t + 1, n, a), bool)
    avail[0, 0, 0, 2] = avail[0, 1, 1, 0] = avail[0, 3, 0, 1] = avail[1, 1, 0, 0] = avail[1, 2, 1, 1] = False
    avail[1, 3] = False  # padded observation
    actions = np.array([[[0, 1], [2, 2], [1, 0]], [[1, 2], [2, 0], [0, 0]]], np.int32)
    mask = np.array([[True, True, True], [True, True, False]])
    terminated = np.array([[False, False, False], [False, True, False]])
    return replay.Episodes(obs=jnp.asarray(rng.normal(size=(b, t + 1, n, 1)), jnp.float32),
                           state=jnp.asarray(rng.normal(size=(b, t + 1, 1)), jnp.float32),
                           avail=jnp.asarray(avail), actions=jnp.asarray(actions),
                           reward=jnp.asarray([[1.0, -2.0, 0.5], [3.0, 8.0, 100.0]], jnp.float32),
                           terminated=jnp.asarray(terminated), mask=jnp.asarray(mask))


def random_params(algo, seed):
    shapes = jax.eval_shape(algo.init_params, jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), jnp.float32), shapes)


def unroll(algo, agent_params, batch):
    """(Q-values, GRU outputs) [B, T+1, N, .] by a Python loop over time, inputs built in NumPy."""
    obs, actions = np.asarray(batch.obs), np.asarray(batch.actions)
    b, t1, n, _ = obs.shape
    step = jax.jit(algo.agent.apply)
    carry, qs, hs = jnp.zeros((b, n, algo.agent.hidden_dim)), [], []
    for t in range(t1):
        last = np.zeros((b, n, algo.num_actions), np.float32)
        if t > 0:
            for i in range(b):
                for j in range(n):
                    last[i, j, actions[i, t - 1, j]] = 1
        x = np.concatenate([obs[:, t], last, np.broadcast_to(np.eye(n), (b, n, n))], -1).astype(np.float32)
        carry, q = step(agent_params, carry, jnp.asarray(x), jnp.zeros((b, n), bool))
        qs.append(np.asarray(q))
        hs.append(np.asarray(carry))
    return np.stack(qs, 1).astype(np.float64), np.stack(hs, 1)


def greedy_loop(q, avail):
    """Argmax over the available actions of one agent's Q-values (0 when none is available)."""
    best, best_a = -np.inf, 0
    for a in range(len(q)):
        if avail[a] and q[a] > best:
            best, best_a = q[a], a
    return best_a


def reference_terms(algo, params, target_params, batch):
    cfg = algo.config
    avail, actions, state = np.asarray(batch.avail), np.asarray(batch.actions), np.asarray(batch.state)
    reward, terminated, mask = np.asarray(batch.reward), np.asarray(batch.terminated), np.asarray(batch.mask)
    b, t_len, n = actions.shape
    joint_apply, value_apply = jax.jit(algo.joint_q.apply), jax.jit(algo.value.apply)

    def q_jt(p, s, h, u):
        onehot = np.zeros((n, algo.num_actions), np.float32)
        for j in range(n):
            onehot[j, u[j]] = 1
        out = joint_apply(p["joint_q"], jnp.asarray(s[None]), jnp.asarray(h[None]), jnp.asarray(onehot[None]))
        return float(out[0])

    q, h = unroll(algo, params["agent"], batch)
    q_t, h_t = unroll(algo, target_params["agent"], batch)
    sums = {"td_loss": 0.0, "opt_loss": 0.0, "nopt_loss": 0.0}
    slacks = []
    for i in range(b):
        for t in range(t_len):
            if not mask[i, t]:
                continue
            nxt = [greedy_loop((q if cfg.double_q else q_t)[i, t + 1, j], avail[i, t + 1, j]) for j in range(n)]
            boot = 0.0 if terminated[i, t] else q_jt(target_params, state[i, t + 1], h_t[i, t + 1], nxt)
            y = reward[i, t] + cfg.gamma * boot
            taken = actions[i, t]
            q_taken = q_jt(params, state[i, t], h[i, t], taken)
            sums["td_loss"] += (q_taken - y) ** 2
            v = float(value_apply(params["value"], jnp.asarray(state[i, t][None]))[0])
            best = [greedy_loop(q[i, t, j], avail[i, t, j]) for j in range(n)]
            opt = sum(q[i, t, j, best[j]] for j in range(n)) - q_jt(params, state[i, t], h[i, t], best) + v
            sums["opt_loss"] += opt ** 2
            slack = sum(q[i, t, j, taken[j]] for j in range(n)) - q_taken + v
            slacks.append(slack)
            sums["nopt_loss"] += min(slack, 0.0) ** 2
    count = mask.sum()
    out = {k: s / count for k, s in sums.items()}
    out["loss"] = out["td_loss"] + cfg.opt_loss * out["opt_loss"] + cfg.nopt_min_loss * out["nopt_loss"]
    return out, np.asarray(slacks)


CASES = [dict(qtran_arch="qtran_paper"), dict(qtran_arch="qtran_paper", double_q=False, network_size="big"),
         dict(qtran_arch="coma_critic", opt_loss=0.7, nopt_min_loss=0.3)]


def shift_value(algo, params, delta):
    """params with V_jt's output moved by ``delta`` (its head's bias)."""
    head = f"Dense_{2 if algo.config.network_size == 'small' else 3}"
    bias = params["value"]["params"]["MLP_0"][head]["bias"]
    return {**params, "value": {"params": {"MLP_0": {**params["value"]["params"]["MLP_0"],
                                                     head: {**params["value"]["params"]["MLP_0"][head],
                                                            "bias": bias + delta}}}}}


def centred_case(algo):
    """Random online and target parameters and the tiny batch, V_jt shifted so that the nopt slacks of the
    valid steps straddle 0 (2 negative, 3 positive)."""
    params, target_params = random_params(algo, 1), random_params(algo, 2)
    batch = tiny_batch()
    _, slacks = reference_terms(algo, params, target_params, batch)
    s = np.sort(slacks)
    return shift_value(algo, params, -0.5 * (s[1] + s[2])), target_params, batch


@pytest.mark.parametrize("overrides", CASES)
def test_losses_match_a_numpy_reference(overrides):
    algo = make(**overrides)
    params, target_params, batch = centred_case(algo)
    hparams = algo.hparams()
    loss, stats = jax.jit(algo.loss)(params, target_params, batch, hparams, jax.random.PRNGKey(0))
    ref, slacks = reference_terms(algo, params, target_params, batch)
    assert (slacks < 0).any() and (slacks > 0).any()  # both branches of the nopt min occur
    for k in ("td_loss", "opt_loss", "nopt_loss"):
        np.testing.assert_allclose(float(stats[k]), ref[k], rtol=1e-4, err_msg=k)
    np.testing.assert_allclose(float(loss), ref["loss"], rtol=1e-4)
    assert ref["nopt_loss"] > 0


def test_padded_steps_do_not_count():
    """Whatever a padded step holds (reward, actions, availability) leaves the loss unchanged."""
    algo = make()
    params, target_params = random_params(algo, 1), random_params(algo, 2)
    batch = tiny_batch()
    changed = batch.replace(reward=batch.reward.at[1, 2].set(-1e6), actions=batch.actions.at[1, 2].set(2),
                            terminated=batch.terminated.at[1, 2].set(True))
    f = jax.jit(algo.loss)
    a, _ = f(params, target_params, batch, algo.hparams(), jax.random.PRNGKey(0))
    b, _ = f(params, target_params, changed, algo.hparams(), jax.random.PRNGKey(0))
    assert float(a) == float(b)


# ----- the nopt min, hand-worked ----------------------------------------------------------------


def test_nopt_min_hand_worked():
    """Slack sum Q_i - Q_jt + V: 3 - 2 + 0.5 = 1.5 > 0 gives 0; 1 - 5 + 1 = -3 gives -3 (loss 9); 0 gives 0."""
    q_sum, q_jt, v = jnp.asarray([3.0, 1.0, 2.0]), jnp.asarray([2.0, 5.0, 3.0]), jnp.asarray([0.5, 1.0, 1.0])
    np.testing.assert_allclose(nopt_error(q_sum, q_jt, v), [0.0, -3.0, 0.0])
    np.testing.assert_allclose(jnp.square(nopt_error(q_sum, q_jt, v)), [0.0, 9.0, 0.0])
    np.testing.assert_allclose(opt_error(q_sum, q_jt, v), [1.5, -3.0, 0.0])
    # gradients: none through Q_jt; through sum Q_i and V only where the slack is negative
    nopt_loss = lambda a, b, c: jnp.square(nopt_error(a, b, c)).sum()  # noqa: E731
    g_sum, g_jt, g_v = jax.grad(nopt_loss, argnums=(0, 1, 2))(q_sum, q_jt, v)
    np.testing.assert_allclose(g_sum, [0.0, -6.0, 0.0])
    np.testing.assert_allclose(g_v, [0.0, -6.0, 0.0])
    np.testing.assert_allclose(g_jt, 0.0)
    g_jt = jax.grad(lambda b: opt_error(q_sum, b, v).sum())(q_jt)
    np.testing.assert_allclose(g_jt, 0.0)


# ----- gradient stops ---------------------------------------------------------------------------


def grad_norms(algo, params, target_params, batch, term):
    def f(p):
        return algo.terms(p, target_params, batch, algo.hparams())[term]

    grads = jax.jit(jax.grad(f))(params)
    return {k: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(g))) for k, g in grads.items()}


@pytest.mark.parametrize("arch", ["qtran_paper", "coma_critic"])
def test_gradient_stops(arch):
    """pymarl's: Q_jt is detached in opt and nopt (it learns from td only), V_jt is absent from td; the agents
    learn from opt and nopt, and from td through the hidden states Q_jt reads (qtran_paper only)."""
    algo = make(qtran_arch=arch)
    params, target_params, batch = centred_case(algo)
    for term in ("opt_loss", "nopt_loss"):
        g = grad_norms(algo, params, target_params, batch, term)
        assert g["joint_q"] == 0.0, term
        assert g["value"] > 0 and g["agent"] > 0, term
    g = grad_norms(algo, params, target_params, batch, "td_loss")
    assert g["value"] == 0.0 and g["joint_q"] > 0
    assert (g["agent"] > 0) == (arch == "qtran_paper")


# ----- a short compiled run ---------------------------------------------------------------------


def test_training_runs_on_qtrans_matrix():
    """make_train's program without the registry: init, then chunks of compiled updates and an evaluation."""
    algo = make(num_envs=4, batch_size=8, buffer_size=16, total_steps=48, eval_every=6, eval_episodes=4,
                target_update_episodes=8, eps_anneal_steps=40)
    p = plan(algo)
    chunk = make_chunk(algo, p.updates_per_chunk)

    def train(key):
        return jax.lax.scan(lambda s, _: chunk(s), algo.init(key), None, p.num_chunks)

    state, metrics = jax.jit(train)(jax.random.PRNGKey(1))
    assert (p.num_chunks, p.updates_per_chunk) == (2, 6) and int(state.env_steps) == 48
    for k in ("opt_loss", "nopt_loss", "td_loss", "td_abs", "q_taken", "target", "value", "grad_norm"):
        assert f"train/{k}" in metrics, k
    for k, v in metrics.items():
        if k.startswith("nonfinite/"):
            assert (np.asarray(v) == -1).all(), k
        else:
            assert np.isfinite(np.asarray(v)).all(), k
    # pymarl2's one gradient step per 8 episodes: 4 one-step episodes per update, so a step every second update
    # from the second (the first whose buffer holds a batch): updates 2, 4, ..., 12
    assert float(metrics["train/gradient_steps"][-1]) == 0.5 and int(state.grad_steps) == 6
    assert int(state.episodes) == 48
