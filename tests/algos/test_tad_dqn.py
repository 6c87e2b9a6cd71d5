"""TAD-DQN: the sequential greedy chain against brute force (step-by-step argmax of the network's Q, the joint
argmax of hand-set sequential Qs on QTRAN's matrix and TAD's ten matrices, where independent greedy actions
miss), epsilon-greedy agents conditioning on the actions drawn before them, the loss against a Python-loop
reference (virtual targets, the last agent's bootstrap at the next env step, terminal and padded steps,
gamma^(1/n), double Q, TD(lambda) over virtual steps, the distillation losses) for 2 and 3 agents, the
decentralised greedy policy, and a short compiled training run; under -m slow, learning QTRAN's matrix."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.matrix import MatrixGame
from jmarl import replay
from jmarl.algos.tad_dqn import ENV_DEFAULTS, TADDQN, VARIANTS, TADDQNConfig, sequential_chain
from jmarl.attention import TADNet
from jmarl.config import ConfigError, validate
from jmarl.core import make_chunk, plan

SMALL = dict(algo="tad_dqn", env="matrix_qtran", hidden_dim=8, attn_heads=2, attn_dim=3, num_envs=2, batch_size=4,
             buffer_size=8, gamma=0.8)
TABLE3 = np.arange(27, dtype=np.float32).reshape(3, 3, 3) % 7 - 3.0  # a 3-agent, 3-action game


def make(**overrides):
    return TADDQN(validate(TADDQNConfig(**{**SMALL, **overrides})))


@pytest.fixture
def three_agents(monkeypatch):
    """Learners built while this fixture is active play a 3-agent matrix game (TABLE3) named "matrix3"."""
    real = envs.make
    monkeypatch.setattr(envs, "make", lambda name, **kw: (MatrixGame(TABLE3, name="matrix3", num_agents=3)
                                                          if name == "matrix3" else real(name, **kw)))


def random_params(algo, seed, scale=0.5):
    shapes = jax.eval_shape(algo.init_params, jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), jnp.float32), shapes)


def greedy_loop(q, avail):
    """Argmax over the available actions (the lowest on ties; 0 when none is available)."""
    best, best_a = -np.inf, 0
    for a in range(len(q)):
        if avail[a] and q[a] > best:
            best, best_a = q[a], a
    return best_a


# ----- defaults ---------------------------------------------------------------------------------


def test_defaults_and_options():
    cfg = validate(TADDQNConfig(env="matrix_qtran"))
    assert cfg.algo == "tad_dqn" and VARIANTS == {"tad_dqn": {}} and ENV_DEFAULTS == {}
    assert (cfg.td_lambda, cfg.double_q, cfg.huber_delta, cfg.lr, cfg.batch_size, cfg.buffer_size) == (
        0.0, True, 0.0, 5e-4, 128, 5_000)
    assert (cfg.eps_start, cfg.eps_finish, cfg.eps_anneal_steps, cfg.updates_per_episode) == (1.0, 0.05, 100_000,
                                                                                              0.125)
    assert (cfg.distill_target, cfg.distill_loss, cfg.distill_coef, cfg.distill_torso) == (
        "greedy_target", "cross_entropy", 1.0, True)
    with pytest.raises(ConfigError, match="distill_target must be one of"):
        validate(dataclasses.replace(cfg, distill_target="sampled"))
    assert {"lr", "gamma", "td_lambda", "distill_coef"} <= set(TADDQN.sweepable)
    assert "huber_delta" not in TADDQN.sweepable  # read in Python (0 = squared error)
    algo = make()
    params = jax.eval_shape(algo.init_params, jax.random.PRNGKey(0))
    assert set(params) == {"agent"}
    assert "distill_head" in params["agent"]["params"] and "null_kv" in params["agent"]["params"]


# ----- the sequential chain ---------------------------------------------------------------------


def network_case(algo, seed, batch=5):
    rng = np.random.default_rng(seed)
    params = random_params(algo, seed)["agent"]
    h = jnp.asarray(rng.normal(size=(batch, algo.n, algo.config.hidden_dim)), jnp.float32)
    avail = rng.random((batch, algo.n, algo.num_actions)) < 0.7
    avail[..., 0] |= ~avail.any(-1)
    return params, h, jnp.asarray(avail)


@pytest.mark.parametrize("agents", [2, 3])
def test_greedy_chain_is_the_stepwise_argmax_of_the_network(agents, request):
    """Agent i's greedy action maximises Q_i(tau_i, a_<i, .) over its available actions given the chain's own
    a_<i, each Q_i computed alone (teacher forcing one prefix, the later agents' slots filled with junk that
    the causal attention must ignore); the chain's Q-values are those."""
    if agents == 3:
        request.getfixturevalue("three_agents")
    algo = make(env="matrix3") if agents == 3 else make()
    params, h, avail = network_case(algo, 3)
    actions, q = jax.jit(algo.chain)(params, h, avail)
    tf = jax.jit(algo.teacher_forced)
    rng = np.random.default_rng(0)
    for b in range(h.shape[0]):
        prefix = []
        for i in range(algo.n):
            junk = rng.integers(0, algo.num_actions, algo.n)
            joint = np.array(prefix + list(junk[len(prefix):]), np.int32)
            q_i = np.asarray(tf(params, h[b], jnp.asarray(joint)))[i]
            np.testing.assert_allclose(np.asarray(q[b, i]), q_i, rtol=1e-5, atol=1e-5)
            prefix.append(greedy_loop(q_i, np.asarray(avail[b, i])))
        assert np.asarray(actions[b]).tolist() == prefix


