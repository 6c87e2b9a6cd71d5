"""QPLEX's mixer against NumPy: hand-set weights, the forward pass rebuilt from raw parameters, lambda > 0,
the IGM property by brute force over every joint action, parameter counts, shapes and the stop-gradient
on the advantage term."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmarl.mixers import num_params
from jmarl.qplex import QPLEXMixer

N, A, S = 3, 4, 6  # agents, actions, state size of the small cases


def shapes_of(mixer, n=N, a=A, s=S, lead=(1,)):
    return jax.eval_shape(mixer.init, jax.random.PRNGKey(0), jnp.zeros(lead + (n,)), jnp.zeros(lead + (s,)),
                          jnp.zeros(lead + (n, a)), jnp.zeros(lead + (n,)))


@functools.cache
def jitted(mixer):
    """``mixer.apply`` and ``mixer.init`` under jit, compiled once per configuration and input shapes."""
    return jax.jit(mixer.apply, static_argnames="method"), jax.jit(mixer.init)


def run(mixer, params, *args, method=None):
    return jitted(mixer)[0](params, *args, method=method)


def init(mixer, seed, *args):
    return jitted(mixer)[1](jax.random.PRNGKey(seed), *args)


def random_params(shapes, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), jnp.float32), shapes)


def onehot(actions, a=A):
    return np.eye(a, dtype=np.float32)[actions]


def random_inputs(rng, lead, n=N, a=A, s=S):
    """Random utility tables and a random joint action: the mixer's inputs (qs, state, actions_onehot, max_qs)."""
    tables = rng.normal(size=lead + (n, a)).astype(np.float32)
    actions = rng.integers(a, size=lead + (n,))
    qs = np.take_along_axis(tables, actions[..., None], -1)[..., 0]
    state = rng.normal(size=lead + (s,)).astype(np.float32)
    return qs, state, onehot(actions, a), tables.max(-1)


def numpy_qplex(p, qs, state, acts, max_qs, layers, minus_one=True):
    """Q_tot from the raw parameters, written independently of the module: (Q_tot, w, v, lambda)."""
    relu = lambda x: np.maximum(x, 0)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    dense = lambda x, d: x @ np.asarray(d["kernel"], np.float64) + np.asarray(d["bias"], np.float64)

    def heads(x, net):  # each head's own network: x [B, in] -> [B, H, out]
        num_heads = net["Dense_0"]["kernel"].shape[0]
        outs = []
        for h in range(num_heads):
            y = x
            for i in range(layers):
                y = dense(y, {k: v[h] for k, v in net[f"Dense_{i}"].items()})
                y = relu(y) if i < layers - 1 else y
            outs.append(y)
        return np.stack(outs, 1)

    state = np.asarray(state, np.float64)
    w = np.abs(dense(relu(dense(state, p["hyper_w_final"]["layers_0"])), p["hyper_w_final"]["layers_2"])) + 1e-10
    v = dense(relu(dense(state, p["value"]["layers_0"])), p["value"]["layers_2"])
    joint = np.concatenate([state, acts.reshape(len(state), -1)], -1)
    lam = ((np.abs(heads(state, p["head_key"])) + 1e-10) * sigmoid(heads(state, p["head_agent"]))
           * sigmoid(heads(joint, p["head_action"]))).sum(1)
    big_q, big_v = w * qs + v, w * max_qs + v
    coef = lam if minus_one else 1 + lam
    return big_v.sum(-1) + (coef * (big_q - big_v)).sum(-1), w, v, lam


