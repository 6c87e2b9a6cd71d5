"""Predator-prey with relative overgeneralisation (Böhmer et al. 2020's stag hunt, as used by ReMIX).

A prey is only caught when two adjacent agents choose "catch" in the same step, while a lone catcher is
punished.  With a large punishment, agents that judge "catch" by its average outcome learn to avoid it
(relative overgeneralisation), although coordinated catching is the only way to score.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep

RIGHT, DOWN, LEFT, UP, STAY, CATCH = range(6)
NUM_ACTIONS = 6
# (row, col) offset of each action; stay and catch do not move.
_OFFSETS = np.array([[0, 1], [1, 0], [0, -1], [-1, 0], [0, 0], [0, 0]], np.int32)
OBS_RADIUS = 2  # 5x5 window
NUM_CHANNELS = 3  # agents, prey, second prey type (always empty; kept for the reference layout)


@struct.dataclass
class PredatorPreyState:
    """Positions are (row, col) int32; a removed agent or caught prey keeps its last cell but occupies
    nothing, is not drawn and cannot act."""

    agent_pos: Array  # [N, 2]
    agent_alive: Array  # [N] bool
    prey_pos: Array  # [M, 2]
    prey_alive: Array  # [M] bool


def _occupied(
    cells: Array, agent_pos: Array, agent_alive: Array, prey_pos: Array, prey_alive: Array
) -> Array:
    """[K] bool: whether each of ``cells`` [K, 2] holds a present agent or prey."""
    on_agent = jnp.all(cells[:, None, :] == agent_pos[None], axis=-1) & agent_alive[None]
    on_prey = jnp.all(cells[:, None, :] == prey_pos[None], axis=-1) & prey_alive[None]
    return jnp.any(on_agent, axis=1) | jnp.any(on_prey, axis=1)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class PredatorPrey(MultiAgentEnv):
    """Bounded grid, ``num_agents`` predators hunting ``num_prey`` prey (ReMIX §5.1, App. D.1).

    Actions: 0 right (col+1), 1 down (row+1), 2 left (col-1), 3 up (row-1), 4 stay, 5 catch; row 0 is
    the top.  Each step:

    1. Present agents move one at a time in a random order; a move into a cell holding an agent or a prey
       leaves the agent where it is.
    2. Each present prey, in a random order: the present agents that chose catch and are 4-adjacent to it
       are its catchers.  Two or more: the prey is caught (+``capture_reward``) and it and its catchers
       leave the grid.  Exactly one: ``punishment`` is added (once per such prey, so a lone catcher next
       to two prey is punished twice).  If not caught, the prey steps to a uniformly random free
       4-neighbour, or stays if all are blocked.  As in the reference code, an agent removed by an
       earlier prey in this order no longer counts for later prey.
    3. The episode terminates when every prey is caught or every agent removed; the time limit
       ``episode_limit`` is a truncation.

    Available actions: moves that stay on the grid (moves into occupied cells are not masked), stay,
    and catch only next to a prey; removed agents may only stay and are not ``active``.  An unavailable
    action taken anyway acts as stay (it cannot move the agent, leave the grid or take part in a catch),
    and so does an out-of-range action index inside jit (outside jit the base class rejects it).

    Observation (75 values): the 5x5 window centred on the agent, laid out [row, col, channel] with
    channels (agents, prey, unused zeros); the agent sees itself at the centre, cells outside the grid
    read as zeros, and removed agents see all zeros.  State: the whole grid in the same layout
    (grid_size^2 x 3 = 300 by default).  ``info`` adds ``prey_remaining`` and ``agents_remaining``.
    The reward is never above ``capture_reward * min(num_prey, num_agents // 2)`` per step or per
    episode, which bounds the optimal return; its exact expectation is not known.
    """

    def __init__(
        self,
        *,
        punishment: float = -2.0,
        grid_size: int = 10,
        num_agents: int = 8,
        num_prey: int = 8,
        capture_reward: float = 10.0,
        episode_limit: int = 200,
    ):
        for field, value in (("grid_size", grid_size), ("num_agents", num_agents), ("num_prey", num_prey),
                             ("episode_limit", episode_limit)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"PredatorPrey: {field} must be a positive int, got {value!r}")
        grid_size, num_agents, num_prey = int(grid_size), int(num_agents), int(num_prey)
        episode_limit = int(episode_limit)
        if grid_size < 2:
            raise ValueError(f"PredatorPrey: grid_size must be at least 2, got {grid_size}")
        if num_agents + num_prey > grid_size * grid_size:
            raise ValueError(
                f"PredatorPrey: num_agents + num_prey ({num_agents + num_prey}) must fit on the "
                f"{grid_size}x{grid_size} grid (at most {grid_size * grid_size})"
            )
        if not _is_real(punishment) or not math.isfinite(punishment) or punishment > 0:
            raise ValueError(f"PredatorPrey: punishment must be a finite number <= 0, got {punishment!r}")
        if not _is_real(capture_reward) or not math.isfinite(capture_reward) or capture_reward <= 0:
            raise ValueError(
                f"PredatorPrey: capture_reward must be a finite number > 0, got {capture_reward!r}"
            )

        self.grid_size = grid_size
        self.num_agents = num_agents
        self.num_prey = num_prey
        self.punishment = float(punishment)
        self.capture_reward = float(capture_reward)
        window = 2 * OBS_RADIUS + 1
        # One agent borders at most 4 prey, and every catch removes at least 2 agents.
        lowest = self.punishment * min(num_prey, 4 * num_agents) + 0.0
        highest = self.capture_reward * min(num_prey, num_agents // 2) + 0.0
        self.spec = EnvSpec(
            name="predator_prey",
            num_agents=num_agents,
            obs_dim=window * window * NUM_CHANNELS,
            state_dim=grid_size * grid_size * NUM_CHANNELS,
            num_actions=NUM_ACTIONS,
            episode_limit=episode_limit,
            reward_bounds=(lowest, highest),
            optimal_return=None,
            has_won=False,
            source="ReMIX §5.1 and App. D.1; Böhmer et al. 2020 (DCG), stag_hunt relative-overgeneralisation",
        )

    # ----- building states -------------------------------------------------------------------------------

    def state_from_positions(
        self,
        agent_pos: np.ndarray,
        prey_pos: np.ndarray,
        agent_alive: np.ndarray | None = None,
        prey_alive: np.ndarray | None = None,
    ) -> PredatorPreyState:
        """A hand-placed state (for scripted episodes); present entities must be on the grid and distinct.

        Wrap it as ``EpisodeState(state, 0.0, 0)`` to step it and use :meth:`observe` for its TimeStep.
        """
        n, m, g = self.num_agents, self.num_prey, self.grid_size
        agent_pos, prey_pos = np.asarray(agent_pos), np.asarray(prey_pos)
        agent_alive = np.ones(n, bool) if agent_alive is None else np.asarray(agent_alive, bool)
        prey_alive = np.ones(m, bool) if prey_alive is None else np.asarray(prey_alive, bool)
        for what, arr, shape in (("agent_pos", agent_pos, (n, 2)), ("prey_pos", prey_pos, (m, 2)),
                                 ("agent_alive", agent_alive, (n,)), ("prey_alive", prey_alive, (m,))):
            if arr.shape != shape:
                raise ValueError(f"PredatorPrey: {what} must have shape {shape}, got {arr.shape}")
        present = np.concatenate([agent_pos[agent_alive], prey_pos[prey_alive]])
        if np.any((present < 0) | (present >= g)):
            raise ValueError(f"PredatorPrey: present agents and prey must lie in [0, {g - 1}]^2")
        if len({tuple(p) for p in present.tolist()}) != len(present):
            raise ValueError("PredatorPrey: present agents and prey must occupy distinct cells")
        return PredatorPreyState(
            agent_pos=jnp.asarray(np.clip(agent_pos, 0, g - 1), jnp.int32),
            agent_alive=jnp.asarray(agent_alive),
            prey_pos=jnp.asarray(np.clip(prey_pos, 0, g - 1), jnp.int32),
            prey_alive=jnp.asarray(prey_alive),
        )

    # ----- observing -------------------------------------------------------------------------------------

    def grid(self, state: PredatorPreyState) -> Array:
        """[G, G, 3] float32 occupancy of present agents and prey (the global state before flattening)."""
        g = self.grid_size
        grid = jnp.zeros((g, g, NUM_CHANNELS), jnp.float32)
        agents, prey = state.agent_pos, state.prey_pos
        grid = grid.at[agents[:, 0], agents[:, 1], 0].add(state.agent_alive.astype(jnp.float32))
        return grid.at[prey[:, 0], prey[:, 1], 1].add(state.prey_alive.astype(jnp.float32))

    def observe(self, state: PredatorPreyState, reward: Array | float = 0.0) -> TimeStep:
        """The TimeStep of ``state`` (terminated when no prey or no agent is left)."""
        grid = self.grid(state)
        window = 2 * OBS_RADIUS + 1
        padded = jnp.pad(grid, ((OBS_RADIUS, OBS_RADIUS), (OBS_RADIUS, OBS_RADIUS), (0, 0)))
        # In padded coordinates the window centred on cell (r, c) starts at (r, c).
        size = (window, window, NUM_CHANNELS)
        view = lambda pos: jax.lax.dynamic_slice(padded, (pos[0], pos[1], 0), size)
        views = jax.vmap(view)(state.agent_pos)
        obs = views.reshape(self.num_agents, -1) * state.agent_alive[:, None]

        targets = state.agent_pos[:, None, :] + _OFFSETS[None, :STAY]
        on_grid = self._on_grid(targets)
        distance = jnp.sum(jnp.abs(state.agent_pos[:, None, :] - state.prey_pos[None]), axis=-1)
        next_to_prey = jnp.any((distance == 1) & state.prey_alive[None], axis=1)
        stay = jnp.ones((self.num_agents, 1), bool)
        avail = jnp.concatenate([on_grid, stay, next_to_prey[:, None]], axis=1)
        only_stay = jnp.arange(NUM_ACTIONS) == STAY
        avail = jnp.where(state.agent_alive[:, None], avail, only_stay[None])

        prey_left = jnp.sum(state.prey_alive, dtype=jnp.int32)
        agents_left = jnp.sum(state.agent_alive, dtype=jnp.int32)
        return make_timestep(
            obs,
            grid.reshape(-1),
            avail,
            reward=reward,
            terminated=(prey_left == 0) | (agents_left == 0),
            active=state.agent_alive,
            prey_remaining=prey_left,
            agents_remaining=agents_left,
        )

    # ----- the API ---------------------------------------------------------------------------------------

    def reset_env(self, key: PRNGKey) -> tuple[PredatorPreyState, TimeStep]:
        n, m, g = self.num_agents, self.num_prey, self.grid_size
        # The first n + m cells of a uniformly random order: distinct and uniform.
        cells = jnp.argsort(jax.random.uniform(key, (g * g,)))[: n + m]
        pos = jnp.stack([cells // g, cells % g], axis=-1).astype(jnp.int32)
        state = PredatorPreyState(pos[:n], jnp.ones(n, bool), pos[n:], jnp.ones(m, bool))
        return state, self.observe(state)

    def step_env(
        self, key: PRNGKey, state: PredatorPreyState, actions: Array
    ) -> tuple[PredatorPreyState, TimeStep]:
        n, m = self.num_agents, self.num_prey
        # One draw for all the step's randomness (each extra draw costs compile time): argsort of uniform
        # noise is a uniformly random order.
        noise = jax.random.uniform(key, (n + m + 4 * m,))
        agent_order, prey_order = jnp.argsort(noise[:n]), jnp.argsort(noise[n : n + m])
        flee_noise = noise[n + m :].reshape(m, 4)
        actions = actions.astype(jnp.int32)
        actions = jnp.where((actions < 0) | (actions >= NUM_ACTIONS), STAY, actions)
        state = state.replace(agent_pos=self._move_agents(agent_order, state, actions))
        state, reward = self._resolve_prey(prey_order, flee_noise, state, actions == CATCH)
        return state, self.observe(state, reward)

    # ----- the two sequential phases ---------------------------------------------------------------------

    def _on_grid(self, cells: Array) -> Array:
        return jnp.all((cells >= 0) & (cells < self.grid_size), axis=-1)

    def _move_agents(self, order: Array, state: PredatorPreyState, actions: Array) -> Array:
        """Agents move one by one in ``order``, each seeing the cells the earlier ones took."""
        # Working in shuffled order keeps the loop index unbatched under vmap (slices, not gathers).
        pos = state.agent_pos[order]
        alive = state.agent_alive[order]
        targets = pos + jnp.asarray(_OFFSETS)[actions[order]]
        wants = alive & (actions[order] < STAY) & self._on_grid(targets)

        def move_one(i: int, pos: Array) -> Array:
            blocked = _occupied(targets[i][None], pos, alive, state.prey_pos, state.prey_alive)[0]
            return pos.at[i].set(jnp.where(wants[i] & ~blocked, targets[i], pos[i]))

        pos = jax.lax.fori_loop(0, self.num_agents, move_one, pos)
        return pos[jnp.argsort(order)]

    def _resolve_prey(
        self, order: Array, noise: Array, state: PredatorPreyState, catching: Array
    ) -> tuple[PredatorPreyState, Array]:
        """Prey one by one in ``order``: caught, punished or fleeing to a random free neighbour.

        ``noise`` [M, 4] is uniform; ranking the free neighbours by it picks one of them uniformly.
        """
        agent_pos = state.agent_pos
        offsets = jnp.asarray(_OFFSETS[:STAY])

        Carry = tuple[Array, Array, Array, Array]

        def resolve_one(i: int, carry: Carry) -> Carry:
            agent_alive, prey_pos, prey_alive, reward = carry
            here = prey_pos[i]
            adjacent = jnp.sum(jnp.abs(agent_pos - here), axis=-1) == 1
            catchers = agent_alive & catching & adjacent & prey_alive[i]
            count = jnp.sum(catchers)
            caught = count >= 2
            missed = jnp.where(count == 1, self.punishment, 0.0)
            reward = reward + jnp.where(caught, self.capture_reward, missed)
            agent_alive = agent_alive & ~(catchers & caught)
            still_here = prey_alive[i] & ~caught
            prey_alive = prey_alive.at[i].set(still_here)

            neighbours = here + offsets
            taken = _occupied(neighbours, agent_pos, agent_alive, prey_pos, prey_alive)
            free = self._on_grid(neighbours) & ~taken
            chosen = jnp.arange(4) == jnp.argmax(jnp.where(free, noise[i], -1.0))
            destination = jnp.sum(neighbours * chosen[:, None], axis=0)
            flee = still_here & jnp.any(free)
            prey_pos = prey_pos.at[i].set(jnp.where(flee, destination, here))
            return agent_alive, prey_pos, prey_alive, reward

        no_reward = jnp.zeros((), jnp.float32)
        carry = (state.agent_alive, state.prey_pos[order], state.prey_alive[order], no_reward)
        agent_alive, prey_pos, prey_alive, reward = jax.lax.fori_loop(0, self.num_prey, resolve_one, carry)
        inverse = jnp.argsort(order)
        return PredatorPreyState(agent_pos, agent_alive, prey_pos[inverse], prey_alive[inverse]), reward
