"""Exact values of policies on the small tabular envs, computed from the env's tables and a learner's
parameters only: an evaluation independent of ``env.step``, the training loop and the runner's metrics."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=8)
def _greedy_program(algo, batch: int):
    def act(params, obs, avail):
        carry, policy = algo.greedy_policy(params, batch)
        return policy(carry, obs, avail, jnp.ones(batch, bool))[1]

    return jax.jit(act)


def greedy_actions(algo, params, obs, avail) -> np.ndarray:
    """The learner's greedy decentralised actions [B, N] for a batch of first observations [B, N, D]
    (a fresh episode: reset carries)."""
    return np.asarray(_greedy_program(algo, obs.shape[0])(params, jnp.asarray(obs), jnp.asarray(avail)))


def stochastic_game_greedy(env, algo, params) -> np.ndarray:
    """A learner's greedy policy on a StochasticGame (observations are the one-hot state, so the policy is
    memoryless) as joint-action probabilities [S, J]: one-hot rows."""
    spec = env.spec
    if spec.obs_dim != env.tables()[0].shape[0]:
        raise ValueError("the observation is not the bare one-hot state (observe_time?)")
    obs = np.broadcast_to(np.eye(spec.obs_dim, dtype=np.float32)[:, None, :],
                          (spec.obs_dim, spec.num_agents, spec.obs_dim))
    actions = greedy_actions(algo, params, obs, np.ones((spec.obs_dim, spec.num_agents, spec.num_actions), bool))
    return np.eye(spec.num_actions ** spec.num_agents)[np.asarray(env.joint_index(actions))]


def stochastic_game_value(env, joint: np.ndarray) -> float:
    """Exact expected return of a StochasticGame (discount 1, uniform start state) under a memoryless
    policy given as joint-action probabilities [S, J], by backward induction over the game's tables
    (the policy's expected reward [S] and state-transition matrix [S, S], then one backup per step)."""
    reward, successors, probs = env.tables()
    reward, probs, successors = reward.astype(np.float64), probs.astype(np.float64), successors.astype(np.int64)
    num_states = reward.shape[0]
    policy_reward = (joint * reward).sum(-1)
    rows = np.broadcast_to(np.arange(num_states)[:, None, None], successors.shape)
    transition = np.bincount((rows * num_states + successors).ravel(), (joint[..., None] * probs).ravel(),
                             num_states * num_states).reshape(num_states, num_states)
    value = np.zeros(num_states)
    for _ in range(env.spec.episode_limit):
        value = policy_reward + transition @ value
    return float(value.mean())


def uniform_joint(env) -> np.ndarray:
    """The uniform random policy of a StochasticGame as joint-action probabilities [S, J]."""
    num_joint = env.spec.num_actions ** env.spec.num_agents
    return np.full((env.tables()[0].shape[0], num_joint), 1.0 / num_joint)


def run_params(state, r: int):
    """Run ``r``'s parameters out of a train state with the run axis first."""
    return jax.tree.map(lambda x: x[r], state.params)
