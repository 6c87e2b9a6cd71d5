"""TAD-DQN's Markov game (tad_ppo.md App. D.5, Fig. 10: "a Markov Game (Matrix games with random
transition)"): the ten 5x5 matrix games of App. D.1 (Table 3) played one after another, the next game
drawn at random.

The paper names the game and gives nothing else; the choices here:

* States are the tables of a named matrix game (``game``, default ``"tad10"``: K = 10 tables, optimum 10
  each; envs.matrix's indexing, ``payoff[k, a_1, a_2]``). The start state is uniform over the K tables.
* Each step the team gets ``payoff[s, a_1, a_2]`` and the next table is drawn:
  - ``transitions="uniform"`` (default): uniformly over the K tables, whatever the agents did. The optimal
    policy then plays each table's best cell, and the optimum is ``episode_length`` x the mean of the
    tables' maxima (100 for tad10 and 10 steps).
  - ``transitions="random"``: from a fixed random distribution P(. | s, joint action), one per state and
    joint action (a Dirichlet(1, ..., 1) draw of ``numpy.random.default_rng(seed)``), so what the agents
    do decides which tables they meet next. The optimum comes from backward induction over the horizon (in
    general it depends on the step, which recurrent agents can count, or ``observe_time``). With tad10
    every table's maximum is 10, so the optimum is still 10 per step and playing each table's best cell
    is optimal; the transitions change what the learners see, not the optimum.
* The game lasts exactly ``episode_length`` steps (default 10) and then *terminates* (a finite game, not
  a time limit): ``info["episode_return"]`` is the plain sum of the payoffs and ``spec.optimal_return``
  its exact optimum in expectation.
* Full observation: every agent sees the one-hot id of the table in play (``observe_time`` appends
  ``t / episode_length``); the global state is the same vector. All actions are always available;
  out-of-range actions inside jit are clipped into [0, A-1], as in envs.matrix.
* ``info["matrix"]`` is the table of the step just played (after ``reset``: the first table).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep
from envs.matrix import named_matrix_game


@struct.dataclass
class MarkovMatrixState:
    matrix: Array  # int32 [], the table in play
    time: Array  # int32 [], steps played in this episode


def transition_table(num_states: int, num_joint: int, transitions: str, seed: int) -> np.ndarray:
    """P(s' | s, j) as float64 [K, J, K]: uniform rows, or one Dirichlet(1) draw per (s, j) from ``seed``."""
    if transitions == "uniform":
        return np.full((num_states, num_joint, num_states), 1.0 / num_states)
    if transitions == "random":
        return np.random.default_rng(seed).dirichlet(np.ones(num_states), size=(num_states, num_joint))
    raise ValueError(f"transitions must be 'uniform' or 'random', got {transitions!r}")


def optimal_values(reward: np.ndarray, probs: np.ndarray, horizon: int) -> np.ndarray:
    """Backward induction: V_t(s) for t = 0..horizon ([horizon + 1, K], V_horizon = 0), where
    V_t(s) = max_j reward[s, j] + sum_s' probs[s, j, s'] V_{t+1}(s')."""
    values = np.zeros((horizon + 1, reward.shape[0]))
    for t in range(horizon - 1, -1, -1):
        values[t] = (reward + probs @ values[t + 1]).max(axis=1)
    return values


class MarkovMatrixGame(MultiAgentEnv):
    """The tables of ``game`` as states of a Markov game; see the module docstring."""

    def __init__(self, *, game: str = "tad10", episode_length: int = 10, transitions: str = "uniform",
                 seed: int = 0, observe_time: bool = False):
        if isinstance(episode_length, bool) or not isinstance(episode_length, int) or episode_length < 1:
            raise ValueError(f"episode_length must be a positive int, got {episode_length!r}")
        tables = named_matrix_game(game)
        payoff = np.asarray(tables.payoff, np.float64)  # [K, A, ..., A]
        k, n, a = payoff.shape[0], payoff.ndim - 1, payoff.shape[1]
        self._k, self._n, self._a, self._length = k, n, a, episode_length
        self._observe_time = bool(observe_time)
        reward = payoff.reshape(k, -1)  # [K, J], joint index j = sum_i a_i A^(n-1-i)
        self.probs = transition_table(k, reward.shape[1], transitions, seed)  # float64 [K, J, K]
        self.payoff = jnp.asarray(payoff, jnp.float32)
        self._reward = jnp.asarray(reward, jnp.float32)
        self._logits = jnp.log(jnp.asarray(self.probs, jnp.float32))
        self._strides = jnp.asarray(a ** np.arange(n - 1, -1, -1), jnp.int32)
        values = optimal_values(reward, self.probs, episode_length)
        dim = k + int(self._observe_time)
        self.spec = EnvSpec(
            name=f"markov_matrix_{game}",
            num_agents=n,
            obs_dim=dim,
            state_dim=dim,
            num_actions=a,
            episode_limit=episode_length,
            reward_bounds=(float(payoff.min()), float(payoff.max())),
            optimal_return=float(values[0].mean()),
            has_won=False,
            source=f"TAD-PPO App. D.5 (Markov game of matrix games, {transitions} transitions); "
                   f"tables: {tables.spec.source}",
        )

    @property
    def num_states(self) -> int:
        return self._k

    def _timestep(self, state: MarkovMatrixState, played: Array, reward: Array | float = 0.0,
                  terminated: Array | bool = False) -> TimeStep:
        vec = jax.nn.one_hot(state.matrix, self._k, dtype=jnp.float32)
        if self._observe_time:
            vec = jnp.concatenate([vec, (state.time / self._length).astype(jnp.float32)[None]])
        obs = jnp.broadcast_to(vec, (self._n, vec.shape[0]))
        avail = jnp.ones((self._n, self._a), bool)
        return make_timestep(obs, vec, avail, reward, terminated, matrix=played.astype(jnp.int32))

    def reset_env(self, key: PRNGKey) -> tuple[MarkovMatrixState, TimeStep]:
        matrix = jax.random.randint(key, (), 0, self._k, jnp.int32)
        state = MarkovMatrixState(matrix, jnp.zeros((), jnp.int32))
        return state, self._timestep(state, matrix)

    def step_env(self, key: PRNGKey, state: MarkovMatrixState, actions: Array) -> tuple[MarkovMatrixState, TimeStep]:
        joint = (jnp.clip(actions, 0, self._a - 1) * self._strides).sum()
        reward = self._reward[state.matrix, joint]
        nxt = jax.random.categorical(key, self._logits[state.matrix, joint]).astype(jnp.int32)
        new = MarkovMatrixState(nxt, state.time + 1)
        return new, self._timestep(new, state.matrix, reward, terminated=new.time >= self._length)
