"""The shared gradient step against Adam worked by hand in NumPy on a tiny quadratic, with and without the
explicit traced learning rate, global-norm clipping, and per-agent transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmarl.optim import apply_gradients, gradient_step

A = np.array([1.0, 4.0, 0.5])  # curvatures
C = np.array([2.0, -1.0, 3.0])  # minimum


def quadratic(w, a, c):
    """0.5 * sum a (w - c)^2, with the gradient a (w - c) in the aux output for checking."""
    return 0.5 * jnp.sum(a * jnp.square(w - c)), {"grad": a * (w - c)}


def adam_by_hand(w, grads_of, lr, steps, b1=0.9, b2=0.999, eps=1e-8):
    """``steps`` Adam steps in float64, bias-corrected moments, update -lr m_hat / (sqrt(v_hat) + eps)."""
    m = v = np.zeros_like(w)
    for t in range(1, steps + 1):
        g = grads_of(w)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w


@pytest.mark.parametrize("explicit_lr", [False, True])
def test_two_adam_steps_match_a_hand_computation(explicit_lr):
    lr = 0.1
    tx = optax.scale_by_adam(eps=1e-8) if explicit_lr else optax.adam(lr, eps=1e-8)
    w0 = np.zeros(3)
    params, opt_state = jnp.asarray(w0, jnp.float32), tx.init(jnp.asarray(w0, jnp.float32))
    step = jax.jit(lambda p, s: gradient_step(quadratic, tx, p, s, jnp.asarray(A), jnp.asarray(C),
                                              lr=lr if explicit_lr else None))
    for _ in range(2):
        before = np.asarray(params, np.float64)
        params, opt_state, loss, aux, grad_norm = step(params, opt_state)
        g = A * (before - C)
        np.testing.assert_allclose(loss, 0.5 * np.sum(A * (before - C) ** 2), rtol=1e-6)
        np.testing.assert_allclose(aux["grad"], g, rtol=1e-6)
        np.testing.assert_allclose(grad_norm, np.linalg.norm(g), rtol=1e-6)
    np.testing.assert_allclose(params, adam_by_hand(w0, lambda w: A * (w - C), lr, 2), rtol=1e-5)
    # first step: every coordinate moves by lr towards its minimum, whatever its curvature
    np.testing.assert_allclose(adam_by_hand(w0, lambda w: A * (w - C), lr, 1), lr * np.sign(C), rtol=1e-6)


def test_explicit_learning_rate_equals_optax_adam_bit_for_bit():
    """scale_by_adam then -lr * u is the arithmetic of optax.adam(lr): the traced rate changes nothing."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
    grads = [jax.tree.map(lambda x, k=k: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params) for k in range(3)]
    lr = jnp.float32(3e-3)
    tx_explicit, tx_optax = optax.scale_by_adam(eps=1e-5), optax.adam(lr, eps=1e-5)
    p1, s1 = params, tx_explicit.init(params)
    p2, s2 = params, tx_optax.init(params)
    for g in grads:
        p1, s1 = jax.jit(lambda p, s, g: apply_gradients(tx_explicit, g, s, p, lr=lr))(p1, s1, g)
        p2, s2 = jax.jit(lambda p, s, g: apply_gradients(tx_optax, g, s, p))(p2, s2, g)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_gradient_norm_is_reported_before_clipping():
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1.0))
    params = jnp.zeros(3, jnp.float32)
    new, _, _, _, grad_norm = gradient_step(quadratic, tx, params, tx.init(params), jnp.asarray(A), jnp.asarray(C))
    g = A * (0 - C)
    np.testing.assert_allclose(grad_norm, np.linalg.norm(g), rtol=1e-6)  # raw norm, about 5.4
    np.testing.assert_allclose(new, -g / np.linalg.norm(g), rtol=1e-6)  # the step itself has norm 1


def test_per_agent_transforms_clip_each_agent_alone():
    """Two agents stacked on axis 0: agent 0's gradient is clipped to norm 1, agent 1's (norm 0.5) is not;
    a joint clip would have scaled both by the same factor."""
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1.0))
    params = jnp.zeros((2, 2), jnp.float32)
    targets = jnp.asarray([[3.0, 4.0], [0.3, 0.4]])
    loss = lambda p, c: (0.5 * jnp.sum(jnp.square(p - c)), {})  # noqa: E731  gradient p - c per agent
    opt_state = jax.vmap(tx.init)(params)
    new, _, _, _, grad_norm = gradient_step(loss, tx, params, opt_state, targets, per_agent=True)
    np.testing.assert_allclose(new, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(grad_norm, np.sqrt(25 + 0.25), rtol=1e-6)  # over all agents