def handset_chain(payoff):
    """The greedy chain of the hand-set sequential Q of a payoff table [A]*n: Q_{n-1}(a_<n-1, a) = payoff,
    Q_i(a_<i, a_i) = the max of payoff over a_>i (a consistent sequential Q)."""
    n, a = payoff.ndim, payoff.shape[0]
    tables = jnp.stack([jnp.asarray(np.broadcast_to(payoff.max(axis=tuple(range(i + 1, n)), keepdims=True),
                                                    payoff.shape)) for i in range(n)])  # [n] + [A]*n

    def q_of(i, prev):  # Q_i at prefix prev[:i], the own action on axis i, later axes at 0
        idx = tuple(jnp.where(j < i, prev[j], 0) for j in range(n))
        per_own = jnp.stack([tables[i][tuple(jnp.where(j == i, c, idx[j]) for j in range(n))] for c in range(a)])
        return per_own

    record = lambda i, prev, act: prev.at[i].set(act)  # noqa: E731
    choose = lambda _, q, av: jnp.argmax(jnp.where(av, q, -jnp.inf)).astype(jnp.int32)  # noqa: E731
    actions, _ = sequential_chain(q_of, record, jnp.zeros(n, jnp.int32), jnp.ones((n, a), bool), choose,
                                  jax.random.split(jax.random.PRNGKey(0), n))
    return tuple(np.asarray(actions).tolist())


def independent_greedy(payoff):
    """Each agent's argmax of its payoff averaged over the others' actions (uniformly explored independent Qs)."""
    n = payoff.ndim
    return tuple(int(payoff.mean(axis=tuple(j for j in range(n) if j != i)).argmax()) for i in range(n))


def test_greedy_chain_of_a_handset_sequential_q_finds_the_tables_argmax():
    qtran = np.asarray(envs.make("matrix_qtran").payoff)[0]
    assert handset_chain(qtran) == (0, 0) and qtran[independent_greedy(qtran)] == 0.0
    tad = np.asarray(envs.make("matrix_tad10").payoff)
    missed = []
    for k in range(10):
        assert tad[k][handset_chain(tad[k])] == tad[k].max() == 10.0, k
        if tad[k][independent_greedy(tad[k])] < 10.0:
            missed.append(k)
    assert missed == [0, 2, 3, 4, 5, 6, 8]  # independent greedy actions miss 7 of the 10 optima
    # three agents: the chain is the brute-force joint argmax of a random table
    table = np.random.default_rng(1).normal(size=(4, 4, 4))
    best = max(itertools.product(*map(range, table.shape)), key=lambda u: table[u])
    assert handset_chain(table) == best


