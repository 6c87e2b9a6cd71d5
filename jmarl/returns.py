"""Advantage and return estimators over a time-major batch.

Episodes can end inside a rollout. Two ends are told apart: *termination* (the true end: the value
after it is 0) and *truncation* (the time limit: bootstrap from the value of the terminal
observation, which the auto-reset keeps). Every estimator takes the value of the *next*
observation per step, already chosen by the caller (the terminal one where an episode ended), so
the recursion only needs to stop at episode ends.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
