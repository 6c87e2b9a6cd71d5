"""ReMIX / WQMIX / QMIX weights and losses against NumPy: hand-worked OW and CW weights, ReMIX's weight formula
and its mapping into [w_min, 1], each ablation flag removing exactly its factor, and the whole loss of each
variant against a reference built step by step (Python-loop GRU unrolls, backward TD(lambda) loop, mixer
gradients by finite differences)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
from jmarl import replay
from jmarl.algos.remix import ReMIXConfig, cw_weights, ow_weights, remix_log_terms, remix_weights

# ----- weights ----------------------------------------------------------------------------------


def test_ow_and_cw_weights_hand_worked():
    q_tot, y = jnp.asarray([1.0, 3.0, 2.0]), jnp.asarray([2.0, 2.0, 2.0])
    np.testing.assert_allclose(ow_weights(q_tot, y, 0.1), [1.0, 0.1, 0.1])  # equality is not an underestimate
    actions = jnp.asarray([[0, 1], [0, 1], [1, 1], [1, 0]])
    greedy_actions = jnp.asarray([[0, 1], [1, 1], [0, 1], [1, 1]])
    y, greedy_value = jnp.asarray([0.0, 5.0, 1.0, 1.0]), jnp.asarray([9.0, 4.0, 1.0, 0.5])
    # greedy joint action -> 1; target above Q*(s, u_greedy) -> 1; otherwise alpha
    np.testing.assert_allclose(cw_weights(actions, greedy_actions, y, greedy_value, 0.3), [1.0, 1.0, 0.3, 1.0])


def test_remix_terms_hand_worked():
    """pi = (0.5, 0.25), f' = (0.5, 0.25): sum (1 - pi)/f' - 1 = 1 + 3 - 1 = 3."""
    terms = remix_log_terms(jnp.asarray([1.0]), jnp.asarray([3.0]), jnp.asarray([1.5]),
                            jnp.asarray([[0.5, 0.25]]), jnp.asarray([[0.5, 0.25]]))
    np.testing.assert_allclose(jnp.exp(terms["bellman"]), [2.0], rtol=1e-6)
    np.testing.assert_allclose(terms["under"], [0.5], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(terms["gradient"]), [3.0], rtol=1e-6)


def numpy_remix(q_tot, y, q_star, grads, pi, mask, w_min, eps, bellman=True, under=True, gradient=True,
                mapping="mean"):
    """Theorem 1's weight without d^pi/mu, floored at eps, eps where Q_tot > y; then divided by the batch
    mean and clipped to [w_min, 1] (``mean``) or mapped by the batch max (``max``)."""
    e = np.ones_like(q_tot)
    if bellman:
        e = e * (y - q_tot)
    if under:
        e = e * np.exp(q_star - q_tot)
    if gradient:
        e = e * (((1 - pi) / np.maximum(grads, 1e-30)).sum(-1) - 1)
    raw = np.where(q_tot <= y, np.maximum(e, eps), eps)
    if mapping == "mean":
        return np.clip(raw / raw[mask].mean(), w_min, 1.0), raw
    return w_min + (1 - w_min) * raw / raw[mask].max(), raw


@pytest.fixture(scope="module")
def weight_case():
    rng = np.random.default_rng(0)
    shape, n = (6, 9), 3
    q_tot = rng.normal(size=shape)
    y = q_tot + rng.normal(size=shape)  # about half underestimated
    q_star = q_tot + rng.normal(size=shape)
    grads = rng.uniform(0.05, 2.0, size=shape + (n,))
    pi = rng.uniform(0.0, 1.0, size=shape + (n,))
    mask = rng.random(shape) < 0.8
    y[~mask] += 50.0  # padded steps with huge raw weights must not set the scale
    return q_tot, y, q_star, grads, pi, mask


def jax_remix(case, w_min=0.1, eps=1e-6, **flags):
    q_tot, y, q_star, grads, pi, mask = (jnp.asarray(x, jnp.float32) if x.dtype != bool else jnp.asarray(x)
                                         for x in case)
    terms = remix_log_terms(q_tot, y, q_star, grads, pi)
    return remix_weights(terms, q_tot <= y, mask, w_min, eps, **flags)


@pytest.mark.parametrize("w_min", [0.1, 0.5])
@pytest.mark.parametrize("mapping", ["mean", "max"])
def test_remix_weights_match_numpy_and_lie_in_w_min_1(weight_case, w_min, mapping):
    w, _ = jax_remix(weight_case, w_min, mapping=mapping)
    ref, raw = numpy_remix(*weight_case, w_min=w_min, eps=1e-6, mapping=mapping)
    mask = weight_case[-1]
    np.testing.assert_allclose(np.asarray(w)[mask], ref[mask], rtol=1e-4, atol=1e-6)
    w = np.asarray(w)
    assert (w >= w_min - 1e-7).all() and (w <= 1 + 1e-7).all()
    assert np.isclose(w[mask].max(), 1.0)
    q_tot, y = weight_case[0], weight_case[1]
    over = mask & (q_tot > y)
    if mapping == "max":
        np.testing.assert_allclose(w[over], w_min + (1 - w_min) * 1e-6 / raw[mask].max(), rtol=1e-4)
    else:  # eps / mean(E) is far below w_min: clipped up to it; an average E gets weight 1
        np.testing.assert_allclose(w[over], w_min)
        assert (raw[mask] >= raw[mask].mean()).sum() == np.isclose(w[mask], 1.0).sum()
    # some underestimated transitions have a non-positive gradient factor: floored like overestimates
    g = ((1 - weight_case[4]) / weight_case[3]).sum(-1) - 1
    assert (mask & (q_tot <= y) & (g <= 0)).any() and (mask & (q_tot <= y) & (g > 0)).any()


def test_mean_mapping_hand_worked():
    """Only the Bellman factor: E = y - Q_tot = 1, 3, 4 and one overestimate (eps): mean = (8 + 1e-6) / 4, so
    w = 1/2, then 3/2 and 2 clipped to 1, and the overestimate clipped up to w_min. The max mapping gives
    0.1 + 0.9 E / 4 instead; a padded step (mask False) with a huge E moves neither."""
    q_tot = jnp.asarray([0.0, 0.0, 0.0, 1.0, 0.0])
    y = jnp.asarray([1.0, 3.0, 4.0, 0.0, 100.0])
    mask = jnp.asarray([True, True, True, True, False])
    terms = remix_log_terms(q_tot, y, jnp.zeros(5), jnp.ones((5, 2)), jnp.zeros((5, 2)))
    flags = {"under": False, "gradient": False}
    w, _ = remix_weights(terms, q_tot <= y, mask, 0.1, 1e-6, mapping="mean", **flags)
    np.testing.assert_allclose(np.asarray(w)[:4], [0.5, 1.0, 1.0, 0.1], rtol=1e-5)
    w, _ = remix_weights(terms, q_tot <= y, mask, 0.1, 1e-6, mapping="max", **flags)
    np.testing.assert_allclose(np.asarray(w)[:4], [0.1 + 0.9 / 4, 0.1 + 0.9 * 3 / 4, 1.0, 0.1 + 0.9e-6 / 4],
                               rtol=1e-5)


def test_remix_weights_do_not_overflow():
    """exp(Q* - Q_tot) of 200 overflows float32; log space keeps the weights finite and ordered. Raw weights
    e^200 (1, e^-1, 2): their mean is e^200 (3 + e^-1) / 3."""
    q_tot = jnp.zeros(3)
    terms = remix_log_terms(q_tot, jnp.asarray([1.0, 1.0, 2.0]), jnp.asarray([200.0, 199.0, 200.0]),
                            jnp.full((3, 2), 0.5), jnp.full((3, 2), 0.5))
    w, _ = remix_weights(terms, jnp.ones(3, bool), jnp.ones(3, bool), 0.1, 1e-6, mapping="max")
    np.testing.assert_allclose(w, [0.1 + 0.9 * 0.5, 0.1 + 0.9 * 0.5 * np.exp(-1.0), 1.0], rtol=1e-5)
    w, _ = remix_weights(terms, jnp.ones(3, bool), jnp.ones(3, bool), 0.1, 1e-6, mapping="mean")
    mean = (3 + np.exp(-1.0)) / 3
    np.testing.assert_allclose(w, [1 / mean, np.exp(-1.0) / mean, 1.0], rtol=1e-5)


@pytest.mark.parametrize("flag,term", [("bellman", "bellman"), ("under", "under"), ("gradient", "gradient")])
def test_each_ablation_removes_exactly_its_factor(weight_case, flag, term):
    q_tot, y, q_star, grads, pi, mask = weight_case
    full_w, full_raw = jax_remix(weight_case)
    ablated_w, ablated_raw = jax_remix(weight_case, **{flag: False})
    ref, _ = numpy_remix(*weight_case, w_min=0.1, eps=1e-6, **{flag: False})
    np.testing.assert_allclose(np.asarray(ablated_w)[mask], ref[mask], rtol=1e-4, atol=1e-6)
    terms = remix_log_terms(*(jnp.asarray(x, jnp.float32) for x in (q_tot, y, q_star, grads, pi)))
    # where neither version hits the floor, the log raw weights differ by exactly that factor's log
    floor = np.log(1e-6)
    clear = (q_tot <= y) & (np.asarray(full_raw) > floor + 1e-3) & (np.asarray(ablated_raw) > floor + 1e-3)
    assert clear.sum() >= 5
    np.testing.assert_allclose((np.asarray(full_raw) - np.asarray(ablated_raw))[clear],
                               np.asarray(terms[term])[clear], rtol=1e-4, atol=1e-4)
    over = q_tot > y
    np.testing.assert_array_equal(np.asarray(full_raw)[over], np.asarray(ablated_raw)[over])


# ----- variants and defaults --------------------------------------------------------------------


def test_variants_and_paper_defaults():
    cfg = jmarl.make_config("remix", "matrix_qtran")
    assert isinstance(cfg, ReMIXConfig)
    assert (cfg.batch_size, cfg.buffer_size, cfg.target_update_episodes, cfg.lr, cfg.td_lambda) == (128, 10_000, 200,
                                                                                                  1e-3, 0.6)
    assert (cfg.eps_start, cfg.eps_finish, cfg.eps_anneal_steps) == (0.995, 0.05, 100_000)
    assert (cfg.w_min, cfg.alpha, cfg.temperature, cfg.num_envs, cfg.train_steps) == (0.1, 0.1, 1.0, 8, 1)
    assert (cfg.weight_mapping, cfg.weight_q_star, cfg.updates_per_episode) == ("mean", "target", 0.125)
    expect = {"remix": ("qmix", "remix"), "qmix": ("qmix", "uniform"), "vdn": ("vdn", "uniform"),
              "ow_qmix": ("qmix", "ow"), "cw_qmix": ("qmix", "cw")}
    for name, (mixer, weighting) in expect.items():
        c = jmarl.make_config(name, "matrix_qtran")
        assert (c.mixer, c.weighting) == (mixer, weighting)
    for name, off in [("remix_no_bellman", "remix_bellman"), ("remix_no_under", "remix_underestimation"),
                      ("remix_no_grad", "remix_gradient")]:
        c = jmarl.make_config(name, "matrix_qtran")
        flags = {f: getattr(c, f) for f in ("remix_bellman", "remix_underestimation", "remix_gradient")}
        assert flags == {f: f != off for f in flags} and c.weighting == "remix"
    with pytest.raises(jmarl.ConfigError, match="weighting must be one of"):
        jmarl.make_config("remix", "matrix_qtran", weighting="max")
    with pytest.raises(jmarl.ConfigError, match="w_min must be <= 1"):
        jmarl.make_config("remix", "matrix_qtran", w_min=1.5)
    c = jmarl.make_config("qplex", "matrix_qtran")
    assert (c.mixer, c.weighting, c.qplex_heads, c.qplex_layers, c.qplex_embed_dim) == ("qplex", "uniform", 4, 2, 64)
    with pytest.raises(jmarl.ConfigError, match="mixer='qplex' trains with uniform weights"):
        jmarl.make_algorithm(jmarl.make_config("remix", "matrix_qtran", mixer="qplex"))


# ----- the whole loss against a step-by-step reference ------------------------------------------

SMALL = dict(hidden_dim=8, mixing_embed_dim=4, hypernet_dim=8, central_embed_dim=16, central_hidden_dim=6,
             num_envs=2, batch_size=4, buffer_size=8, gamma=0.9, td_lambda=0.6, w_min=0.2, temperature=0.7)


def synthetic_batch(spec, seed):
    """4 episodes of MPE line control's shapes with random data, random availability, both kinds of ends."""
    rng = np.random.default_rng(seed)
    b, t, n, a = 4, spec.episode_limit, spec.num_agents, spec.num_actions
    avail = rng.random((b, t + 1, n, a)) < 0.6
    avail[..., 0] |= ~avail.any(-1)
    actions = np.zeros((b, t, n), np.int32)
    for idx in np.ndindex(b, t, n):
        actions[idx] = rng.choice(np.flatnonzero(avail[idx]))
    lengths = np.array([t, 7, t, 3])
    mask = np.arange(t)[None] < lengths[:, None]
    terminated = np.zeros((b, t), bool)
    terminated[[1, 3], lengths[[1, 3]] - 1] = True  # 0 and 2 are truncated at the limit
    return replay.Episodes(obs=jnp.asarray(rng.normal(size=(b, t + 1, n, spec.obs_dim)), jnp.float32),
                           state=jnp.asarray(rng.normal(size=(b, t + 1, spec.state_dim)), jnp.float32),
                           avail=jnp.asarray(avail), actions=jnp.asarray(actions),
                           reward=jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
                           terminated=jnp.asarray(terminated), mask=jnp.asarray(mask))


