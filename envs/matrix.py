"""One-step cooperative matrix games (single or multi-task) and the named tables from the papers.

Indexing convention, everywhere in this module: ``payoff[a_1, a_2, ..., a_n]``: axis ``i`` is indexed by
the action of agent ``i`` (agent 0 is the paper's first player, a_1).  Tables that a paper prints with
rows = a_2 and columns = a_1 are stored here transposed, so the convention holds for every game; each
named game below says how its printed table was read.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, concrete_or_none, make_timestep

# TAD-PPO (tad_ppo.md) App. D.1, Table 3, exactly as printed: rows are a_2's action, columns a_1's.
# (Rows 4 of matrices 8 and 10 are printed identically; kept as printed.)
_TAD10_PRINTED = (
    ((10, -10, -10, -10, -10),
     (-10, 9, 0, 0, 0),
     (-10, 0, 9, 0, 0),
     (-10, 0, 0, 9, 0),
     (-10, 0, 0, 0, 9)),
    ((10, -10, 10, -10, 10),
     (-10, 10, -10, 10, -10),
     (10, -10, 10, -10, 10),
     (-10, 10, -10, 10, -10),
     (10, -10, 10, -10, 10)),
    ((-20, -20, -20, -20, 10),
     (-20, -20, -20, 10, 9),
     (-20, -20, 10, 9, 9),
     (-20, 10, 9, 9, 9),
     (10, 9, 9, 9, 9)),
    ((-20, -20, -20, -20, 10),
     (-20, -20, -20, 10, 9),
     (-20, -20, 10, 9, 8),
     (-20, 10, 9, 8, 7),
     (10, 9, 8, 7, 6)),
    ((-20, -15, -10, -5, 6),
     (-20, -15, -10, 7, 5),
     (-20, -15, 8, 6, 4),
     (-20, 9, 7, 5, 3),
     (10, 8, 6, 4, 2)),
    ((0.8, -16.0, -5.0, -10.9, -3.7),
     (-9.2, -4.2, 7.3, 9.6, -3.0),
     (-20.0, -18.1, 0.2, -4.3, 9.0),
     (-14.9, -2.0, -17.7, -17.6, -0.8),
     (3.8, 10, 7.5, 9.2, -10.7)),
    ((-14.4, -15.8, 1.5, -5.4, 10),
     (-13.2, 5.8, -8.7, -2.2, -18.2),
     (-5.9, -19.0, -0.7, -2.0, -19.5),
     (0.8, 4.7, -14.8, 2.5, -4.1),
     (-11.3, -8.2, -20.0, -17.3, -17.6)),
    ((-1.4, -19.2, 7.2, -5.5, 7.4),
     (-18.5, -20.0, -14.4, -17.6, -5.1),
     (3.6, 5.5, 10, -13.3, -4.9),
     (9.8, -12.3, 0.6, -16.5, -13.0),
     (-11.8, -20.0, -2.4, 7.1, -2.3)),
    ((-4.5, -5.2, -8.4, -8.9, 5.5),
     (-12.4, -9.5, 8.8, 5.4, 4.4),
     (-4.6, 1.3, 5.5, 7.3, -6.8),
     (9.0, -18.7, -18.2, -13.7, -8.2),
     (2.2, -9.1, 10, 7.1, -20.0)),
    ((-8.4, -1.8, -20.0, 7.3, -3.0),
     (-8.7, 1.7, 4.8, 2.0, -7.8),
     (-13.3, -3.2, 0.7, -1.8, -10.7),
     (9.8, -12.3, 0.6, -16.5, -13.0),
     (1.8, 2.9, -1.1, 10, 8.2)),
)

# DPO (dpo.md) App. C, Table 3: rows are agent 1's actions (probabilities p, 1-p), columns agent 2's
# (q, 1-q); the printed (a, b, c, d) fill [[a, b], [c, d]], so no transpose is needed.
_DPO_ABCD = {
    "dpo1": (5, 7, 6, 4),
    "dpo2": (1, 3, 5, 4),
    "dpo3": (7, 1, 1, 3),
    "dpo4": (20, 0, 0, 10),
}


@struct.dataclass
class MatrixState:
    task: Array  # int32 [], index of the payoff table in play


def _as_payoff(payoff: Any, num_agents: int | None) -> np.ndarray:
    """Validate a payoff and return it as float32 [K, A, ..., A] (K tasks, one axis per agent)."""
    try:
        table = np.asarray(payoff)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"payoff must be a rectangular array, got a ragged nesting ({err})") from None
    if table.dtype == object or not (np.issubdtype(table.dtype, np.integer) or
                                     np.issubdtype(table.dtype, np.floating)):
        raise ValueError(f"payoff must hold real numbers (int or float), got dtype {table.dtype}")
    if table.size == 0:
        raise ValueError(f"payoff must not be empty, got shape {table.shape}")
    if not np.isfinite(table).all():
        raise ValueError("payoff must be finite (no NaN or inf entries)")
    if num_agents is not None:
        if isinstance(num_agents, bool) or not isinstance(num_agents, int) or num_agents < 2:
            raise ValueError(f"num_agents must be an int >= 2 (or None to infer it), got {num_agents!r}")
        if table.ndim == num_agents:
            table = table[None]
        elif table.ndim != num_agents + 1:
            raise ValueError(
                f"payoff for {num_agents} agents must have {num_agents} dims (one game) or "
                f"{num_agents + 1} dims (tasks first), got shape {table.shape}"
            )
    else:
        if table.ndim < 2:
            raise ValueError(
                "payoff needs at least 2 dims (one axis per agent, at least 2 agents), "
                f"got shape {table.shape}"
            )
        if len(set(table.shape)) == 1:
            table = table[None]  # every axis the same length: one game, one axis per agent
    if table.ndim < 3:
        raise ValueError(
            f"every agent must have the same number of actions: a 2-dim payoff must be square, got shape "
            f"{table.shape}"
        )
    if len(set(table.shape[1:])) != 1:
        raise ValueError(
            "every agent must have the same number of actions: payoff shape must be [A]*n or "
            f"[K]+[A]*n, got {table.shape}"
        )
    return table.astype(np.float32)


class MatrixGame(MultiAgentEnv):
    """A one-step cooperative game: every agent picks an action and the team gets the table entry.

    ``payoff`` has shape ``[A]*n`` (one game) or ``[K]+[A]*n`` (K tasks).  When every axis has the same
    length the array is read as one game; pass ``num_agents`` to say otherwise (e.g. a [2, 2, 2] array
    with ``num_agents=2`` is two 2x2 tasks).  Reward = ``payoff[task, a_1, ..., a_n]`` with axis i
    indexed by agent i's action (agent 0 first).

    A task is drawn uniformly at reset.  With ``tasks_observed`` every agent sees its one-hot id (with
    one task, a constant [1.0]); otherwise agents see [1.0] and only the global state holds the id.
    One step, then ``terminated`` (never truncated).  All actions are always available; out-of-range
    actions inside jit (the base class rejects concrete ones) are clipped into [0, A-1].
    ``info["task"]`` is the task id of the episode.
    """

    def __init__(
        self,
        payoff: Any,
        *,
        name: str = "matrix",
        num_agents: int | None = None,
        tasks_observed: bool = True,
        source: str = "user-supplied payoff table",
    ):
        table = _as_payoff(payoff, num_agents)
        self.payoff = jnp.asarray(table)  # [K, A, ..., A] float32
        k, a, n = table.shape[0], table.shape[1], table.ndim - 1
        self._num_tasks, self._n, self._a = k, n, a
        self._tasks_observed = bool(tasks_observed)
        flat = table.reshape(k, -1).astype(np.float64)
        # Agents that see the task can play each task's best cell; blind agents can only commit to the
        # one joint action that is best on average (one state: no randomisation beats a pure joint action).
        best = flat.max(axis=1).mean() if (self._tasks_observed or k == 1) else flat.mean(axis=0).max()
        self._optimal_score = float(flat.max(axis=1).sum())
        self._strides = jnp.asarray(a ** np.arange(n - 1, -1, -1), jnp.int32)
        obs_dim = k if (self._tasks_observed and k > 1) else 1
        self.spec = EnvSpec(
            name=name,
            num_agents=n,
            obs_dim=obs_dim,
            state_dim=k,
            num_actions=a,
            episode_limit=1,
            reward_bounds=(float(table.min()), float(table.max())),
            optimal_return=float(best),
            has_won=False,
            source=source,
        )

    @property
    def num_tasks(self) -> int:
        return self._num_tasks

    @property
    def optimal_score(self) -> float:
        """Sum over tasks of each table's maximum (TAD-PPO's score for a perfect greedy policy)."""
        return self._optimal_score

    def _observe(self, task: Array) -> tuple[Array, Array]:
        state = jax.nn.one_hot(task, self._num_tasks, dtype=jnp.float32)
        own = state if self.spec.obs_dim == self._num_tasks else jnp.ones((1,), jnp.float32)
        return jnp.broadcast_to(own, (self._n, self.spec.obs_dim)), state

    def _timestep(self, task: Array, reward: Array | float = 0.0, terminated: bool = False) -> TimeStep:
        obs, state = self._observe(task)
        avail = jnp.ones((self._n, self._a), bool)
        return make_timestep(obs, state, avail, reward, terminated, task=task.astype(jnp.int32))

    def reset_env(self, key: PRNGKey) -> tuple[MatrixState, TimeStep]:
        # Raw bits modulo K (bias below K / 2**32) compile much faster than randint.
        task = (jax.random.bits(key, (), jnp.uint32) % jnp.uint32(self._num_tasks)).astype(jnp.int32)
        return MatrixState(task), self._timestep(task)

    def reset_task(self, key: PRNGKey, task: int | Array) -> tuple[Any, TimeStep]:
        """Like ``reset`` but with the given task (for evaluating every task in turn).

        A concrete task outside [0, K-1] raises a ValueError; a traced one is clipped into range.
        Call it on the unwrapped env (wrappers pass it through without their extras).
        """
        task = jnp.asarray(task)
        if not jnp.issubdtype(task.dtype, jnp.integer) or task.shape != ():
            raise ValueError(f"task must be a scalar int, got {task.dtype} of shape {task.shape}")
        if (value := concrete_or_none(task)) is not None and not 0 <= int(value) < self._num_tasks:
            raise ValueError(f"task must lie in [0, {self._num_tasks - 1}], got {int(task)}")
        task = jnp.clip(task, 0, self._num_tasks - 1).astype(jnp.int32)
        state, ts = self.reset(key)
        fixed = self._timestep(task)
        ts = ts.replace(obs=fixed.obs, state=fixed.state, info={**ts.info, "task": task})
        return state.replace(env_state=MatrixState(task)), ts

    def _payoff_at(self, task: Array, actions: Array) -> Array:
        actions = jnp.clip(actions, 0, self._a - 1)
        cell = task * (self._a ** self._n) + (actions * self._strides).sum(-1)
        return self.payoff.reshape(-1)[cell]

    def step_env(self, key: PRNGKey, state: MatrixState, actions: Array) -> tuple[MatrixState, TimeStep]:
        reward = self._payoff_at(state.task, actions)
        return state, self._timestep(state.task, reward, terminated=True)

    def score(self, joint_actions: Any) -> Array:
        """Sum over tasks k of ``payoff[k][joint_actions[k]]``; ``joint_actions`` is int [K, n].

        With each task's greedy joint action this is TAD-PPO's matrix score (optimum ``optimal_score``).
        """
        joint = jnp.asarray(joint_actions)
        if joint.shape != (self._num_tasks, self._n) or not jnp.issubdtype(joint.dtype, jnp.integer):
            raise ValueError(
                f"joint_actions must be ints of shape ({self._num_tasks}, {self._n}) (one joint action per "
                f"task), got {joint.dtype} of shape {joint.shape}"
            )
        if (value := concrete_or_none(joint)) is not None and (value.min() < 0 or value.max() >= self._a):
            raise ValueError(f"joint_actions must lie in [0, {self._a - 1}], got {joint.tolist()}")
        return self._payoff_at(jnp.arange(self._num_tasks), joint).sum()


def _named_payoff(game: str) -> tuple[np.ndarray, str]:
    if game == "tad10":
        printed = np.asarray(_TAD10_PRINTED, np.float32)  # [task, a_2, a_1]
        return printed.transpose(0, 2, 1), "TAD-PPO App. D.1, Table 3 (printed rows = a_2, columns = a_1)"
    if game == "qtran":
        table = np.array([[8, -12, -12], [-12, 0, 0], [-12, 0, 0]], np.float32)
        return table, "QTRAN's matrix as shown in TAD-PPO Fig. 3a (symmetric)"
    if game == "penalty":
        table = np.array([[10, -30, -30], [-30, 5, -30], [-30, -30, 1]], np.float32)
        return table, "TAD-PPO Table 1 (symmetric)"
    if game in _DPO_ABCD:
        a, b, c, d = _DPO_ABCD[game]
        source = f"DPO App. C, Table 3, matrix game {game[-1]} (rows = agent 1)"
        return np.array([[a, b], [c, d]], np.float32), source
    valid = ", ".join(["tad10", "qtran", "penalty", *_DPO_ABCD])
    raise ValueError(f"unknown matrix game {game!r}; valid games: {valid}")


def named_matrix_game(game: str, *, tasks_observed: bool = True) -> MatrixGame:
    """Build a matrix game from the papers by name: "tad10", "qtran", "penalty", "dpo1".."dpo4".

    "tad10" is TAD-PPO's ten 5x5 tasks (optimum 10 each, ``optimal_score`` 100); the others are single
    two-agent games.  The registered env name is ``"matrix_" + game``.
    """
    table, source = _named_payoff(game)
    return MatrixGame(
        table, name=f"matrix_{game}", num_agents=2, tasks_observed=tasks_observed, source=source
    )