def test_epsilon_greedy_chain_conditions_on_the_drawn_actions():
    """With epsilon 1 every agent's action is uniform over its available ones, and agent 1's Q-values are those
    given the random a_0 drawn before it; with epsilon 0 the chain is the greedy one."""
    algo = make()
    params, h, avail = network_case(algo, 4, batch=2000)
    chain = jax.jit(algo.chain)
    greedy_actions, _ = chain(params, h, avail)
    actions, q = chain(params, h, avail, jax.random.PRNGKey(1), 1.0)
    actions, avail_np = np.asarray(actions), np.asarray(avail)
    assert np.take_along_axis(avail_np, actions[..., None], -1).all()
    single = avail_np[:, 0].sum(-1) == 3  # agent 0 with all 3 actions available: each drawn about 1/3 of the time
    np.testing.assert_allclose(np.bincount(actions[single, 0], minlength=3) / single.sum(), 1 / 3, atol=0.05)
    np.testing.assert_allclose(q, jax.jit(algo.teacher_forced)(params, h, jnp.asarray(actions)), rtol=1e-5, atol=1e-5)
    same, _ = chain(params, h, avail, jax.random.PRNGKey(1), 0.0)
    np.testing.assert_array_equal(same, greedy_actions)


# ----- the hand-built batch and the Python-loop reference ---------------------------------------


def tiny_batch(n, rng_seed=4):
    """B=2, T=3, A=3: episode 0 runs 3 steps and is truncated (bootstraps from its last observation), episode 1
    terminates after 2 steps; its third step is padding with no available action."""
    rng = np.random.default_rng(rng_seed)
    b, t, a = 2, 3, 3
    avail = rng.random((b, t + 1, n, a)) < 0.75
    avail[..., 1] |= ~avail.any(-1)
    avail[1, 3] = False  # padded observation
    actions = rng.integers(0, a, (b, t, n)).astype(np.int32)
    for idx in np.ndindex(b, t, n):  # stored actions were available
        if not avail[idx][actions[idx]]:
            actions[idx] = int(np.flatnonzero(avail[idx])[0])
    actions[1, 2] = 0
    mask = np.array([[True, True, True], [True, True, False]])
    terminated = np.array([[False, False, False], [False, True, False]])
    return replay.Episodes(obs=jnp.asarray(rng.normal(size=(b, t + 1, n, 1)), jnp.float32),
                           state=jnp.asarray(rng.normal(size=(b, t + 1, 1)), jnp.float32),
                           avail=jnp.asarray(avail), actions=jnp.asarray(actions),
                           reward=jnp.asarray([[1.0, -2.0, 0.5], [3.0, 8.0, 100.0]], jnp.float32),
                           terminated=jnp.asarray(terminated), mask=jnp.asarray(mask))


def unroll_features(algo, agent_params, batch):
    """Torso outputs [B, T+1, N, H] by a Python loop over time, inputs (obs, own previous action, id) in NumPy."""
    obs, actions = np.asarray(batch.obs), np.asarray(batch.actions)
    b, t1, n, _ = obs.shape
    step = jax.jit(lambda p, c, x: algo.agent.apply(p, c, x, jnp.zeros((b, n), bool), method=TADNet.features))
    carry, hs = jnp.zeros((b, n, algo.config.hidden_dim)), []
    for t in range(t1):
        last = np.zeros((b, n, algo.num_actions), np.float32)
        if t > 0:
            for i in range(b):
                for j in range(n):
                    last[i, j, actions[i, t - 1, j]] = 1
        x = np.concatenate([obs[:, t], last, np.broadcast_to(np.eye(n), (b, n, n))], -1).astype(np.float32)
        carry, h = step(agent_params, carry, jnp.asarray(x))
        hs.append(h)
    return jnp.stack(hs, 1)


