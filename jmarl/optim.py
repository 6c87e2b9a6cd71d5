"""The gradient step every learner takes: differentiate the loss, transform the gradient, apply it.

Written once so that the learners differ only in their losses and schedules, and so that the gradient
norm each one reports is always measured the same way (over the raw gradient, before clipping).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax


def apply_gradients(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any,
                    lr: jax.Array | float | None = None, per_agent: bool = False) -> tuple[Any, Any]:
    """(new params, new optimiser state) after ``tx`` turns ``grads`` into updates.

    ``lr``: a traced learning rate multiplying the negated updates, for a ``tx`` that ends without one
    (``scale_by_adam``). Kept as an explicit product rather than ``optax.inject_hyperparams``: the rate
    lives in the learner's state as a swept value, and injecting it would keep a second copy inside the
    optimiser state and change the structure of saved states. ``per_agent``: params, grads and
    optimiser state are stacked on a leading agent axis and every agent is transformed alone (its own
    clip and Adam moments).
    """
    update = jax.vmap(tx.update) if per_agent else tx.update
    updates, opt_state = update(grads, opt_state, params)
    if lr is not None:
        updates = jax.tree.map(lambda u: -lr * u, updates)
    return optax.apply_updates(params, updates), opt_state


def gradient_step(loss: Callable[..., tuple[jax.Array, Any]], tx: optax.GradientTransformation, params: Any,
                  opt_state: Any, *args: Any, lr: jax.Array | float | None = None,
                  per_agent: bool = False) -> tuple[Any, Any, jax.Array, Any, jax.Array]:
    """One step on ``loss(params, *args) -> (scalar, aux)``.

    Returns (new params, new optimiser state, loss, aux, global norm of the gradient before ``tx``
    clips it). ``lr`` and ``per_agent`` as in :func:`apply_gradients`.
    """
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, *args)
    params, opt_state = apply_gradients(tx, grads, opt_state, params, lr=lr, per_agent=per_agent)
    return params, opt_state, value, aux, optax.global_norm(grads)