@pytest.mark.parametrize("minus_one", [True, False])
def test_hand_set_weights(minus_one):
    """All kernels zero, so every network outputs its last bias: w, v and lambda are known constants."""
    heads, layers = 3, 2
    mixer = QPLEXMixer(N, A, embed_dim=5, num_heads=heads, adv_hypernet_layers=layers, adv_hypernet_embed=7,
                       minus_one=minus_one)
    params = jax.tree.map(jnp.zeros_like, shapes_of(mixer))["params"]
    b_w = np.array([-0.5, 2.0, 1.5], np.float32)  # a negative one: w takes its absolute value
    b_v = np.array([0.3, -1.0, 2.0], np.float32)
    b_key = np.array([[-2.0], [0.5], [1.0]], np.float32)  # [H, 1]
    b_agent = np.array([[0.0, 1.0, -1.0], [2.0, -2.0, 0.5], [0.3, 0.0, -0.7]], np.float32)  # [H, N]
    b_action = np.array([[1.0, 0.0, 0.0], [-1.0, 0.5, 3.0], [0.0, -0.2, 1.1]], np.float32)
    params["hyper_w_final"]["layers_2"]["bias"] = jnp.asarray(b_w)
    params["value"]["layers_2"]["bias"] = jnp.asarray(b_v)
    for name, b in (("head_key", b_key), ("head_agent", b_agent), ("head_action", b_action)):
        params[name][f"Dense_{layers - 1}"]["bias"] = jnp.asarray(b)
    params = {"params": params}

    rng = np.random.default_rng(0)
    qs, state, acts, max_qs = random_inputs(rng, (16,))
    w, v = np.abs(b_w) + 1e-10, b_v
    sig = lambda x: 1 / (1 + np.exp(-x))
    lam = ((np.abs(b_key) + 1e-10) * sig(b_agent) * sig(b_action)).sum(0)  # [N]
    big_q, big_v = w * qs + v, w * max_qs + v
    adv = big_q - big_v
    expected = big_v.sum(-1) + ((lam if minus_one else 1 + lam) * adv).sum(-1)

    np.testing.assert_allclose(run(mixer, params, state, acts, method="importance_weights"),
                               np.broadcast_to(lam, (16, N)), rtol=1e-6)
    np.testing.assert_allclose(run(mixer, params, qs, state, acts, max_qs), expected, rtol=1e-5, atol=1e-5)
    # the same as the reference's form, sum_i Q_i + sum_i (lambda_i - 1) A_i (or + sum_i lambda_i A_i)
    ref_form = big_q.sum(-1) + ((lam - 1 if minus_one else lam) * adv).sum(-1)
    np.testing.assert_allclose(expected, ref_form, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_forward_matches_numpy_from_raw_parameters(layers):
    mixer = QPLEXMixer(N, A, embed_dim=8, num_heads=3, adv_hypernet_layers=layers, adv_hypernet_embed=8)
    params = random_params(shapes_of(mixer), layers)
    qs, state, acts, max_qs = random_inputs(np.random.default_rng(layers), (32,))
    ref, w, v, lam = numpy_qplex(params["params"], qs, state, acts, max_qs, layers)
    np.testing.assert_allclose(run(mixer, params, qs, state, acts, max_qs), ref, rtol=1e-4, atol=1e-4)
    got_w, got_v = run(mixer, params, state, method="transform")
    np.testing.assert_allclose(got_w, w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_v, v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run(mixer, params, state, acts, method="importance_weights"), lam,
                               rtol=1e-4, atol=1e-6)
    # the reference's two calls add up to the one call
    halves = (run(mixer, params, qs, state, method="sum_q")
              + run(mixer, params, qs, state, acts, max_qs, method="advantage_term"))
    np.testing.assert_allclose(halves, run(mixer, params, qs, state, acts, max_qs), rtol=1e-5, atol=1e-5)


def test_importance_weights_are_positive():
    rng = np.random.default_rng(10)
    for layers in (1, 2, 3):
        mixer = QPLEXMixer(N, A, embed_dim=16, num_heads=4, adv_hypernet_layers=layers, adv_hypernet_embed=16)
        shapes = shapes_of(mixer)
        for seed in range(3):
            params = random_params(shapes, 100 * layers + seed)
            _, state, acts, _ = random_inputs(rng, (512,))
            lam = np.asarray(run(mixer, params, 3 * state, acts, method="importance_weights"))
            assert lam.shape == (512, N) and (lam > 0).all()
    # at the default initialisation too, where each head is its own independently drawn network
    mixer = QPLEXMixer(N, A)
    initial = init(mixer, 1, *random_inputs(rng, (512,)))
    kernel = np.asarray(initial["params"]["head_action"]["Dense_0"]["kernel"])
    assert kernel.shape[0] == 4 and not np.allclose(kernel[0], kernel[1])
    assert (np.asarray(run(mixer, initial, 3 * state, acts, method="importance_weights")) > 0).all()


@pytest.mark.parametrize("minus_one,layers", [(True, 2), (False, 1), (True, 3)])
def test_igm_by_brute_force_over_joint_actions(minus_one, layers):
    """argmax over all A^N joint actions of Q_tot is the tuple of per-agent argmaxes, and Q_tot there is
    sum_i V_i (every advantage is zero), for random parameters, states and utility tables."""
    mixer = QPLEXMixer(N, A, embed_dim=16, num_heads=4, adv_hypernet_layers=layers, adv_hypernet_embed=16,
                       minus_one=minus_one)
    joint = np.array(list(itertools.product(range(A), repeat=N)))  # [J, N], agent 0 most significant
    num_joint, draws = len(joint), 50
    apply = jax.jit(mixer.apply)
    transform = jax.jit(lambda p, s: run(mixer, p, s, method="transform"))
    weights = jax.jit(lambda p, s, a: run(mixer, p, s, a, method="importance_weights"))
    rng = np.random.default_rng(layers)
    shapes = shapes_of(mixer)
    for seed in range(4):
        params = random_params(shapes, 1000 * layers + seed)
        tables = rng.normal(size=(draws, N, A)).astype(np.float32)
        state = np.broadcast_to(rng.normal(size=(draws, 1, S)).astype(np.float32), (draws, num_joint, S))
        qs = tables[:, np.arange(N), joint]  # [D, J, N]
        max_qs = np.broadcast_to(tables.max(-1)[:, None], qs.shape)
        acts = np.broadcast_to(onehot(joint), (draws, num_joint, N, A))
        q_tot = np.asarray(apply(params, qs, state, acts, max_qs))  # [D, J]
        greedy = np.ravel_multi_index(tuple(tables.argmax(-1).T), (A,) * N)  # [D]
        np.testing.assert_array_equal(q_tot.argmax(-1), greedy)
        w, v = transform(params, state[:, 0])
        sum_v = np.asarray((w * tables.max(-1) + v).sum(-1))
        np.testing.assert_allclose(q_tot[np.arange(draws), greedy], sum_v, rtol=1e-5, atol=1e-5)
        assert (q_tot <= sum_v[:, None] + 1e-5).all()
        # lambda_i depends on the other agents' actions: the mixer is not a per-agent sum
        lam = np.asarray(weights(params, state, acts))  # [D, J, N]
        same_own = joint[:, 0] == 0  # joint actions where agent 0 plays 0: its lambda still varies
        assert np.ptp(lam[:, same_own, 0], axis=-1).min() > 0


def test_parameter_counts():
    # defaults (pymarl2: embed 64, 4 heads, 2 layers of 64), 5 agents, state 80, 11 actions:
    # w, v: 2 x (80*64 + 64 + 64*5 + 5) = 2 x 5,509 = 11,018
    # per head: key 80*64 + 64 + 64 + 1 = 5,249; agent 5,184 + 64*5 + 5 = 5,509;
    #           action (80 + 55)*64 + 64 + 325 = 9,029; 19,787 x 4 = 79,148. Total 90,166.
    assert num_params(shapes_of(QPLEXMixer(5, 11), n=5, a=11, s=80)) == 90_166
    # the authors' SMAC config (1 layer) at 5m_vs_6m's size: N = 5, S = 98, A = 12
    # w, v: 2 x (98*64 + 64 + 325) = 13,322; per head: key 99, agent 495, action 158*5 + 5 = 795 -> 1,389;
    # 13,322 + 4 x 1,389 = 18,878
    assert num_params(shapes_of(QPLEXMixer(5, 12, adv_hypernet_layers=1), n=5, a=12, s=98)) == 18_878
    # 3 layers, 10 heads (the authors' matrix-game config), N = 2, S = 4, A = 3, e = 64: each extractor
    # adds 64*64 + 64 = 4,160 over the 2-layer one.
    # w, v: 2 x (4*64 + 64 + 64*2 + 2) = 900; per head: key 4*64 + 64 + 4,160 + 65 = 4,545;
    # agent 320 + 4,160 + 130 = 4,610; action (4 + 6)*64 + 64 + 4,160 + 130 = 4,994 -> 14,149
    mixer = QPLEXMixer(2, 3, num_heads=10, adv_hypernet_layers=3)
    assert num_params(shapes_of(mixer, n=2, a=3, s=4)) == 900 + 10 * 14_149


def test_shapes_with_leading_batch_and_time_dims():
    mixer = QPLEXMixer(N, A, embed_dim=8, adv_hypernet_embed=8)
    qs, state, acts, max_qs = random_inputs(np.random.default_rng(3), (2, 5))
    params = random_params(shapes_of(mixer, lead=(2, 5)), 3)
    q_tot = run(mixer, params, qs, state, acts, max_qs)
    assert q_tot.shape == (2, 5)
    assert run(mixer, params, state, acts, method="importance_weights").shape == (2, 5, N)
    assert all(x.shape == (2, 5, N) for x in run(mixer, params, state, method="transform"))
    flat = run(mixer, params, qs.reshape(10, N), state.reshape(10, S), acts.reshape(10, N, A),
               max_qs.reshape(10, N))
    np.testing.assert_allclose(q_tot.reshape(10), flat, rtol=1e-6)
    assert run(mixer, params, qs[0, 0], state[0, 0], acts[0, 0], max_qs[0, 0]).shape == ()


@pytest.mark.parametrize("minus_one", [True, False])
def test_detached_advantage_gradients(minus_one):
    """Detached (the reference): dQ_tot/dq_i = w_i and nothing flows into max_qs. Not detached:
    dQ_tot/dq_i = lambda_i w_i (or (1 + lambda_i) w_i) and dQ_tot/dmax_q_i = -(coef_i) w_i. The forward
    value is the same."""
    kw = dict(embed_dim=8, num_heads=3, adv_hypernet_embed=8, minus_one=minus_one)
    detached, attached = QPLEXMixer(N, A, **kw), QPLEXMixer(N, A, detach_advantage=False, **kw)
    params = random_params(shapes_of(detached), 7)
    qs, state, acts, max_qs = random_inputs(np.random.default_rng(7), (16,))
    w, _ = run(detached, params, state, method="transform")
    lam = run(detached, params, state, acts, method="importance_weights")
    coef = lam - 1 if minus_one else lam  # the advantage term's weight on A_i

    def grads(mixer):
        return jax.jit(jax.grad(lambda q, m: mixer.apply(params, q, state, acts, m).sum(), argnums=(0, 1)))(qs, max_qs)

    g_q, g_max = grads(detached)
    np.testing.assert_allclose(g_q, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(g_max, 0)
    g_q, g_max = grads(attached)
    np.testing.assert_allclose(g_q, (1 + coef) * w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_max, -coef * w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(run(detached, params, qs, state, acts, max_qs),
                               run(attached, params, qs, state, acts, max_qs), rtol=1e-6)

    # detached: w and v learn through sum_i Q_i alone; the importance weights still get a gradient
    g_full = jax.jit(jax.grad(lambda p: detached.apply(p, qs, state, acts, max_qs).sum()))(params)["params"]
    g_sum_q = jax.jit(jax.grad(lambda p: detached.apply(p, qs, state, method="sum_q").sum()))(params)["params"]
    for name in ("hyper_w_final", "value"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g_full[name],
                     g_sum_q[name])
    for name in ("head_key", "head_agent", "head_action"):
        assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_full[name])) > 0
