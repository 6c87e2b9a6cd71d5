"""TAD-PPO's two-agent hallway: a multi-step coordination task with a tempting local optimum.

Both agents must arrive at the same goal in the same step. The near goal (one step away) pays less
than the far one (three steps away), so value-decomposition and independent policy-gradient learners
tend to settle on the near goal (return 4) instead of the far one (return 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep

NUM_CELLS = 5
G2_CELL = 0  # the near goal, one cell left of the start
START_CELL = 1
G1_CELL = NUM_CELLS - 1  # the far goal, three cells right of the start
LEFT, RIGHT = 0, 1
STEP_REWARD = -1.0
G1_REWARD = 8.0
G2_REWARD = 5.0


@struct.dataclass
class HallwayState:
    positions: Array  # [2] int32 cell index of each agent


class Hallway(MultiAgentEnv):
    """Two agents on a 5-cell line ``g2 | s0 | . | . | g1``, both starting on ``s0`` (cell 1).

    Actions: 0 = left, 1 = right (the paper's two moves; there is no stay action). Both are always
    available. Action values outside {0, 1}, which ``check_actions`` can only reject when they are
    concrete, leave the agent where it is. Agents may share a cell.

    Every step costs the team -1, the step that ends the episode included. After the moves:

    - both agents on g1 (cell 4): terminated, reward -1 + 8 = 7, ``won``;
    - both agents on g2 (cell 0): terminated, reward -1 + 5 = 4, ``won``;
    - any other case with at least one agent on a goal (one arrives first, or they arrive at
      different goals in the same step): terminated, reward -1, no goal reward;
    - otherwise the episode goes on with reward -1 and is truncated at ``episode_limit``.

    So walking right three times returns 5 (the optimum) and one step left returns 4 (the local
    optimum). The ends of the hallway are the goals, which end the episode, so no agent ever pushes
    against a wall in a reachable state; positions are clipped to the hallway all the same (a move
    out of it leaves the agent in place).

    ``won`` follows the paper: both agents reached the same goal together. ``info["reached_g1"]``
    marks the coordinated arrival at the far goal, i.e. the globally optimal outcome.

    Observation: the paper's agents see both positions, so by default each agent observes the one-hot
    of its own cell then the one-hot of the other agent's cell (10 numbers). ``full_observation=False``
    keeps only the own-cell one-hot (5 numbers), a partially observable variant. The state is the
    one-hot cell of agent 0 then of agent 1 (10 numbers).
    """

    def __init__(self, *, full_observation: bool = True, episode_limit: int = 100) -> None:
        if not isinstance(full_observation, bool):
            raise ValueError(f"Hallway: full_observation must be True or False, got {full_observation!r}")
        if isinstance(episode_limit, bool) or not isinstance(episode_limit, int) or episode_limit < 1:
            raise ValueError(f"Hallway: episode_limit must be a positive int (paper: 100), got {episode_limit!r}")
        self.full_observation = full_observation
        steps_to_g1 = G1_CELL - START_CELL
        steps_to_g2 = START_CELL - G2_CELL
        # The best episode: both walk to g1 together if the limit allows, else both to g2.
        optimum = G1_REWARD + STEP_REWARD * steps_to_g1
        if episode_limit < steps_to_g1:
            optimum = G2_REWARD + STEP_REWARD * steps_to_g2
        self.spec = EnvSpec(
            name="hallway",
            num_agents=2,
            obs_dim=2 * NUM_CELLS if full_observation else NUM_CELLS,
            state_dim=2 * NUM_CELLS,
            num_actions=2,
            episode_limit=episode_limit,
            reward_bounds=(STEP_REWARD, STEP_REWARD + G1_REWARD),
            optimal_return=optimum,
            has_won=True,
            source="TAD-PPO (tad_ppo.md), App. E, Fig. 13-14",
        )

    def _timestep(self, positions: Array, reward: Array | float, terminated: Array | bool,
                  won: Array | bool, reached_g1: Array | bool) -> TimeStep:
        cells = jax.nn.one_hot(positions, NUM_CELLS, dtype=jnp.float32)  # [2, 5]
        obs = jnp.concatenate([cells, cells[::-1]], axis=-1) if self.full_observation else cells
        return make_timestep(
            obs=obs,
            state=cells.reshape(-1),
            avail_actions=jnp.ones((2, 2), bool),
            reward=reward,
            terminated=terminated,
            won=won,
            reached_g1=jnp.asarray(reached_g1, bool),
        )

    def reset_env(self, key: PRNGKey) -> tuple[HallwayState, TimeStep]:
        positions = jnp.full((2,), START_CELL, jnp.int32)
        return HallwayState(positions), self._timestep(positions, 0.0, False, False, False)

    def step_env(self, key: PRNGKey, state: HallwayState, actions: Array) -> tuple[HallwayState, TimeStep]:
        move = jnp.where(actions == LEFT, -1, jnp.where(actions == RIGHT, 1, 0))
        positions = jnp.clip(state.positions + move, 0, NUM_CELLS - 1).astype(jnp.int32)
        on_g1 = positions == G1_CELL
        on_g2 = positions == G2_CELL
        both_g1 = jnp.all(on_g1)
        both_g2 = jnp.all(on_g2)
        terminated = jnp.any(on_g1 | on_g2)
        reward = STEP_REWARD + G1_REWARD * both_g1 + G2_REWARD * both_g2
        won = both_g1 | both_g2
        return HallwayState(positions), self._timestep(positions, reward, terminated, won, both_g1)
