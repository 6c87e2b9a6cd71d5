"""Adapters that run jumanji's multi-agent tasks (LevelBasedForaging, RobotWarehouse) behind our API.

Jumanji already writes these tasks in pure JAX, so the adapters only translate: observations and masks
become float32 / bool arrays, per-agent or shared rewards become one team reward, and jumanji's
``step_type`` / ``discount`` pair becomes our ``terminated`` flag. The time limit is left to
:class:`~envs.core.MultiAgentEnv`, whose ``episode_limit`` is set to jumanji's ``time_limit`` so that both
count the same steps.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax.numpy as jnp
from flax import struct
from jumanji.environments.routing.lbf import LevelBasedForaging as _JumanjiLBF
from jumanji.environments.routing.lbf.generator import RandomGenerator as _LBFGenerator
from jumanji.environments.routing.robot_warehouse import RobotWarehouse as _JumanjiRWARE
from jumanji.environments.routing.robot_warehouse.generator import RandomGenerator as _RWAREGenerator
from jumanji.types import StepType

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep

# Defaults of jumanji.make("LevelBasedForaging-v0") and jumanji.make("RobotWarehouse-v0").
LBF_TIME_LIMIT = 100
RWARE_TIME_LIMIT = 500
RWARE_NUM_GOALS = 2  # jumanji's warehouse always has two delivery cells
_RWARE_AGENT_LAYER = 1  # channel of jumanji's warehouse grid that holds agent ids (1-based, 0 = empty)


@struct.dataclass
class JumanjiEnvState:
    """Jumanji's own state plus the action mask the agents last saw (to turn unavailable actions into no-ops)."""

    inner: Any
    avail_actions: Array


def jumanji_terminated(step_type: Array, discount: Array) -> Array:
    """True end of a jumanji episode: a LAST step whose discount is 0.

    A LAST step that keeps discount 1 is jumanji's truncation; the time limit is reported by our base
    class instead, so it never counts as termination here. A per-agent discount ends the episode only
    when every agent's discount is 0.
    """
    return jnp.logical_and(step_type == StepType.LAST, jnp.all(jnp.asarray(discount) == 0))


def _sanitise(actions: Array, avail: Array) -> Array:
    """Out-of-range or unavailable actions become action 0 (no-op, always available in both tasks)."""
    num_actions = avail.shape[-1]
    in_range = (actions >= 0) & (actions < num_actions)
    safe = jnp.clip(actions, 0, num_actions - 1)
    allowed = jnp.take_along_axis(avail, safe[:, None], axis=-1)[:, 0]
    return jnp.where(in_range & allowed, safe, 0).astype(jnp.int32)


