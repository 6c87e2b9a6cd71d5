"""Advantage and return estimators over a time-major batch.

Episodes can end inside a rollout. Two ends are told apart: *termination* (the true end: the value
after it is 0) and *truncation* (the time limit: bootstrap from the value of the terminal
observation, which the auto-reset keeps). Every estimator takes the value of the *next*
observation per step, already chosen by the caller (the terminal one where an episode ended), so
the recursion only needs to stop at episode ends.

Also here: :func:`virtual_gae`, GAE over TAD-PPO's virtual sub-steps (one per agent per env step), and
:class:`ValueNorm`, the running statistics that put return targets on a unit scale for a critic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation, time-major ([T, ...]; trailing axes broadcast).

    rewards/values/next_values: [T, ...]; ``next_values[t]`` is V of the observation after step t
    (the terminal observation when the episode ended at t); ``terminated[t]`` zeroes that value;
    ``done[t]`` (terminated or truncated) stops the recursion at t. Returns (advantages, targets).
    """
    not_term = 1.0 - terminated.astype(values.dtype)
    not_done = 1.0 - done.astype(values.dtype)
    deltas = rewards + gamma * next_values * not_term - values

    def back(acc, xs):
        delta, cont = xs
        acc = delta + gamma * lam * cont * acc
        return acc, acc

    _, adv = jax.lax.scan(back, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True)
    return adv, adv + values


def normalise(x: jax.Array, axis: int | tuple[int, ...] | None = None, eps: float = 1e-8) -> jax.Array:
    """Zero-mean unit-variance along ``axis`` (all axes by default)."""
    return (x - x.mean(axis=axis, keepdims=True)) / (x.std(axis=axis, keepdims=True) + eps)


def virtual_gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminated: jax.Array,
                done: jax.Array, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """GAE over the n*T virtual steps of TAD-PPO's transformed MDP (tad_ppo.md Algorithm 1), time-major.

    ``values [T, ..., n]``: V(s_t, a_<i) at sub-step i; ``rewards, terminated, done [T, ...]`` belong to
    the last sub-step; ``next_values [T, ...]``: V(s_{t+1}, a_<0) of the observation after step t (the
    terminal one where the episode ended). The virtual discount is gamma^(1/n) and ``lam`` applies per
    virtual step. Returns (advantages, targets) shaped like ``values``.
    """
    n = values.shape[-1]
    last = jnp.arange(n) == n - 1
    at_last = lambda x: jnp.where(last, x[..., None], jnp.zeros_like(x[..., None]))  # noqa: E731
    next_v = jnp.concatenate([values[..., 1:], next_values[..., None]], axis=-1)
    flat = lambda x: jnp.moveaxis(x, -1, 1).reshape((-1,) + x.shape[1:-1])  # [T, ..., n] -> [T*n, ...]
    adv, _ = gae(flat(at_last(rewards.astype(values.dtype))), flat(values), flat(next_v),
                 flat(at_last(terminated)), flat(at_last(done)), gamma ** (1.0 / n), lam)
    adv = jnp.moveaxis(adv.reshape((values.shape[0], n) + values.shape[1:-1]), 1, -1)
    return adv, adv + values


@struct.dataclass
class ValueNorm:
    """Running mean and mean of squares of the value targets, with a debiasing weight (MAPPO)."""

    mean: jax.Array
    mean_sq: jax.Array
    debias: jax.Array

    @classmethod
    def zeros(cls) -> ValueNorm:
        z = jnp.zeros((), jnp.float32)
        return cls(z, z, z)

    def stats(self) -> tuple[jax.Array, jax.Array]:
        d = jnp.maximum(self.debias, 1e-5)
        mean = self.mean / d
        return mean, jnp.sqrt(jnp.maximum(self.mean_sq / d - mean ** 2, 1e-2))

    def update(self, x: jax.Array, beta: float) -> ValueNorm:
        return ValueNorm(beta * self.mean + (1 - beta) * x.mean(), beta * self.mean_sq + (1 - beta) * (x ** 2).mean(),
                         beta * self.debias + (1 - beta))

    def normalize(self, x: jax.Array) -> jax.Array:
        mean, std = self.stats()
        return (x - mean) / std

    def denormalize(self, x: jax.Array) -> jax.Array:
        mean, std = self.stats()
        return x * std + mean
