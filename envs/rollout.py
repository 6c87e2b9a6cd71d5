"""Random-policy rollouts as one compiled program: jit(scan(vmap(step))).

Shared by the demo, the environment benchmark and the cross-env tests, so that all three measure
and check the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from envs.core import AutoReset, MultiAgentEnv, TimeStep, random_actions
from envs.registry import wrap


def make_random_rollout(
    env: MultiAgentEnv,
    num_envs: int,
    num_steps: int,
    record: Callable[[TimeStep, jax.Array, jax.Array], Any] | None = None,
) -> Callable[[jax.Array], Any]:
    """Return ``rollout(key)`` that steps ``num_envs`` auto-reset copies for ``num_steps`` steps.

    Actions are uniform over each agent's available actions. ``record(timestep, actions,
    avail_used)`` picks what to keep per step (default: episode statistics of finished episodes),
    so the caller controls how much memory the rollout returns.
    """
    env = env if isinstance(env, AutoReset) else wrap(env)
    if record is None:
        record = episode_record

    def rollout(key: jax.Array) -> Any:
        key_reset, key_steps = jax.random.split(key)
        state, ts = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))

        def body(carry, step_key):
            state, ts = carry
            act_key, env_key = jax.random.split(step_key)
            actions = jax.vmap(lambda k, avail: random_actions(k, avail, env.spec))(
                jax.random.split(act_key, num_envs), ts.avail_actions)
            state, next_ts = jax.vmap(env.step)(jax.random.split(env_key, num_envs), state, actions)
            return (state, next_ts), record(next_ts, actions, ts.avail_actions)

        _, out = jax.lax.scan(body, (state, ts), jax.random.split(key_steps, num_steps))
        return out

    return rollout


def episode_record(ts: TimeStep, actions: jax.Array, avail: jax.Array) -> dict[str, jax.Array]:
    """Per step and env: whether an episode ended and its return / length / win."""
    return {
        "done": ts.done,
        "episode_return": ts.info["episode_return"],
        "episode_length": ts.info["episode_length"],
        "won": ts.info["won"],
    }


def summarise_episodes(out: dict[str, jax.Array]) -> dict[str, float]:
    """Mean statistics over the episodes that finished during a rollout recorded by episode_record."""
    done = out["done"].astype(jnp.float32)
    n = done.sum()
    mean = lambda x: float((x.astype(jnp.float32) * done).sum() / jnp.maximum(n, 1.0))  # noqa: E731
    return {
        "episodes": int(n),
        "return": mean(out["episode_return"]),
        "length": mean(out["episode_length"]),
        "won": mean(out["won"]),
    }
