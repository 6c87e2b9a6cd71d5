"""Masks, written once: unavailable actions out of softmaxes and argmaxes, invalid steps out of means."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Score of an unavailable action (logit, Q-value) or a hidden attention slot. Large and finite rather
# than -inf, so that probabilities and KLs stay finite (exp underflows to exactly 0) and no inf - inf
# makes a NaN.
MASKED = -1e9


def mask_actions(scores: jax.Array, avail: jax.Array) -> jax.Array:
    """``scores`` where ``avail`` holds (broadcast), :data:`MASKED` elsewhere."""
    return jnp.where(avail, scores, MASKED)


def masked_mean(x: jax.Array, mask: jax.Array | None, axis: int | tuple[int, ...] | None = None,
                keepdims: bool = False) -> jax.Array:
    """Mean of ``x`` over the entries where ``mask`` (broadcast to ``x``) holds, 0 where none does.

    ``mask=None`` is the plain mean. Masked entries are selected away, not multiplied by 0, so whatever
    they hold (even inf or nan) reaches neither the value nor the gradient; with every entry selected
    the result is the plain mean bit for bit (the same sum divided by the same count).
    """
    if mask is None:
        return x.mean(axis=axis, keepdims=keepdims)
    mask = jnp.broadcast_to(mask, x.shape)
    total = jnp.where(mask, x, jnp.zeros_like(x)).sum(axis=axis, keepdims=keepdims)
    count = mask.sum(axis=axis, keepdims=keepdims, dtype=jnp.int32).astype(x.dtype)
    return total / jnp.maximum(count, 1)