def unroll(net, params, batch, num_actions):
    """Q-values [B, T+1, N, A] by a Python loop over time, inputs built in NumPy."""
    obs, actions = np.asarray(batch.obs), np.asarray(batch.actions)
    b, t1, n, _ = obs.shape
    step = jax.jit(net.apply)
    carry, out = jnp.zeros((b, n, net.hidden_dim)), []
    for t in range(t1):
        last = np.zeros((b, n, num_actions), np.float32)
        if t > 0:
            last[np.arange(b)[:, None], np.arange(n)[None], actions[:, t - 1]] = 1
        x = np.concatenate([obs[:, t], last, np.broadcast_to(np.eye(n), (b, n, n))], -1).astype(np.float32)
        carry, q = step(params, carry, jnp.asarray(x), jnp.zeros((b, n), bool))
        out.append(np.asarray(q))
    return np.stack(out, 1).astype(np.float64)


def td_lambda_loop(reward, terminated, mask, boot, gamma, lam):
    b, t = reward.shape
    g = np.zeros((b, t))
    for i in range(b):
        length = int(mask[i].sum())
        acc = 0.0
        for s in reversed(range(length)):
            nxt = boot[i, s] if s == length - 1 else (1 - lam) * boot[i, s] + lam * acc
            acc = reward[i, s] + (0.0 if terminated[i, s] else gamma * nxt)
            g[i, s] = acc
    return g


