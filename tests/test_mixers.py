"""Mixers against NumPy: the QMIX forward pass rebuilt from its raw parameters, autodiff dQ_tot/dQ^a against
Lemma 1's closed form, monotonicity, and the parameter counts of lan.md Table 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmarl.mixers import CentralMixer, QMixer, VDNMixer, make_mixer, mixer_gradient, num_params


def random_params(params, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), jnp.float32), params)


def numpy_qmix(p, qs, state, n, embed):
    """QMIX from the raw hypernetwork parameters: (Q_tot, pre-activations h, W1, W2)."""
    dense = lambda x, layer: x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"])  # noqa: E731
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    w1 = np.abs(dense(relu(dense(state, p["hyper_w1"]["layers_0"])), p["hyper_w1"]["layers_2"]))
    w1 = w1.reshape(state.shape[:-1] + (n, embed))
    b1 = dense(state, p["hyper_b1"])
    w2 = np.abs(dense(relu(dense(state, p["hyper_w2"]["layers_0"])), p["hyper_w2"]["layers_2"]))
    v = dense(relu(dense(state, p["value"]["layers_0"])), p["value"]["layers_2"])[..., 0]
    h = np.einsum("bn,bne->be", qs, w1) + b1
    elu = np.where(h > 0, h, np.expm1(np.minimum(h, 0)))
    return (elu * w2).sum(-1) + v, h, w1, w2


@pytest.fixture(scope="module")
def qmix_case():
    n, embed, state_dim, batch = 4, 8, 6, 64
    mixer = QMixer(n, embed, 16)
    shapes = jax.eval_shape(mixer.init, jax.random.PRNGKey(0), jnp.zeros((1, n)), jnp.zeros((1, state_dim)))
    params = random_params(shapes, 1)
    rng = np.random.default_rng(2)
    qs = rng.normal(size=(batch, n)).astype(np.float32) * 2
    state = rng.normal(size=(batch, state_dim)).astype(np.float32)
    return mixer, params, qs, state, n, embed


def test_qmix_forward_matches_numpy_from_raw_parameters(qmix_case):
    mixer, params, qs, state, n, embed = qmix_case
    ref, h, _, _ = numpy_qmix(params["params"], qs, state, n, embed)
    assert (h > 0).any() and (h < 0).any()  # both branches of the ELU are exercised
    np.testing.assert_allclose(jax.jit(mixer.apply)(params, qs, state), ref, rtol=1e-4, atol=1e-4)


def test_autodiff_mixer_gradient_equals_lemma_1(qmix_case):
    """f'_a = sum_j h'(Q W1 + b1)_j w1_aj w2_j with h = ELU (h' = 1 above 0, exp below)."""
    mixer, params, qs, state, n, embed = qmix_case
    _, h, w1, w2 = numpy_qmix(params["params"], qs, state, n, embed)
    elu_grad = np.where(h > 0, 1.0, np.exp(np.minimum(h, 0)))
    closed = np.einsum("be,bne,be->bn", elu_grad, w1, w2)
    auto = jax.jit(lambda q, s: mixer_gradient(mixer, params, q, s))(qs, state)
    np.testing.assert_allclose(auto, closed, rtol=1e-4, atol=1e-6)


def test_qmix_is_monotone_in_every_agent_utility(qmix_case):
    mixer, params, qs, state, n, _ = qmix_case
    grads = np.asarray(jax.jit(lambda q: mixer_gradient(mixer, params, q, state))(qs))
    assert (grads >= 0).all()
    apply = jax.jit(lambda q: mixer.apply(params, q, state))
    base = np.asarray(apply(qs))
    for a in range(n):
        for delta in (0.1, 3.0):
            up = qs.copy()
            up[:, a] += delta
            assert (np.asarray(apply(up)) >= base - 1e-6).all()
    # the unrestricted Q* mixer is not monotone: with random weights some gradient is negative
    central = CentralMixer(32)
    cp = random_params(jax.eval_shape(central.init, jax.random.PRNGKey(3), jnp.zeros((1, n)), state[:1]), 4)
    assert (np.asarray(jax.jit(lambda q: mixer_gradient(central, cp, q, state))(qs)) < 0).any()


def test_vdn_is_the_sum_with_unit_gradient():
    mixer = make_mixer("vdn", 3)
    assert isinstance(mixer, VDNMixer)
    params = mixer.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 2)))
    assert num_params(params) == 0
    qs = jnp.asarray([[1.0, -2.0, 0.5], [3.0, 0.0, 0.0]])
    np.testing.assert_allclose(mixer.apply(params, qs, jnp.zeros((2, 2))), [-0.5, 3.0])
    np.testing.assert_array_equal(mixer_gradient(mixer, params, qs, jnp.zeros((2, 2))), 1.0)
    with pytest.raises(ValueError, match="valid: qmix, vdn, qplex"):
        make_mixer("qtran", 3)


def qmix_count(state_dim, n, embed=32, hyper=64):
    """Hand count: hyper_w1 (S->64->N*E), hyper_w2 (S->64->E), hyper_b1 (S->E), V (S->E->1), with biases."""
    dense = lambda i, o: i * o + o  # noqa: E731
    return (dense(state_dim, hyper) + dense(hyper, n * embed) + dense(state_dim, hyper) + dense(hyper, embed)
            + dense(state_dim, embed) + dense(state_dim, embed) + dense(embed, 1))


@pytest.mark.parametrize("state_dim,n,table", [(98, 5, 32_000), (1170, 27, 283_000)])
def test_qmix_parameter_counts_match_lan_table_1(state_dim, n, table):
    """5m_vs_6m (state 98, 5 agents) ~32k and 27m_vs_30m (state 1170, 27 agents) ~283k parameters."""
    shapes = jax.eval_shape(QMixer(n).init, jax.random.PRNGKey(0), jnp.zeros((1, n)), jnp.zeros((1, state_dim)))
    count = num_params(shapes)
    assert count == qmix_count(state_dim, n)
    assert abs(count - table) / table < 0.02


def test_central_mixer_shape_and_width():
    central = CentralMixer()
    shapes = jax.eval_shape(central.init, jax.random.PRNGKey(0), jnp.zeros((1, 5)), jnp.zeros((1, 98)))
    dense = lambda i, o: i * o + o  # noqa: E731
    expected = dense(98 + 5, 256) + 2 * dense(256, 256) + dense(256, 1) + dense(98, 256) + dense(256, 1)
    assert num_params(shapes) == expected
