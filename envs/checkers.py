"""VDN's checkers (used by LAN to probe credit assignment): apples and lemons on a 3x8 board.

Agent 1 values fruit ten times more than agent 2, so the best team plan has agent 2 take the small
loss of eating the lemons that stand between agent 1 and the apples. A learner that credits each
agent with its own immediate reward never finds it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep

ROWS, COLS = 3, 8
FRUIT_COLS = 6  # columns 0-5 hold fruit, columns 6-7 start empty
START = ((0, 6), (2, 6))  # (row, col) of agent 1 and agent 2
APPLE_REWARD = (10.0, 1.0)  # per agent; a lemon gives minus the same
# Actions as in ma-gym's checkers: row/col offsets of down, left, up, right, noop.
MOVES = np.array([[1, 0], [0, -1], [-1, 0], [0, 1], [0, 0]], np.int32)
NOOP = 4
# Observation window channels.
LEMON, APPLE, AGENT1, AGENT2, WALL = range(5)
NUM_CHANNELS = 5
WINDOW = 3
OBS_DIM = 2 + WINDOW * WINDOW * NUM_CHANNELS  # 47
STATE_DIM = ROWS * COLS * 4 + 4  # 100
# The best item outcome (every apple to agent 1, the three lemons of row 1 to agent 2); see Checkers.
OPTIMAL_ITEM_RETURN = 9 * APPLE_REWARD[0] - 3 * APPLE_REWARD[1]


def initial_fruit() -> tuple[np.ndarray, np.ndarray]:
    """(apples, lemons) as [3, 8] bool: rows 0 and 2 have apples at even columns, row 1 at odd ones."""
    row, col = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    fruit = col < FRUIT_COLS
    apples = fruit & ((row + col) % 2 == 0)
    lemons = fruit & ((row + col) % 2 == 1)
    return apples, lemons


@struct.dataclass
class CheckersState:
    positions: Array  # [2, 2] int32 (row, col) of agent 1 and agent 2
    apples: Array  # [3, 8] bool
    lemons: Array  # [3, 8] bool


class Checkers(MultiAgentEnv):
    """Two agents on a 3x8 grid of apples and lemons (VDN §4.2, LAN §5.3; public version: ma-gym).

    Board: in columns 0-5, rows 0 and 2 hold apples at even columns and lemons at odd columns, row 1
    the reverse; columns 6-7 are empty (9 apples, 9 lemons). Agent 1 starts at (0, 6), agent 2 at
    (2, 6). Rows grow downwards.

    Actions (ma-gym's order): 0 down, 1 left, 2 up, 3 right, 4 noop; all are always available. A move
    off the grid or into the other agent's cell fails and the agent stays. Moves are resolved in
    order, agent 1 first (as in ma-gym): agent 1 is blocked by agent 2's current cell, then agent 2 is
    blocked by agent 1's new cell, so agent 2 may step into the cell agent 1 just left but a swap
    fails for both. Out-of-range action values under ``jit`` act as noop.

    Entering a cell eats its fruit: an apple gives +10 to agent 1 and +1 to agent 2, a lemon -10 and
    -1. The team reward is the sum of both agents' rewards plus ``step_cost`` per agent per step
    (ma-gym uses -0.01; the papers have none, so it is off by default). The episode terminates when
    no apple is left (the papers' rule) and is truncated at ``episode_limit`` (100 in LAN).

    Observation (47): own (row / 3, col / 7) as in ma-gym, then the 3x3 window centred on the agent,
    flattened row-major, each cell a 5-way one-hot (lemon, apple, agent 1, agent 2, wall). Cells off
    the grid are marked wall (ma-gym leaves them all zero, which never uses its wall channel). The
    agent's own cell shows itself. State (100): the whole grid, row-major, each cell (lemon, apple,
    agent 1, agent 2), then (row / 3, col / 7) of agent 1 and of agent 2.

    Optimal return (with ``step_cost == 0``): 87 = 9 x 10 - 3. Upper bound: agent 1 must eat all 9
    apples (with 8 or fewer the team gets at most 80 + 1), and apples sit on the cells where
    row + col is even, so agent 1's walk alternates with odd cells; in columns 0-5 those hold lemons.
    The apples and the empty columns 6-7 are connected through no fewer than three lemon cells (the
    three of row 1 do it), and each must be eaten, at -1 at best (by agent 2). A 45-step plan reaches
    87: agent 2 clears the row-1 lemons one at a time, stepping back each time to let agent 1 through.
    With a nonzero ``step_cost`` (the best trade-off between steps and lemons is not worked out) or an
    ``episode_limit`` below 45 (no shorter plan is known), ``optimal_return`` is None.
    """

    def __init__(self, *, step_cost: float = 0.0, episode_limit: int = 100) -> None:
        if isinstance(step_cost, bool) or not isinstance(step_cost, (int, float)) or not math.isfinite(step_cost):
            raise ValueError(f"Checkers: step_cost must be a finite number <= 0, got {step_cost!r}")
        if step_cost > 0:
            raise ValueError(
                f"Checkers: step_cost is added to each agent's reward every step and must be <= 0 "
                f"(ma-gym uses -0.01), got {step_cost!r}"
            )
        if isinstance(episode_limit, bool) or not isinstance(episode_limit, int) or episode_limit < 1:
            raise ValueError(f"Checkers: episode_limit must be a positive int (LAN: 100), got {episode_limit!r}")
        self.step_cost = float(step_cost)
        team_cost = 2 * self.step_cost
        best_step = APPLE_REWARD[0] + APPLE_REWARD[1]  # both agents eat an apple in the same step
        optimum = OPTIMAL_ITEM_RETURN if step_cost == 0 and episode_limit >= 45 else None
        self.spec = EnvSpec(
            name="checkers",
            num_agents=2,
            obs_dim=OBS_DIM,
            state_dim=STATE_DIM,
            num_actions=len(MOVES),
            episode_limit=episode_limit,
            reward_bounds=(team_cost - best_step, team_cost + best_step),
            optimal_return=optimum,
            has_won=False,
            source="LAN (lan.md) §5.3, Fig. 5; VDN §4.2; ma-gym Checkers",
        )
        apples, lemons = initial_fruit()
        self._apples0 = jnp.asarray(apples)
        self._lemons0 = jnp.asarray(lemons)
        self._moves = jnp.asarray(MOVES)
        self._apple_reward = jnp.asarray(APPLE_REWARD, jnp.float32)
        self._scale = jnp.asarray([ROWS, COLS - 1], jnp.float32)

    def _channels(self, state: CheckersState) -> Array:
        """[3, 8, 4] float32: lemon, apple, agent 1, agent 2 per cell."""
        agents = jnp.zeros((ROWS, COLS, 2), jnp.float32)
        agents = agents.at[state.positions[:, 0], state.positions[:, 1], jnp.arange(2)].set(1.0)
        fruit = jnp.stack([state.lemons, state.apples], axis=-1).astype(jnp.float32)
        return jnp.concatenate([fruit, agents], axis=-1)

    def _timestep(self, state: CheckersState, reward: Array | float, terminated: Array | bool) -> TimeStep:
        channels = self._channels(state)
        padded = jnp.pad(channels, ((1, 1), (1, 1), (0, 0)))
        wall = jnp.pad(jnp.zeros((ROWS, COLS, 1), jnp.float32), ((1, 1), (1, 1), (0, 0)), constant_values=1.0)
        padded = jnp.concatenate([padded, wall], axis=-1)  # [5, 10, 5]

        def window(pos: Array) -> Array:
            # Padded coordinates shift by one, so the window centred on pos starts at pos itself.
            return jax.lax.dynamic_slice(padded, (pos[0], pos[1], 0), (WINDOW, WINDOW, NUM_CHANNELS)).reshape(-1)

        coords = state.positions.astype(jnp.float32) / self._scale  # [2, 2]
        obs = jnp.concatenate([coords, jax.vmap(window)(state.positions)], axis=-1)
        return make_timestep(
            obs=obs,
            state=jnp.concatenate([channels.reshape(-1), coords.reshape(-1)]),
            avail_actions=jnp.ones((2, len(MOVES)), bool),
            reward=reward,
            terminated=terminated,
            apples_left=jnp.sum(state.apples, dtype=jnp.int32),
            lemons_left=jnp.sum(state.lemons, dtype=jnp.int32),
        )

    def reset_env(self, key: PRNGKey) -> tuple[CheckersState, TimeStep]:
        state = CheckersState(jnp.asarray(START, jnp.int32), self._apples0, self._lemons0)
        return state, self._timestep(state, 0.0, False)

    def _move(self, pos: Array, action: Array, blocker: Array) -> Array:
        """Where one agent ends up: its target if on the grid and not the blocker's cell, else pos."""
        safe = jnp.where((action >= 0) & (action < len(MOVES)), action, NOOP)
        target = pos + self._moves[safe]
        inside = (target[0] >= 0) & (target[0] < ROWS) & (target[1] >= 0) & (target[1] < COLS)
        free = jnp.any(target != blocker)
        return jnp.where(inside & free, target, pos)

    def step_env(self, key: PRNGKey, state: CheckersState, actions: Array) -> tuple[CheckersState, TimeStep]:
        p1 = self._move(state.positions[0], actions[0], state.positions[1])
        p2 = self._move(state.positions[1], actions[1], p1)
        positions = jnp.stack([p1, p2])
        rows, cols = positions[:, 0], positions[:, 1]
        # An agent that stayed stands on an already emptied cell, so "fruit under each agent" is
        # exactly what was eaten this step; the two agents never share a cell.
        ate_apple = state.apples[rows, cols]
        ate_lemon = state.lemons[rows, cols]
        per_agent = self._apple_reward * (ate_apple.astype(jnp.float32) - ate_lemon.astype(jnp.float32))
        reward = jnp.sum(per_agent) + 2 * self.step_cost
        apples = state.apples.at[rows, cols].set(False)
        lemons = state.lemons.at[rows, cols].set(False)
        new_state = CheckersState(positions, apples, lemons)
        return new_state, self._timestep(new_state, reward, ~jnp.any(apples))