def reference_loss(algo, params, target_params, batch):
    """Everything in NumPy except network applications (agent step, mixers)."""
    cfg = algo.config
    avail, actions = np.asarray(batch.avail), np.asarray(batch.actions)
    state, mask = np.asarray(batch.state), np.asarray(batch.mask)
    pick = lambda q, u: np.take_along_axis(q, u[..., None], -1)[..., 0]  # noqa: E731
    mix = lambda m, p, qs, s, *extra: np.asarray(jax.jit(m.apply)(p, jnp.asarray(qs, jnp.float32), jnp.asarray(s),  # noqa: E731
                                                                  *(jnp.asarray(x, jnp.float32) for x in extra)))

    def qplex_inputs(u, q_all, av):  # QPLEX also reads the joint action and each agent's greedy utility
        if cfg.mixer != "qplex":
            return ()
        top = np.where(av.any(-1), np.where(av, q_all, -np.inf).max(-1), 0.0)
        return np.eye(algo.num_actions)[u], top

    q = unroll(algo.agent, params["agent"], batch, algo.num_actions)
    u_next = np.where(avail, q, -np.inf).argmax(-1)
    chosen = pick(q[:, :-1], actions)
    q_tot = mix(algo.mixer, params["mixer"], chosen, state[:, :-1], *qplex_inputs(actions, q[:, :-1], avail[:, :-1]))
    if cfg.weighting == "uniform":
        qt = unroll(algo.agent, target_params["agent"], batch, algo.num_actions)
        boot = mix(algo.mixer, target_params["mixer"], pick(qt, u_next), state, *qplex_inputs(u_next, qt, avail))
    else:
        cqt = unroll(algo.central_agent, target_params["central_agent"], batch, algo.num_actions)
        boot = mix(algo.central_mixer, target_params["central_mixer"], pick(cqt, u_next), state)
    y = td_lambda_loop(np.asarray(batch.reward), np.asarray(batch.terminated), mask, boot[:, 1:], cfg.gamma,
                       cfg.td_lambda)
    mean = lambda x: (x * mask).sum() / mask.sum()  # noqa: E731
    total = 0.0
    w = np.ones_like(q_tot)
    if cfg.weighting != "uniform":
        cq = unroll(algo.central_agent, params["central_agent"], batch, algo.num_actions)
        q_star = mix(algo.central_mixer, params["central_mixer"], pick(cq[:, :-1], actions), state[:, :-1])
        total += 0.5 * mean((q_star - y) ** 2)
        if cfg.weight_q_star == "target":  # exp(Q*_{k-1} - Q_tot): the target Q* at the taken actions
            q_star = mix(algo.central_mixer, target_params["central_mixer"], pick(cqt[:, :-1], actions), state[:, :-1])
        if cfg.weighting == "ow":
            w = np.where(q_tot < y, 1.0, cfg.alpha)
        elif cfg.weighting == "cw":
            u = u_next[:, :-1]
            greedy_value = mix(algo.central_mixer, target_params["central_mixer"], pick(cqt[:, :-1], u), state[:, :-1])
            w = np.where((actions == u).all(-1) | (y > greedy_value), 1.0, cfg.alpha)
        else:
            grads = np.zeros_like(chosen)
            for a in range(algo.n):  # central finite differences of the mixer
                step = np.zeros_like(chosen)
                step[..., a] = 1e-2
                up = mix(algo.mixer, params["mixer"], chosen + step, state[:, :-1])
                down = mix(algo.mixer, params["mixer"], chosen - step, state[:, :-1])
                grads[..., a] = (up - down) / 2e-2
            logits = np.where(avail[:, :-1], q[:, :-1] / cfg.temperature, -np.inf)
            pi = np.exp(logits - logits.max(-1, keepdims=True))
            pi = pick(pi / pi.sum(-1, keepdims=True), actions)
            w, _ = numpy_remix(q_tot, y, q_star, grads, pi, mask, cfg.w_min, cfg.remix_eps, cfg.remix_bellman,
                               cfg.remix_underestimation, cfg.remix_gradient, cfg.weight_mapping)
    return total + 0.5 * mean(w * (q_tot - y) ** 2), w