def reference_loss(algo, params, target_params, batch):
    """The loss, worked virtual step by virtual step with Python loops."""
    cfg, n = algo.config, algo.n
    gv = cfg.gamma ** (1.0 / n)
    avail, actions = np.asarray(batch.avail), np.asarray(batch.actions)
    reward, terminated, mask = np.asarray(batch.reward), np.asarray(batch.terminated), np.asarray(batch.mask)
    b, t_len, _ = actions.shape
    tf = jax.jit(algo.teacher_forced)
    h, h_t = unroll_features(algo, params["agent"], batch), unroll_features(algo, target_params["agent"], batch)
    forced = jnp.asarray(np.concatenate([actions, np.zeros_like(actions[:, :1])], 1))
    q = np.asarray(tf(params["agent"], h, forced), np.float64)  # q[b, t, i] = Q_i(tau_t, stored a_<i, .)
    q_t = np.asarray(tf(target_params["agent"], h_t, forced), np.float64)

    # one virtual sequence per episode: (t, i) for the valid t, in order; each with its reward, discount and
    # the bootstrap value of its successor
    losses = []
    for e in range(b):
        seq = []
        for t in range(t_len):
            if not mask[e, t]:
                continue
            for i in range(n):
                if i < n - 1:  # the next virtual step: agent i+1 in the same env step
                    nt, ni, r, cont = t, i + 1, 0.0, 1.0
                else:  # the next env step's first agent
                    nt, ni, r, cont = t + 1, 0, reward[e, t], 0.0 if terminated[e, t] else 1.0
                chooser = q[e, nt, ni] if cfg.double_q else q_t[e, nt, ni]
                u = greedy_loop(chooser, avail[e, nt, ni])
                seq.append(dict(q=q[e, t, i, actions[e, t, i]], r=r, cont=cont, v=q_t[e, nt, ni, u]))
        g_next = None
        for k in range(len(seq) - 1, -1, -1):
            s = seq[k]
            ahead = s["v"] if g_next is None else (1 - cfg.td_lambda) * s["v"] + cfg.td_lambda * g_next
            g_next = s["r"] + gv * s["cont"] * ahead
            td = s["q"] - g_next
            if cfg.huber_delta > 0 and abs(td) > cfg.huber_delta:
                losses.append(cfg.huber_delta * (abs(td) - 0.5 * cfg.huber_delta))
            else:
                losses.append(0.5 * td ** 2)
    td_loss = float(np.mean(losses))

    # distillation on the valid steps: the decentralised head to the greedy chain (agent by agent) or stored actions
    dec = np.asarray(jax.jit(algo.decentralised)(params["agent"], h), np.float64)
    terms, agree = [], []
    chain_params, chain_h = (target_params, h_t) if cfg.distill_target == "greedy_target" else (params, h)
    for e, t in zip(*np.nonzero(mask), strict=True):
        prefix, chain_q = [], []
        for i in range(n):
            joint = np.array(prefix + [0] * (n - len(prefix)), np.int32)
            q_i = np.asarray(tf(chain_params["agent"], chain_h[e, t], jnp.asarray(joint)), np.float64)[i]
            chain_q.append(q_i)
            prefix.append(greedy_loop(q_i, avail[e, t, i]))
        stored = cfg.distill_target == "taken"
        target = list(actions[e, t]) if stored else prefix
        target_q = [q[e, t, i] for i in range(n)] if stored else chain_q
        for i in range(n):
            av = avail[e, t, i]
            if cfg.distill_loss == "cross_entropy":
                logits = dec[e, t, i][av]
                log_z = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
                terms.append(log_z - dec[e, t, i, target[i]])
            else:
                terms.extend(0.5 * (dec[e, t, i][av] - target_q[i][av]) ** 2)
            agree.append(greedy_loop(dec[e, t, i], av) == target[i])
    distill = float(np.mean(terms))
    return {"td_loss": td_loss, "distill_loss": distill, "distill_agree": float(np.mean(agree)),
            "loss": td_loss + cfg.distill_coef * distill}


CASES = [
    (2, dict()),
    (2, dict(double_q=False, td_lambda=0.5, distill_target="taken", distill_loss="q_regression", distill_coef=0.3)),
    (2, dict(huber_delta=0.3, gamma=0.6, distill_target="greedy")),
    (3, dict(td_lambda=0.7, distill_loss="q_regression")),
]


