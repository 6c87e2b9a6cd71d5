"""Action distributions of the policy-gradient learners: categorical (discrete) and diagonal Gaussian
(continuous), behind one set of functions so a learner's loss is written once for both.

A policy head's output is turned into the distribution's *parameters*, one array per agent-step that a
rollout stores so the KL to the behaviour policy can be computed exactly later:

- categorical: log-probabilities [..., A] (unavailable actions hold ``jmarl.masks.MASKED`` logits, so
  probability 0);
- diagonal Gaussian: ``concat(mean, log_std)`` [..., 2A]. Dimensions an agent does not control (padding,
  ``avail`` false) are pinned to N(0, 1) by the head and left out of log-probabilities, entropies and KLs.

Written here rather than taken from distrax: distrax's Categorical log-softmaxes its logits again inside
``kl_divergence`` / ``entropy`` (results agree only to float32 rounding, not bit for bit), and its
Gaussian knows no padded dimensions. tests/test_distributions.py checks both against distrax and scipy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def categorical_kl(logp_old: jax.Array, logp_new: jax.Array) -> jax.Array:
    """Exact KL(old || new) over the last axis from log-probabilities (masked actions have p=0)."""
    return jnp.sum(jnp.exp(logp_old) * (logp_old - logp_new), axis=-1)


def categorical_entropy(logp: jax.Array) -> jax.Array:
    """Entropy over the last axis from log-probabilities (masked actions have p=0 and add nothing)."""
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def split_gaussian(params: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, log_std) from a Gaussian's stored parameters [..., 2A]."""
    a = params.shape[-1] // 2
    return params[..., :a], params[..., a:]


def gaussian_log_prob(params: jax.Array, actions: jax.Array, avail: jax.Array) -> jax.Array:
    """log N(actions; mean, std^2), summed over the controlled dimensions: [..., A] -> [...]."""
    mean, log_std = split_gaussian(params)
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(jnp.where(avail, -0.5 * jnp.square(z) - log_std - HALF_LOG_2PI, 0.0), axis=-1)


def gaussian_entropy(params: jax.Array, avail: jax.Array) -> jax.Array:
    """Entropy of the diagonal Gaussian over the controlled dimensions: sum(log_std + 0.5 log(2 pi e))."""
    _, log_std = split_gaussian(params)
    return jnp.sum(jnp.where(avail, log_std + HALF_LOG_2PI + 0.5, 0.0), axis=-1)


def gaussian_kl(old: jax.Array, new: jax.Array, avail: jax.Array) -> jax.Array:
    """Exact KL(old || new) of two diagonal Gaussians over the controlled dimensions:
    sum_d log(s_new / s_old) + (s_old^2 + (m_old - m_new)^2) / (2 s_new^2) - 1/2."""
    m_old, ls_old = split_gaussian(old)
    m_new, ls_new = split_gaussian(new)
    var_ratio = jnp.exp(2.0 * (ls_old - ls_new))
    term = ls_new - ls_old + 0.5 * (var_ratio + jnp.square(m_old - m_new) * jnp.exp(-2.0 * ls_new)) - 0.5
    return jnp.sum(jnp.where(avail, term, 0.0), axis=-1)


def gaussian_params(mean: jax.Array, log_std: jax.Array, avail: jax.Array) -> jax.Array:
    """A Gaussian's stored parameters ``concat(mean, log_std)``, with the dimensions an agent does not control
    (``avail`` false) pinned to N(0, 1)."""
    log_std = jnp.broadcast_to(log_std, mean.shape)
    return jnp.concatenate([jnp.where(avail, mean, 0.0), jnp.where(avail, log_std, 0.0)], axis=-1)


def sample_actions(dist: type, key: jax.Array, params: jax.Array, avail: jax.Array) -> jax.Array:
    """Actions drawn from ``dist``; a continuous agent's padded dimensions are sent as 0."""
    actions = dist.sample(key, params)
    return jnp.where(avail, actions, 0.0) if dist.continuous else actions


class Categorical:
    """Discrete actions: parameters are log-probabilities [..., A]; actions int32 [...]."""

    continuous = False

    @staticmethod
    def from_head(head: jax.Array) -> jax.Array:
        """Masked logits -> log-probabilities."""
        return jax.nn.log_softmax(head)

    @staticmethod
    def sample(key: jax.Array, params: jax.Array) -> jax.Array:
        return jax.random.categorical(key, params).astype(jnp.int32)

    @staticmethod
    def mode(params: jax.Array) -> jax.Array:
        return jnp.argmax(params, axis=-1).astype(jnp.int32)

    @staticmethod
    def log_prob(params: jax.Array, actions: jax.Array, avail: jax.Array) -> jax.Array:
        return jnp.take_along_axis(params, actions[..., None], -1)[..., 0]

    @staticmethod
    def entropy(params: jax.Array, avail: jax.Array) -> jax.Array:
        return categorical_entropy(params)

    @staticmethod
    def kl(old: jax.Array, new: jax.Array, avail: jax.Array) -> jax.Array:
        return categorical_kl(old, new)


class DiagGaussian:
    """Continuous actions: parameters ``concat(mean, log_std)`` [..., 2A]; actions float32 [..., A].

    Samples are not squashed: the env clips them to its bounds, and the log-probability is that of the
    unclipped sample (MAPPO's and HARL's continuous policies do the same). The greedy action is the mean.
    """

    continuous = True

    @staticmethod
    def from_head(head: jax.Array) -> jax.Array:
        return head

    @staticmethod
    def sample(key: jax.Array, params: jax.Array) -> jax.Array:
        mean, log_std = split_gaussian(params)
        return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)

    @staticmethod
    def mode(params: jax.Array) -> jax.Array:
        return split_gaussian(params)[0]

    log_prob = staticmethod(gaussian_log_prob)
    entropy = staticmethod(gaussian_entropy)
    kl = staticmethod(gaussian_kl)


def for_spec(spec) -> type[Categorical] | type[DiagGaussian]:  # noqa: ANN001  (envs.EnvSpec)
    """The distribution of an env's actions."""
    return DiagGaussian if spec.continuous else Categorical