@pytest.mark.parametrize("algo_name,options", [
    ("qmix", {}), ("qplex", {}), ("ow_qmix", {}), ("cw_qmix", {}), ("remix", {}), ("remix_no_grad", {}),
    ("remix", {"weight_q_star": "online", "weight_mapping": "max"}),  # the pre-paper mapping, as an option
])
def test_loss_matches_a_step_by_step_reference(algo_name, options):
    algo = jmarl.make_algorithm(jmarl.make_config(algo_name, "mpe_line_control", **SMALL, **options))
    shapes = jax.eval_shape(algo.init_params, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)

    def draw():  # a small-scale QMIX mixer: its gradients stay away from 0, where finite differences fail
        return {k: jax.tree.map(lambda s, k=k: jnp.asarray((0.2 if k == "mixer" else 0.5) * rng.normal(size=s.shape),
                                                           jnp.float32), v) for k, v in shapes.items()}

    params, target_params = draw(), draw()
    batch = synthetic_batch(algo.spec, 2)
    loss, stats = jax.jit(algo.loss)(params, target_params, batch, algo.hparams(), jax.random.PRNGKey(0))
    ref, w = reference_loss(algo, params, target_params, batch)
    np.testing.assert_allclose(float(loss), ref, rtol=2e-3)
    mask = np.asarray(batch.mask)
    np.testing.assert_allclose(float(stats["weight"]), (w * mask).sum() / mask.sum(), rtol=2e-3)
    if algo_name not in ("qmix", "qplex"):
        assert 0 < float(stats["weight"]) < 1  # the weighting is active in this batch


