"""Greedy decentralised evaluation inside the compiled program.

Runs ``episodes`` fresh environments until each has finished its first episode (at most the
episode limit) and reports a small fixed set of scalars: the mean return, the win rate where the
env defines a win, and the gap to the optimum where the env knows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from envs import MultiAgentEnv
from envs.matrix import MatrixGame

# Folded into the train state's key to make the evaluation's key; every recorded evaluation depends on it.
EVAL_SALT = 0x5EED


def evaluation_key(train_key: jax.Array) -> jax.Array:
    """The evaluation's key, derived from the train state's key without splitting it: evaluating leaves
    the training's random stream untouched, so a run trains the same whatever its evaluation schedule."""
    return jax.random.fold_in(train_key, EVAL_SALT)


def evaluate_greedy(
    env: MultiAgentEnv,
    policy: Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array]],
    init_carry: Any,
    key: jax.Array,
    episodes: int,
) -> dict[str, jax.Array]:
    """``env`` is auto-reset and wrapped like the training env; ``policy(carry, obs, avail, reset)``
    maps batched [episodes, N, ...] inputs to (carry, actions [episodes, N]) deterministically."""
    spec = env.spec
    key_reset, key_steps = jax.random.split(key)
    state, ts = jax.vmap(env.reset)(jax.random.split(key_reset, episodes))
    zeros = jnp.zeros(episodes, jnp.float32)
    carry0 = (state, ts, init_carry, jnp.ones(episodes, bool), zeros, zeros, jnp.zeros(episodes, bool))

    def body(carry, step_key):
        state, ts, policy_carry, reset, ret, won, finished = carry
        policy_carry, actions = policy(policy_carry, ts.obs, ts.avail_actions, reset)
        state, ts = jax.vmap(env.step)(jax.random.split(step_key, episodes), state, actions)
        first_end = ts.done & ~finished
        ret = jnp.where(first_end, ts.info["episode_return"], ret)
        won = jnp.where(first_end, ts.info["won"].astype(jnp.float32), won)
        return (state, ts, policy_carry, ts.done, ret, won, finished | ts.done), None

    (_, _, _, _, ret, won, _), _ = jax.lax.scan(body, carry0, jax.random.split(key_steps, spec.episode_limit))
    out = {"return": ret.mean()}
    if spec.has_won:
        out["won"] = won.mean()
    if spec.optimal_return is not None:
        out["optimality_gap"] = spec.optimal_return - ret.mean()
    return out


def matrix_score(env: MultiAgentEnv, make_policy: Callable[[int], tuple[Any, Callable]]) -> jax.Array:
    """Matrix games: the sum over tasks of the payoff of the greedy joint action (TAD-PPO's score, optimum
    100 on matrix_tad10). ``make_policy(batch)`` gives (carry, policy) in :func:`evaluate_greedy`'s form;
    each task's first observation is the raw game's."""
    raw = env.unwrapped
    ts = jax.vmap(lambda task: raw.reset_task(jax.random.PRNGKey(0), task)[1])(jnp.arange(raw.num_tasks))
    carry, policy = make_policy(raw.num_tasks)
    _, joint = policy(carry, ts.obs, ts.avail_actions, jnp.ones(raw.num_tasks, bool))
    return raw.score(joint)


def evaluate_with_score(env: MultiAgentEnv, make_policy: Callable[[int], tuple[Any, Callable]], key: jax.Array,
                        episodes: int) -> dict[str, jax.Array]:
    """:func:`evaluate_greedy` of ``make_policy(episodes)``, plus ``score`` on matrix games."""
    carry, policy = make_policy(episodes)
    out = evaluate_greedy(env, policy, carry, key, episodes)
    if isinstance(env.unwrapped, MatrixGame):
        out["score"] = matrix_score(env, make_policy)
    return out
