"""Unavailable-action masking and masked means against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmarl.masks import MASKED, mask_actions, masked_mean


def test_mask_actions_matches_numpy_and_keeps_softmax_finite():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 3, 6)).astype(np.float32)
    avail = rng.random((5, 3, 6)) < 0.5
    avail[..., 2] = True  # at least one action available everywhere
    out = np.asarray(mask_actions(jnp.asarray(scores), jnp.asarray(avail)))
    np.testing.assert_array_equal(out, np.where(avail, scores, np.float32(-1e9)))
    assert MASKED == -1e9
    probs = np.asarray(jax.nn.softmax(out))
    assert np.isfinite(probs).all() and (probs[~avail] == 0).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    logp = np.asarray(jax.nn.log_softmax(out))
    assert np.isfinite(logp).all()  # -inf here would make 0 * logp a NaN in entropies and KLs
    # argmax picks the best available action even when every available score is below the others
    low = mask_actions(jnp.asarray([[-5.0, 3.0, -7.0]]), jnp.asarray([[True, False, True]]))
    assert int(jnp.argmax(low, -1)[0]) == 0


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
def test_masked_mean_matches_numpy(axis):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = rng.random((4, 5, 3)) < 0.6
    mask[0, 0] = False  # somewhere nothing is selected along an axis
    mask[:, 0, 0] = False
    got = np.asarray(masked_mean(jnp.asarray(x), jnp.asarray(mask), axis=axis))
    total = np.where(mask, x, 0.0).astype(np.float64).sum(axis=axis)
    count = mask.sum(axis=axis)
    np.testing.assert_allclose(got, total / np.maximum(count, 1), rtol=1e-5, atol=1e-7)


def test_masked_mean_ignores_whatever_masked_entries_hold():
    x = jnp.asarray([1.0, 2.0, jnp.inf, jnp.nan])
    mask = jnp.asarray([True, True, False, False])
    assert float(masked_mean(x, mask)) == 1.5
    grad = jax.grad(lambda v: masked_mean(v, mask))(x)
    np.testing.assert_array_equal(grad, [0.5, 0.5, 0.0, 0.0])
    assert float(masked_mean(x, jnp.zeros(4, bool))) == 0.0  # nothing selected: 0, not nan


def test_masked_mean_broadcasts_the_mask_and_equals_the_plain_mean_when_all_selected():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 4)), jnp.float32)
    step_mask = jnp.asarray([True, True, False, True, False, True])[:, None]  # [T, 1] over [T, N]
    np.testing.assert_allclose(masked_mean(x, step_mask), np.asarray(x)[np.asarray(step_mask[:, 0])].mean(),
                               rtol=1e-6)
    np.testing.assert_array_equal(masked_mean(x, jnp.ones_like(x, bool), axis=0), x.mean(axis=0))
    np.testing.assert_array_equal(masked_mean(x, None, axis=1), x.mean(axis=1))