def test_padded_steps_without_available_actions_leave_loss_and_gradients_finite():
    """The buffer pads an episode's tail with no available action; ReMIX's Boltzmann policy there must not
    be NaN (a softmax over only -inf), or NaN * 0 reaches the agents' and the mixer's gradients."""
    algo = jmarl.make_algorithm(jmarl.make_config("remix", "mpe_line_control", **SMALL))
    params = algo.init_params(jax.random.PRNGKey(0))
    batch = synthetic_batch(algo.spec, 3)
    t = np.arange(batch.avail.shape[1])
    lengths = np.asarray(batch.mask).sum(1)
    padded = batch.replace(avail=batch.avail & jnp.asarray(t[None, :] <= lengths[:, None])[..., None, None])
    assert not np.asarray(padded.avail).any(-1).all()  # some observations have no available action
    grad_fn = jax.jit(jax.value_and_grad(algo.loss, has_aux=True))
    (loss, _), grads = grad_fn(params, params, padded, algo.hparams(), jax.random.PRNGKey(0))
    (ref_loss, _), ref_grads = grad_fn(params, params, batch, algo.hparams(), jax.random.PRNGKey(0))
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(loss) == float(ref_loss)  # padded steps never count
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_sweepable_keys_reach_the_state_as_traced_values():
    """jmarl.sweep's contract: declared keys are rebuilt into the learner as traced values and read only
    through ``state.hparams``; shape-changing keys are not declared."""
    from jmarl import sweep

    declared = sweep.traced_keys("remix")
    assert {"lr", "gamma", "td_lambda", "w_min", "alpha", "temperature", "eps_start", "eps_finish"} <= set(declared)
    assert not {"hidden_dim", "batch_size", "buffer_size", "num_envs", "mixer", "weighting"} & set(declared)
    algo = jmarl.make_algorithm(jmarl.make_config("remix", "matrix_qtran", batch_size=8, buffer_size=32))
    hparams = jax.jit(lambda w, lr: sweep.bind(algo, {"w_min": w, "lr": lr}).hparams())(jnp.float32(0.3), 0.01)
    np.testing.assert_allclose([hparams["w_min"], hparams["lr"], hparams["alpha"]], [0.3, 0.01, 0.1], rtol=1e-6)