def _check_int(env: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(f"{env}: {name} must be {allowed}, got {value!r}")
    return int(value)


def _check_bool(env: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{env}: {name} must be True or False, got {value!r}")
    return value


class _JumanjiAdapter(MultiAgentEnv):
    """Shared reset/step plumbing; subclasses say how to read obs, state, reward and termination."""

    _env: Any

    def _obs(self, observation: Any) -> Array:
        return observation.agents_view.reshape(self.spec.num_agents, -1)

    def _state(self, inner: Any, obs: Array) -> Array:
        raise NotImplementedError

    def _team_reward(self, reward: Array) -> Array:
        raise NotImplementedError

    def _terminated(self, inner: Any, timestep: Any) -> Array:
        raise NotImplementedError

    def _timestep(self, inner: Any, timestep: Any, terminated: Array | bool) -> TimeStep:
        obs = self._obs(timestep.observation)
        return make_timestep(
            obs=obs,
            state=self._state(inner, obs),
            avail_actions=timestep.observation.action_mask,
            reward=self._team_reward(timestep.reward),
            terminated=terminated,
        )

    def reset_env(self, key: PRNGKey) -> tuple[JumanjiEnvState, TimeStep]:
        inner, timestep = self._env.reset(key)
        ts = self._timestep(inner, timestep, False)
        return JumanjiEnvState(inner, ts.avail_actions), ts

    def step_env(self, key: PRNGKey, state: JumanjiEnvState, actions: Array) -> tuple[JumanjiEnvState, TimeStep]:
        del key  # jumanji's state carries its own key, drawn at reset
        inner, timestep = self._env.step(state.inner, _sanitise(actions, state.avail_actions))
        ts = self._timestep(inner, timestep, self._terminated(inner, timestep))
        return JumanjiEnvState(inner, ts.avail_actions), ts


class LevelBasedForaging(_JumanjiAdapter):
    """Jumanji's Level-Based Foraging with one team reward.

    Agents (levels 1..max_agent_level) walk a grid and pick up food (action 5, "load") when the levels
    of the loading agents adjacent to a food item add up to at least its level. Actions: 0 no-op, 1 up,
    2 down, 3 left, 4 right, 5 load. Jumanji's default vector observation (per agent: every food's
    (row, col, level), then its own, then the other agents', (-1, -1, 0) when out of view or eaten) is
    the obs; with ``grid_observation=True`` jumanji's 3-layer (2 fov + 1)^2 view is flattened instead.

    Team reward: the sum of jumanji's per-agent rewards. With ``normalize_reward`` (jumanji's default)
    eating a food item pays its level / total food level to the team, so an episode that clears the grid
    returns exactly 1, and a step pays at most 1. A ``penalty`` p > 0 is charged by jumanji to every
    agent for each food item that loading agents fail to lift, so one step's team reward is at least
    -num_agents * p (normalised) or -num_food * num_agents * p (raw).

    State: what an all-seeing observer reports, in grid coordinates: each food's (row, col, level),
    (-1, -1, 0) once eaten, then each agent's (row, col, level) in id order: everything the dynamics
    depend on apart from the step count, whatever the agents' field of view.

    Ends (terminated) when all food is eaten, the only LAST step jumanji gives discount 0; the time limit
    is truncation. If both happen at the same step, terminated wins (as in jumanji).
    Unavailable or out-of-range actions are replaced by the no-op (jumanji's own dynamics would leave
    such an agent in place as well). The step key is unused: the task is deterministic after reset.
    """

    def __init__(
        self,
        *,
        episode_limit: int | None = None,
        grid_size: int = 8,
        fov: int | None = None,
        num_agents: int = 2,
        num_food: int = 2,
        max_agent_level: int = 2,
        force_coop: bool = True,
        penalty: float = 0.0,
        normalize_reward: bool = True,
        grid_observation: bool = False,
    ):
        name = "lbf"
        limit = _check_int(name, "episode_limit", LBF_TIME_LIMIT if episode_limit is None else episode_limit, 1)
        grid_size = _check_int(name, "grid_size", grid_size, 5)
        fov = grid_size if fov is None else _check_int(name, "fov", fov, 1, grid_size)
        num_agents = _check_int(name, "num_agents", num_agents, 1)
        num_food = _check_int(name, "num_food", num_food, 1)
        max_agent_level = _check_int(name, "max_agent_level", max_agent_level, 2)
        force_coop = _check_bool(name, "force_coop", force_coop)
        normalize_reward = _check_bool(name, "normalize_reward", normalize_reward)
        grid_observation = _check_bool(name, "grid_observation", grid_observation)
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not math.isfinite(penalty) \
                or penalty < 0:
            raise ValueError(f"{name}: penalty must be a finite number >= 0, got {penalty!r}")
        if (grid_size - 2) ** 2 - num_agents <= 5 * num_food:
            raise ValueError(
                f"{name}: grid_size={grid_size} is too small for num_agents={num_agents} and "
                f"num_food={num_food}: food sits off the edge and apart, which needs "
                f"(grid_size - 2)**2 - num_agents > 5 * num_food"
            )
        generator = _LBFGenerator(
            grid_size=grid_size,
            fov=fov,
            num_agents=num_agents,
            num_food=num_food,
            max_agent_level=max_agent_level,
            force_coop=force_coop,
        )
        self._env = _JumanjiLBF(
            generator=generator,
            time_limit=limit,
            grid_observation=grid_observation,
            normalize_reward=normalize_reward,
            penalty=float(penalty),
        )
        self.num_food = num_food

        obs_dim = 3 * (2 * fov + 1) ** 2 if grid_observation else 3 * (num_food + num_agents)
        if normalize_reward:
            bounds = (0.0 - num_agents * float(penalty), 1.0)
        else:
            # A food item has level <= the sum of the three lowest agent levels; at most 4 agents
            # (its 4-neighbours) lift it, each of level <= max_agent_level.
            per_food = min(num_agents, 4) * max_agent_level * min(num_agents, 3) * max_agent_level
            bounds = (0.0 - num_food * num_agents * float(penalty), float(num_food * per_food))
        self.spec = EnvSpec(
            name=name,
            num_agents=num_agents,
            obs_dim=obs_dim,
            state_dim=3 * (num_food + num_agents),
            num_actions=6,
            episode_limit=limit,
            reward_bounds=bounds,
            optimal_return=None,
            has_won=False,
            source="jumanji LevelBasedForaging-v0 (Papoudakis et al. 2021, lb-foraging)",
        )

    def _state(self, inner: Any, obs: Array) -> Array:
        food, agents = inner.food_items, inner.agents
        food_rows = jnp.concatenate([food.position, food.level[:, None]], axis=-1)
        gone = jnp.array([-1, -1, 0], food_rows.dtype)
        food_rows = jnp.where(food.eaten[:, None], gone, food_rows)
        agent_rows = jnp.concatenate([agents.position, agents.level[:, None]], axis=-1)
        return jnp.concatenate([food_rows.reshape(-1), agent_rows.reshape(-1)]).astype(jnp.float32)

    def _team_reward(self, reward: Array) -> Array:
        return jnp.sum(reward)

    def _terminated(self, inner: Any, timestep: Any) -> Array:
        return jumanji_terminated(timestep.step_type, timestep.discount)


class RobotWarehouse(_JumanjiAdapter):
    """Jumanji's multi-robot warehouse (RWARE) with its shared reward as the team reward.

    Robots turn and drive between shelf clusters; one that toggles load under a shelf lifts it, and
    carrying a requested shelf onto one of the two delivery cells pays +1 to the team (the shelf is then
    replaced in the request queue). Actions: 0 no-op, 1 forward, 2 turn left, 3 turn right, 4 toggle load.
    Obs: jumanji's per-agent vector (own position, load, heading, highway flag, then the agents and
    shelves within ``sensor_range``), 66 entries for range 1.

    Team reward: jumanji's reward is already one shared scalar (deliveries this step), so it is used as
    is; at most one delivery per delivery cell per step, hence bounds [0, min(2, num_agents)].

    State: every agent's view (as in the obs), followed by every shelf's (row, col, requested). The views
    carry each robot's pose and load; the shelf list adds where the requested shelves are, which no robot
    may be able to see. Only the random choice of the next request is left out.

    Termination: jumanji ends an episode when two robots collide, and it also marks its time limit with
    discount 0, so ``step_type`` / ``discount`` cannot tell the two apart. The adapter therefore reads the
    collision from the new state (a robot whose cell holds another robot's id) and reports that as
    terminated; the time limit becomes truncation through ``episode_limit``; a collision on the last step
    is terminated. Unavailable or out-of-range actions become the no-op, as jumanji does for unavailable
    ones. The step key is unused: new requests are drawn from the key inside jumanji's state.
    """

    def __init__(
        self,
        *,
        episode_limit: int | None = None,
        shelf_rows: int = 2,
        shelf_columns: int = 3,
        column_height: int = 8,
        num_agents: int = 4,
        sensor_range: int = 1,
        request_queue_size: int = 8,
    ):
        name = "rware"
        limit = _check_int(name, "episode_limit", RWARE_TIME_LIMIT if episode_limit is None else episode_limit, 1)
        shelf_rows = _check_int(name, "shelf_rows", shelf_rows, 1)
        shelf_columns = _check_int(name, "shelf_columns", shelf_columns, 1)
        if shelf_columns % 2 != 1:
            raise ValueError(f"{name}: shelf_columns must be an odd int >= 1, got {shelf_columns!r}")
        column_height = _check_int(name, "column_height", column_height, 1)
        height, width = (column_height + 1) * shelf_rows + 2, 3 * shelf_columns + 1
        num_agents = _check_int(name, "num_agents", num_agents, 1, height * width)
        sensor_range = _check_int(name, "sensor_range", sensor_range, 1)
        request_queue_size = _check_int(name, "request_queue_size", request_queue_size, 1)
        generator = _RWAREGenerator(
            shelf_rows=shelf_rows,
            shelf_columns=shelf_columns,
            column_height=column_height,
            num_agents=num_agents,
            sensor_range=sensor_range,
            request_queue_size=request_queue_size,
        )
        num_shelves = int(generator.shelf_ids.shape[0])
        if request_queue_size >= num_shelves:
            raise ValueError(
                f"{name}: request_queue_size must be smaller than the number of shelves ({num_shelves} for "
                f"shelf_rows={shelf_rows}, shelf_columns={shelf_columns}, column_height={column_height}), "
                f"got {request_queue_size}"
            )
        self._env = _JumanjiRWARE(generator=generator, time_limit=limit)
        self.num_shelves = num_shelves

        cells = (2 * sensor_range + 1) ** 2
        obs_dim = 8 + 5 * (cells - 1) + 2 * cells
        self.spec = EnvSpec(
            name=name,
            num_agents=num_agents,
            obs_dim=obs_dim,
            state_dim=num_agents * obs_dim + 3 * num_shelves,
            num_actions=5,
            episode_limit=limit,
            reward_bounds=(0.0, float(min(RWARE_NUM_GOALS, num_agents))),
            optimal_return=None,
            has_won=False,
            source="jumanji RobotWarehouse-v0 (Papoudakis et al. 2021, robotic-warehouse)",
        )

    def _state(self, inner: Any, obs: Array) -> Array:
        shelves = inner.shelves
        shelf_rows = jnp.stack(
            [shelves.position.x, shelves.position.y, shelves.is_requested.astype(jnp.int32)], axis=-1
        )
        return jnp.concatenate([obs.reshape(-1).astype(jnp.float32), shelf_rows.reshape(-1).astype(jnp.float32)])

    def _team_reward(self, reward: Array) -> Array:
        return jnp.asarray(reward).reshape(())

    def _terminated(self, inner: Any, timestep: Any) -> Array:
        return collided(inner)


def collided(inner: Any) -> Array:
    """Whether any robot shares its cell with another one (jumanji's agent layer keeps only one id)."""
    agents = inner.agents
    ids_on_grid = inner.grid[_RWARE_AGENT_LAYER, agents.position.x, agents.position.y]
    return jnp.any(ids_on_grid != jnp.arange(1, ids_on_grid.shape[0] + 1))
