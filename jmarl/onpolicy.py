"""What every on-policy learner (DPO, TAD-PPO and their baselines) does the same way.

A learner supplies the per-step function of its rollout and the gradient step of one minibatch; this
module owns the scan over env steps (keys, env-step counter), the epochs x minibatches loop over the
parallel envs (whole env rows, so recurrent sequences stay intact), and ``update`` = collect + learn.
The learner's TrainState must have ``env_state, timestep, carries, episode_start, key, env_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jmarl.config import ConfigError
from jmarl.masks import masked_mean
from jmarl.returns import normalise

RolloutCarry = tuple[Any, Any, Any, jax.Array]  # (env_state, timestep, policy carries, episode_start)


def rollout(state: Any, step: Callable[[RolloutCarry, jax.Array], tuple[RolloutCarry, dict]], num_steps: int,
            steps_per_update: int) -> tuple[Any, dict[str, jax.Array]]:
    """Scan ``step(carry, key) -> (carry, record)`` for ``num_steps``; returns (state, records [T, E, ...])."""
    init = (state.env_state, state.timestep, state.carries, state.episode_start)
    key, k_roll = jax.random.split(state.key)
    (env_state, ts, carries, start), traj = jax.lax.scan(step, init, jax.random.split(k_roll, num_steps))
    state = state.replace(env_state=env_state, timestep=ts, carries=carries, episode_start=start, key=key,
                          env_steps=state.env_steps + steps_per_update)
    return state, traj


def minibatch_epochs(params: Any, opt_state: Any, key: jax.Array, epochs: int, num_envs: int, num_minibatches: int,
                     sgd_step: Callable[[tuple[Any, Any], jax.Array], tuple[tuple[Any, Any], dict]]):
    """``epochs`` passes, each over a fresh permutation of the envs split into ``num_minibatches``;
    ``sgd_step((params, opt_state), env_indices)`` does one gradient step. Returns ((params, opt_state),
    stats stacked [epochs, minibatches])."""
    size = num_envs // num_minibatches

    def epoch(carry, k):
        perm = jax.random.permutation(k, num_envs).reshape(num_minibatches, size)
        return jax.lax.scan(sgd_step, carry, perm)

    return jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))


def completed_episode_return(traj: dict[str, jax.Array]) -> jax.Array:
    """Mean return of the episodes that ended during the rollout (0 if none did)."""
    done = traj["done"].astype(jnp.float32)
    return (traj["ep_return"] * done).sum() / jnp.maximum(done.sum(), 1.0)


def recorded_active(active: jax.Array, enabled: bool) -> jax.Array:
    """What a rollout records as the active agent-steps: the env's flags with ``active_masks``, else all.

    The losses always average over the recorded steps, so the option changes only this record; with every
    agent active the two settings compile to the same program and train bit for bit alike.
    """
    return active if enabled else jnp.ones_like(active)


def active_steps(traj: dict[str, jax.Array]) -> jax.Array | None:
    """The recorded [T, E, N] mask of the agent-steps that count; a trajectory without one counts them all."""
    return traj.get("active")


def masked_normalise(x: jax.Array, active: jax.Array | None, axis: int | tuple[int, ...] | None = None,
                     eps: float = 1e-8) -> jax.Array:
    """Zero-mean unit-variance along ``axis`` with the statistics of the active entries only
    (:func:`jmarl.masks.masked_mean`); inactive entries come out as 0. ``active=None`` is
    :func:`jmarl.returns.normalise`."""
    if active is None:
        return normalise(x, axis=axis, eps=eps)
    active = jnp.broadcast_to(active, x.shape)
    mean = masked_mean(x, active, axis, keepdims=True)
    std = jnp.sqrt(masked_mean(jnp.square(x - mean), active, axis, keepdims=True))
    return jnp.where(active, (x - mean) / (std + eps), jnp.zeros_like(x))


def update(learner: Any, state: Any) -> tuple[Any, dict[str, jax.Array]]:
    """One iteration: ``learner.collect`` then ``learner.learn`` from the rollout's first carries."""
    carries0 = state.carries
    state, traj = learner.collect(state)
    state, metrics = learner.learn(state, carries0, traj)
    metrics["episode_return"] = completed_episode_return(traj)
    return state, metrics


def check_minibatches(num_envs: int, num_minibatches: int) -> None:
    if num_envs % num_minibatches:
        raise ConfigError(f"num_envs ({num_envs}) must be divisible by num_minibatches ({num_minibatches})")


def entropy_coef(config: Any, steps_per_update: int, update_count: jax.Array) -> jax.Array:
    """``config.ent_coef``, or its linear anneal to ``ent_coef_final`` over the first ``ent_anneal_frac``
    of the planned updates (then constant): TAD-PPO / MAPPO's and HAPPO's schedule."""
    if config.ent_coef_final is None:
        return jnp.asarray(config.ent_coef, jnp.float32)
    span = max(1.0, config.ent_anneal_frac * math.ceil(config.total_steps / steps_per_update))
    frac = jnp.minimum(update_count / span, 1.0)
    return config.ent_coef + (config.ent_coef_final - config.ent_coef) * frac


def step_record(ts: Any, next_ts: Any, start: jax.Array, actions: jax.Array, logp: jax.Array, values: jax.Array,
                next_values: jax.Array, active_masks: bool) -> dict[str, jax.Array]:
    """What every on-policy rollout records of one env step (the learner adds its own extras): the inputs
    acted on, the action and its log-probability, the values before and after, and the env's outcome."""
    return dict(obs=ts.obs, avail=ts.avail_actions, reset=start, active=recorded_active(ts.active, active_masks),
                actions=actions, logp=logp, values=values, next_values=next_values, reward=next_ts.reward,
                terminated=next_ts.terminated, done=next_ts.done, ep_return=next_ts.info["episode_return"])
