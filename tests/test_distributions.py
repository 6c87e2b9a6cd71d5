"""The diagonal Gaussian of the continuous-action policies against scipy, quadrature and distrax.

KL and entropy are checked against values computed another way: scipy's normal log-density, a numerical
integral of p log(p / q) in one dimension, and distrax's MultivariateNormalDiag; padded dimensions
(``avail`` false) must add nothing.
"""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jmarl import distributions
from jmarl.distributions import Categorical, DiagGaussian, gaussian_entropy, gaussian_kl, gaussian_log_prob


def params(mean, log_std):
    return jnp.concatenate([jnp.asarray(mean, jnp.float32), jnp.asarray(log_std, jnp.float32)], axis=-1)


def test_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    mean, log_std = rng.normal(size=(5, 3)), rng.uniform(-1.5, 1.0, size=(5, 3))
    x = rng.normal(size=(5, 3)) * 2
    expected = stats.norm.logpdf(x, mean, np.exp(log_std)).sum(-1)
    got = gaussian_log_prob(params(mean, log_std), jnp.asarray(x, jnp.float32), jnp.ones((5, 3), bool))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_entropy_matches_scipy():
    log_std = np.array([[-1.0, 0.0, 0.7]])
    expected = stats.norm(0.0, np.exp(log_std)).entropy().sum(-1)
    got = gaussian_entropy(params(np.zeros((1, 3)), log_std), jnp.ones((1, 3), bool))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("m0,s0,m1,s1", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.4, 1.3), (1.0, 2.0, 0.0, 0.4)])
def test_kl_one_dimension_matches_quadrature(m0, s0, m1, s1):
    """KL(N(m0, s0^2) || N(m1, s1^2)) = integral of p log(p / q), computed numerically."""
    p, q = stats.norm(m0, s0), stats.norm(m1, s1)
    expected, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -30, 30, limit=200)
    got = gaussian_kl(params([m0], [math.log(s0)]), params([m1], [math.log(s1)]), jnp.ones(1, bool))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_kl_and_entropy_match_distrax():
    rng = np.random.default_rng(1)
    m0, m1 = rng.normal(size=(2, 4, 3)).astype(np.float32)
    l0, l1 = rng.uniform(-1, 1, size=(2, 4, 3)).astype(np.float32)
    d0, d1 = (distrax.MultivariateNormalDiag(m, np.exp(ls)) for m, ls in ((m0, l0), (m1, l1)))
    avail = jnp.ones((4, 3), bool)
    np.testing.assert_allclose(gaussian_kl(params(m0, l0), params(m1, l1), avail), d0.kl_divergence(d1), rtol=1e-5)
    np.testing.assert_allclose(gaussian_entropy(params(m1, l1), avail), d1.entropy(), rtol=1e-5)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(gaussian_log_prob(params(m1, l1), jnp.asarray(x), avail), d1.log_prob(x), rtol=1e-5)


def test_padded_dimensions_add_nothing():
    """A 2-d Gaussian whose second dimension is padded equals the 1-d one, whatever the padded values."""
    one = (params([0.5], [-0.3]), params([-0.2], [0.4]), jnp.array([1.1]))
    two = (params([0.5, 9.0], [-0.3, 5.0]), params([-0.2, -7.0], [0.4, -3.0]), jnp.array([1.1, 42.0]))
    m1, m2 = jnp.ones(1, bool), jnp.array([True, False])
    np.testing.assert_allclose(gaussian_kl(two[0], two[1], m2), gaussian_kl(one[0], one[1], m1), rtol=1e-6)
    np.testing.assert_allclose(gaussian_entropy(two[0], m2), gaussian_entropy(one[0], m1), rtol=1e-6)
    np.testing.assert_allclose(gaussian_log_prob(two[0], two[2], m2), gaussian_log_prob(one[0], one[2], m1),
                               rtol=1e-6)


def test_kl_gradient_in_closed_form():
    """d KL / d m_new = (m_new - m_old) / s_new^2; d KL / d log s_new = 1 - (s_old^2 + (m_old - m_new)^2) / s_new^2."""
    old = params([0.2], [math.log(0.5)])
    g = jax.grad(lambda new: gaussian_kl(old, new, jnp.ones(1, bool)))(params([0.7], [math.log(2.0)]))
    np.testing.assert_allclose(g, [(0.7 - 0.2) / 4.0, 1 - (0.25 + 0.25) / 4.0], rtol=1e-5)


def test_samples_have_the_distribution_moments():
    p = params([1.0, -2.0], [math.log(0.5), math.log(3.0)])
    draws = jax.vmap(lambda k: DiagGaussian.sample(k, p))(jax.random.split(jax.random.PRNGKey(0), 20000))
    np.testing.assert_allclose(draws.mean(0), [1.0, -2.0], atol=0.06)
    np.testing.assert_allclose(draws.std(0), [0.5, 3.0], rtol=0.03)
    np.testing.assert_array_equal(DiagGaussian.mode(p), [1.0, -2.0])


def test_for_spec_picks_by_action_kind():
    import envs

    assert distributions.for_spec(envs.make("differential_game").spec) is DiagGaussian
    assert distributions.for_spec(envs.make("hallway").spec) is Categorical