@pytest.mark.parametrize("agents,overrides", CASES)
def test_loss_matches_a_python_loop_reference(agents, overrides, request):
    if agents == 3:
        request.getfixturevalue("three_agents")
    algo = make(**overrides, **({"env": "matrix3"} if agents == 3 else {}))
    params, target_params = random_params(algo, 1), random_params(algo, 2)
    batch = tiny_batch(agents)
    loss, stats = jax.jit(algo.loss)(params, target_params, batch, algo.hparams(), jax.random.PRNGKey(0))
    ref = reference_loss(algo, params, target_params, batch)
    for k in ("td_loss", "distill_loss", "distill_agree"):
        np.testing.assert_allclose(float(stats[k]), ref[k], rtol=2e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(float(loss), ref["loss"], rtol=2e-4)


def test_padding_does_not_count_and_the_discount_is_the_nth_root():
    """Whatever a padded step holds leaves the loss unchanged; on a one-step terminated episode the first
    agent's target is gamma^(1/2) x the second agent's Q at the stored a_0 (double Q), the second's the reward."""
    algo = make()
    params, target_params = random_params(algo, 1), random_params(algo, 2)
    batch = tiny_batch(2)
    changed = batch.replace(reward=batch.reward.at[1, 2].set(-1e6), actions=batch.actions.at[1, 2].set(2),
                            terminated=batch.terminated.at[1, 2].set(True))
    f = jax.jit(algo.loss)
    a, _ = f(params, target_params, batch, algo.hparams(), jax.random.PRNGKey(0))
    b, _ = f(params, target_params, changed, algo.hparams(), jax.random.PRNGKey(0))
    assert float(a) == float(b)

    one = replay.Episodes(obs=batch.obs[:1, :2], state=batch.state[:1, :2], avail=jnp.ones((1, 2, 2, 3), bool),
                          actions=jnp.asarray([[[2, 1]]], jnp.int32), reward=jnp.asarray([[5.0]]),
                          terminated=jnp.asarray([[True]]), mask=jnp.asarray([[True]]))
    _, stats = f(params, params, one, algo.hparams(), jax.random.PRNGKey(0))
    q = np.asarray(jax.jit(lambda p: algo.teacher_forced(p, algo.features(p, one), jnp.asarray([[[2, 1], [0, 0]]])))(
        params["agent"]))
    expected_target = (0.8 ** 0.5 * q[0, 0, 1].max() + 5.0) / 2  # mean over the two virtual steps
    np.testing.assert_allclose(float(stats["target"]), expected_target, rtol=1e-5)


# ----- decentralised acting ---------------------------------------------------------------------


def test_greedy_policy_runs_the_decentralised_head():
    """greedy_policy acts greedily on Q^D over the available actions from each agent's own history; changing
    another agent's observation changes nothing."""
    algo = make()
    params = random_params(algo, 5)
    rng = np.random.default_rng(0)
    b = 64
    obs = jnp.asarray(rng.normal(size=(b, 2, 1)), jnp.float32)
    avail = rng.random((b, 2, 3)) < 0.7
    avail[..., 2] |= ~avail.any(-1)
    avail = jnp.asarray(avail)
    carry, policy = algo.greedy_policy(params, b)
    reset = jnp.ones(b, bool)
    (hidden, _), actions = jax.jit(policy)(carry, obs, avail, reset)
    x = jnp.concatenate([obs, jnp.zeros((b, 2, 3)), jnp.broadcast_to(jnp.eye(2), (b, 2, 2))], -1)
    _, h = algo.agent.apply(params["agent"], carry[0], x, jnp.ones((b, 2), bool), method=TADNet.features)
    dec = np.asarray(algo.agent.apply(params["agent"], h, method=TADNet.decentralised))
    expected = [[greedy_loop(dec[e, i], np.asarray(avail[e, i])) for i in range(2)] for e in range(b)]
    np.testing.assert_array_equal(actions, expected)
    np.testing.assert_allclose(hidden, h, rtol=1e-5, atol=1e-6)  # the GRU carry is the torso's output

    other = obs.at[:, 0].set(obs[:, 0] + 3.0)  # agent 0's observation changes
    (moved_hidden, _), moved = jax.jit(policy)(carry, other, avail, reset)
    np.testing.assert_array_equal(moved[:, 1], actions[:, 1])
    moved_dec = np.asarray(algo.agent.apply(params["agent"], moved_hidden, method=TADNet.decentralised))
    np.testing.assert_allclose(moved_dec[:, 1], dec[:, 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(moved_dec[:, 0], dec[:, 0])


# ----- a short compiled run ---------------------------------------------------------------------


@pytest.mark.slow  # 25 s of compiling; the fast suite runs the chain, the loss and the policy round trip
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
    for k in ("td_loss", "distill_loss", "distill_agree", "td_abs", "q_taken", "target", "grad_norm"):
        assert f"train/{k}" in metrics, k
    for k in ("return", "return_sequential", "score", "score_sequential", "optimality_gap_sequential"):
        assert f"eval/{k}" in metrics, k
    for k, v in metrics.items():
        if k.startswith("nonfinite/"):
            assert (np.asarray(v) == -1).all(), k
        else:
            assert np.isfinite(np.asarray(v)).all(), k
    assert int(state.grad_steps) > 0 and int(state.episodes) == 48
    # on a one-task matrix game the score is the greedy return
    np.testing.assert_array_equal(metrics["eval/score"], metrics["eval/return"])
    np.testing.assert_array_equal(metrics["eval/score_sequential"], metrics["eval/return_sequential"])


# ----- learning (slow) --------------------------------------------------------------------------


@pytest.mark.slow
def test_learns_qtrans_matrix():
    """QTRAN's [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]] (where QMIX stays at 0): the defaults but for a small
    budget (10k env steps, batch 32, epsilon 1 -> 0.05 over 5k steps). Greedy returns are evaluated every 1000
    steps; all 4 seeds play the 8, decentralised and sequential, from 3000 steps on."""
    algo = TADDQN(validate(TADDQNConfig(env="matrix_qtran", total_steps=10_000, batch_size=32, buffer_size=500,
                                        eps_anneal_steps=5_000, eval_every=125)))
    p = plan(algo)
    chunk = make_chunk(algo, p.updates_per_chunk)

    def train(key):
        return jax.lax.scan(lambda s, _: chunk(s), algo.init(key), None, p.num_chunks)

    _, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 4))
    dec, seq = np.asarray(metrics["eval/return"]), np.asarray(metrics["eval/return_sequential"])  # [seeds, evals]
    assert dec.shape == (4, 10)
    assert (dec[:, -1] == 8.0).sum() >= 3 and (seq[:, -1] == 8.0).sum() >= 3, (dec, seq)
    assert (dec[:, -3:] == 8.0).all(axis=1).sum() >= 3, dec  # and they stay there
    assert (np.asarray(metrics["nonfinite/params"]) < 0).all()


@pytest.mark.slow
def test_learns_tad_ten_matrices():
    """TAD's ten 5x5 matrices (score = the sum over them of the greedy joint payoff, optimum 100): 10k env steps,
    one gradient step per episode, epsilon 1 -> 0.05 over 5k steps. The sequential chain and the decentralised
    agents distilled from the target network's chain score 100 on at least 3 of 4 seeds at the end."""
    algo = TADDQN(validate(TADDQNConfig(env="matrix_tad10", total_steps=10_000, batch_size=32, buffer_size=1000,
                                        eps_anneal_steps=5_000, updates_per_episode=1.0, eval_every=125)))
    p = plan(algo)
    chunk = make_chunk(algo, p.updates_per_chunk)

    def train(key):
        return jax.lax.scan(lambda s, _: chunk(s), algo.init(key), None, p.num_chunks)

    _, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 4))
    dec, seq = np.asarray(metrics["eval/score"]), np.asarray(metrics["eval/score_sequential"])
    assert (np.isclose(dec[:, -1], 100.0).sum() >= 3) and (np.isclose(seq[:, -1], 100.0).sum() >= 3), (dec, seq)
