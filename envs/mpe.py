"""MPE cooperative navigation: simple spread (through jaxmarl), line control and circle control.

All three share MPE's discrete moves: 0 no-op, 1 left (-x), 2 right (+x), 3 down (-y), 4 up (+y), every
action always available.  Observations are arrays ``[N, obs_dim]`` in agent order; the global state is
the concatenation of the agents' observations, as MAPPO does for MPE (for line and circle control, taken
before the vision mask).

Line and circle control (Agarwal et al. 2020, "Learning transferable cooperative behavior in
multi-agent teams", in the form DPO's published scenario code, "the reference" below, uses them) reward
the team with minus the mean agent-to-target distance under the best one-to-one matching.  The matching
is solved exactly by a dynamic programme over subsets of targets (``optimal_matching_cost``), which is
cheaper than enumerating the N! permutations and stays exact for every N this module allows.

Physics: simple spread keeps jaxmarl's integrator (positions advance with the previous velocity); line and
circle control follow the original MPE world (velocity first, then position), which is what the reference
runs on.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep, stdout_to_stderr

NUM_ACTIONS = 5
# Unit push of each discrete action, in jaxmarl's order (no-op, left, right, down, up).
_MOVES = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], np.float32)

# Particle physics of the original MPE world (multiagent-particle-envs core.World).
DT = 0.1
DAMPING = 0.25
ACCEL = 5.0  # MPE's default action sensitivity; all masses are 1
CONTACT_FORCE = 100.0
CONTACT_MARGIN = 1e-3

# Agarwal et al.'s formation tasks as DPO configures them.
AGENT_SIZE = 0.03
LINE_LENGTH = 1.25
CIRCLE_RADIUS = 0.5
LANDMARK_SPAWN = 0.25  # the (first) landmark starts uniformly in [-0.25, 0.25]^2
REWARD_CLIP = 15.0
MAX_FORMATION_AGENTS = 12  # the subset DP costs N^2 * 2^N per step


def _noop_if_out_of_range(actions: Array) -> Array:
    actions = jnp.asarray(actions, jnp.int32)
    return jnp.where((actions >= 0) & (actions < NUM_ACTIONS), actions, 0)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low or (
        high is not None and value > high
    ):
        allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


# --------------------------------------------------------------------------------------------------
# Simple spread: an adapter over jaxmarl's MPE_simple_spread_v3.
# --------------------------------------------------------------------------------------------------


class SimpleSpread(MultiAgentEnv):
    """N agents should cover L landmarks while avoiding each other (jaxmarl's simple spread, discrete).

    Observation of agent i (jaxmarl's, unchanged): own velocity (2), own position (2), landmark positions
    relative to i (2L), other agents' relative positions in index order (2(N-1)) and their communication
    channels (2(N-1), always zero because the agents are silent); N = L = 5 gives DPO's 30.
    State: the N observations concatenated.

    Team reward: the mean over agents of jaxmarl's per-agent rewards,
    ``(1 - local_ratio) * G - local_ratio * mean_i c_i`` with ``G = -sum_l min_i |p_i - l|`` (landmark
    coverage, shared) and ``c_i`` the number of agents touching agent i (own collision count).  With
    ``local_ratio > 0`` jaxmarl's agents get different rewards whenever some collide; their mean is the
    cooperative objective (their sum divided by N).  ``local_ratio=0`` gives the pure coverage reward,
    identical for every agent.

    jaxmarl's ``step_env`` is called directly so the terminal observation survives; its own ``done`` is
    ignored and the episode ends only by truncation at ``episode_limit``.  Out-of-range actions (only
    possible inside ``jit``) are treated as the no-op.  Positions are unbounded, so the reward is only
    bounded above (by 0).
    """

    def __init__(
        self,
        *,
        num_agents: int = 5,
        num_landmarks: int | None = None,
        episode_limit: int = 25,
        local_ratio: float = 0.5,
    ):
        _check_int("num_agents", num_agents, 1)
        num_landmarks = num_agents if num_landmarks is None else num_landmarks
        _check_int("num_landmarks", num_landmarks, 1)
        _check_int("episode_limit", episode_limit, 1)
        num_agents, num_landmarks, episode_limit = int(num_agents), int(num_landmarks), int(episode_limit)
        if not _is_real(local_ratio) or not 0.0 <= local_ratio <= 1.0:
            raise ValueError(f"local_ratio must be a number in [0, 1], got {local_ratio!r}")
        with stdout_to_stderr():  # jaxmarl prints on import; heavy: only when used
            from jaxmarl.environments.mpe.simple_spread import SimpleSpreadMPE

        self.num_landmarks = num_landmarks
        self.local_ratio = float(local_ratio)
        self._mpe = SimpleSpreadMPE(
            num_agents=num_agents,
            num_landmarks=num_landmarks,
            local_ratio=self.local_ratio,
            max_steps=episode_limit,
        )
        obs_dim = 4 + 2 * self.num_landmarks + 4 * (num_agents - 1)
        self.spec = EnvSpec(
            name="mpe_simple_spread",
            num_agents=num_agents,
            obs_dim=obs_dim,
            state_dim=num_agents * obs_dim,
            num_actions=NUM_ACTIONS,
            episode_limit=episode_limit,
            reward_bounds=(-math.inf, 0.0),
            optimal_return=None,
            has_won=False,
            source="Lowe et al. 2017 simple spread (jaxmarl MPE_simple_spread_v3); DPO §4.2, App. A.1",
        )

    def _timestep(self, obs: dict[str, Array], reward: Array | float = 0.0) -> TimeStep:
        obs_arr = jnp.stack([obs[a] for a in self._mpe.agents])
        avail = jnp.ones((self.spec.num_agents, NUM_ACTIONS), bool)
        return make_timestep(obs_arr, obs_arr.reshape(-1), avail, reward)

    def reset_env(self, key: PRNGKey) -> tuple[Any, TimeStep]:
        obs, state = self._mpe.reset(key)
        return state, self._timestep(obs)

    def step_env(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:
        actions = _noop_if_out_of_range(actions)
        action_dict = {a: actions[i] for i, a in enumerate(self._mpe.agents)}
        obs, state, rewards, _, _ = self._mpe.step_env(key, state, action_dict)
        reward = jnp.mean(jnp.stack([rewards[a] for a in self._mpe.agents]))
        return state, self._timestep(obs, reward)


# --------------------------------------------------------------------------------------------------
# Exact optimal matching.
# --------------------------------------------------------------------------------------------------


@functools.cache
def _subset_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every subset (bit mask) of n targets: whose turn it is, and the subsets one target smaller."""
    masks = np.arange(1 << n)
    has = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)  # [2^n, n]
    agent = np.maximum(has.sum(axis=1) - 1, 0)  # the agent that takes the last target of the subset
    without = masks[:, None] ^ (1 << np.arange(n))  # [2^n, n]
    return agent, without, has


def optimal_matching_cost(cost: Array) -> Array:
    """Minimum total cost over one-to-one assignments of the rows (agents) of a square ``cost`` to columns.

    Exact: ``best[S]`` is the cheapest way for agents ``0 .. |S|-1`` to take the target set ``S``;
    each of n relaxation sweeps over all 2^n subsets fixes one more subset size.
    """
    cost = jnp.asarray(cost, jnp.float32)
    n = cost.shape[-1]
    if cost.shape != (n, n):
        raise ValueError(f"cost must be a square [n, n] matrix, got shape {cost.shape}")
    agent, without, has = _subset_tables(n)
    take = cost[agent]  # [2^n, n]: cost of agent |S|-1 taking target j

    def sweep(_: Any, best: Array) -> Array:
        options = jnp.where(has, best[without] + take, jnp.inf)
        return jnp.min(options, axis=1).at[0].set(0.0)

    best = jnp.full((1 << n,), jnp.inf, jnp.float32).at[0].set(0.0)
    return jax.lax.fori_loop(0, n, sweep, best)[-1]


def matching_mean_distance(agent_pos: Array, targets: Array) -> Array:
    """Mean agent-to-target distance under the optimal one-to-one matching (both ``[N, 2]``)."""
    dists = jnp.linalg.norm(agent_pos[:, None, :] - targets[None, :, :], axis=-1)
    return optimal_matching_cost(dists) / agent_pos.shape[0]


# --------------------------------------------------------------------------------------------------
# Line and circle control.
# --------------------------------------------------------------------------------------------------


def line_targets(landmarks: Array, num_agents: int) -> Array:
    """N points evenly spaced on the segment between the two landmarks, endpoints included."""
    frac = jnp.linspace(0.0, 1.0, num_agents, dtype=jnp.float32)[:, None]
    return landmarks[0] + frac * (landmarks[1] - landmarks[0])


def circle_targets(landmark: Array, agent_pos: Array, radius: float = CIRCLE_RADIUS) -> Array:
    """N points evenly spaced on a circle around the landmark, rotated onto the agent of least angle.

    As in the reference task, the circle's phase is the smallest polar angle (in [0, 2pi)) of any agent
    seen from the landmark, so the formation may sit at any rotation.
    """
    n = agent_pos.shape[0]
    rel = agent_pos - landmark
    angle = jnp.arctan2(rel[:, 1], rel[:, 0])
    phase = jnp.min(jnp.where(angle < 0, angle + 2 * jnp.pi, angle))
    theta = phase + 2 * jnp.pi * jnp.arange(n, dtype=jnp.float32) / n
    return landmark + radius * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)


def _spawn_landmark(u: Array) -> Array:
    """Map two uniform [0, 1) numbers to a point uniform in [-0.25, 0.25]^2."""
    return LANDMARK_SPAWN * (2.0 * u - 1.0)


def _line_landmarks(u: Array) -> Array:
    """From three uniform [0, 1) numbers: a first landmark in [-0.25, 0.25]^2, the second 1.25 away
    inside the arena (-1, 1)^2.

    The direction is uniform, then turned by 5 degree steps until the second landmark fits, as in the
    reference.  From any first landmark the fitting directions include an arc at least 16 degrees wide
    (the worst case is the centre), so one of the 72 steps always fits.
    """
    first = _spawn_landmark(u[:2])
    theta = 2 * jnp.pi * u[2] + jnp.deg2rad(5.0) * jnp.arange(72, dtype=jnp.float32)
    second = first + LINE_LENGTH * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)  # [72, 2]
    fits = jnp.all(jnp.abs(second) < 1.0, axis=-1)
    return jnp.stack([first, second[jnp.argmax(fits)]])


def _contact_forces(pos: Array) -> Array:
    """MPE's soft contact push between every pair of agents (radius AGENT_SIZE each).

    Two agents at exactly the same point push each other with zero force (the direction is undefined
    there; MPE would divide by zero).
    """
    delta = pos[:, None, :] - pos[None, :, :]  # [N, N, 2]: from j to i
    dist = jnp.linalg.norm(delta, axis=-1)
    penetration = CONTACT_MARGIN * jnp.logaddexp(0.0, (2 * AGENT_SIZE - dist) / CONTACT_MARGIN)
    other = ~jnp.eye(pos.shape[0], dtype=bool)
    scale = jnp.where(other & (dist > 0), CONTACT_FORCE * penetration / jnp.where(dist > 0, dist, 1.0), 0.0)
    return jnp.sum(scale[..., None] * delta, axis=1)


def _world_step(pos: Array, vel: Array, actions: Array) -> tuple[Array, Array]:
    """One MPE step: damp, add force * dt (mass 1), then move with the new velocity."""
    force = ACCEL * jnp.asarray(_MOVES)[actions] + _contact_forces(pos)
    vel = vel * (1.0 - DAMPING) + force * DT
    return pos + vel * DT, vel


@struct.dataclass
class FormationState:
    pos: Array  # [N, 2] agent positions
    vel: Array  # [N, 2] agent velocities
    landmarks: Array  # [L, 2] fixed for the episode


class _FormationControl(MultiAgentEnv):
    """Shared machinery of line and circle control; subclasses place landmarks and define targets.

    Agents start uniformly in [-1, 1]^2 at rest and move as MPE particles (size 0.03, colliding with each
    other; landmarks are not obstacles).  Observation of agent i: own velocity (2), own position (2),
    landmark positions relative to i (2L), other agents' relative positions in index order (2(N-1)); an
    entity at distance >= ``vision`` from i is shown as zeros (``vision=None``: all visible; the default
    1.0 is the reference's).  The reference also appends the silent agents' all-zero communication
    channels; they are left out.  State: the N observations concatenated *without* the vision mask, so
    that a centralised critic always sees every position.

    Team reward after each step: ``-mean matched distance - collision_penalty * colliding pairs / N``
    (pairs closer than 0.06; the reference also counts every agent as colliding with itself, a constant
    ``-collision_penalty / 2`` left out here; its default penalty is 0), clipped to [-15, 15] as in the
    reference (the clip is what bounds the reward below).  No early end; out-of-range actions (only
    possible inside ``jit``) are treated as the no-op.
    """

    env_name: str
    num_landmarks: int
    landmark_draws: int  # uniform numbers place_landmarks needs

    def __init__(
        self,
        *,
        num_agents: int = 5,
        episode_limit: int = 25,
        vision: float | None = 1.0,
        collision_penalty: float = 0.0,
    ):
        _check_int("num_agents", num_agents, 2, MAX_FORMATION_AGENTS)
        _check_int("episode_limit", episode_limit, 1)
        if vision is not None and not (_is_real(vision) and vision > 0):
            raise ValueError(f"vision must be a positive number or None (see everything), got {vision!r}")
        if not (_is_real(collision_penalty) and 0 <= collision_penalty < math.inf):
            raise ValueError(f"collision_penalty must be a finite number >= 0, got {collision_penalty!r}")
        self.vision = None if vision is None else float(vision)
        self.collision_penalty = float(collision_penalty)
        n = int(num_agents)
        self._others = np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32)  # [N, N-1]
        obs_dim = 4 + 2 * self.num_landmarks + 2 * (n - 1)
        self.spec = EnvSpec(
            name=self.env_name,
            num_agents=n,
            obs_dim=obs_dim,
            state_dim=n * obs_dim,
            num_actions=NUM_ACTIONS,
            episode_limit=int(episode_limit),
            reward_bounds=(-REWARD_CLIP, 0.0),
            optimal_return=None,
            has_won=False,
            source="Agarwal et al. 2020 (marl_transfer), as in DPO (Su & Lu) §4.2, App. A.1 and its code",
        )

    # Subclass hooks -------------------------------------------------------------------------------
    def place_landmarks(self, u: Array) -> Array:
        """Landmarks [L, 2] from ``landmark_draws`` uniform [0, 1) numbers."""
        raise NotImplementedError

    def targets(self, landmarks: Array, agent_pos: Array) -> Array:
        raise NotImplementedError

    # Reward and observation -----------------------------------------------------------------------
    def reward(self, agent_pos: Array, landmarks: Array) -> Array:
        """Team reward of a configuration (what a step returns for its resulting positions)."""
        n = self.spec.num_agents
        reward = -matching_mean_distance(agent_pos, self.targets(landmarks, agent_pos))
        if self.collision_penalty > 0:
            dist = jnp.linalg.norm(agent_pos[:, None, :] - agent_pos[None, :, :], axis=-1)
            pairs = jnp.sum(jnp.triu(dist < 2 * AGENT_SIZE, k=1))
            reward = reward - self.collision_penalty * pairs / n
        return jnp.clip(reward, -REWARD_CLIP, REWARD_CLIP)

    def _seen(self, rel: Array) -> Array:
        return jnp.linalg.norm(rel, axis=-1, keepdims=True) < self.vision

    def _observe(self, state: FormationState, masked: bool) -> Array:
        pos = state.pos
        landmarks = state.landmarks[None, :, :] - pos[:, None, :]  # [N, L, 2]
        others = pos[self._others] - pos[:, None, :]  # [N, N-1, 2]
        if masked and self.vision is not None:
            landmarks = jnp.where(self._seen(landmarks), landmarks, 0.0)
            others = jnp.where(self._seen(others), others, 0.0)
        n = self.spec.num_agents
        return jnp.concatenate([state.vel, pos, landmarks.reshape(n, -1), others.reshape(n, -1)], axis=-1)

    def _timestep(self, state: FormationState, reward: Array | float = 0.0) -> TimeStep:
        obs = self._observe(state, masked=True)
        full = self._observe(state, masked=False)
        avail = jnp.ones((self.spec.num_agents, NUM_ACTIONS), bool)
        return make_timestep(obs, full.reshape(-1), avail, reward)

    # API --------------------------------------------------------------------------------------------
    def reset_env(self, key: PRNGKey) -> tuple[FormationState, TimeStep]:
        # One draw for everything: each separate random call adds noticeably to compile time.
        n = self.spec.num_agents
        u = jax.random.uniform(key, (2 * n + self.landmark_draws,))
        pos = 2.0 * u[: 2 * n].reshape(n, 2) - 1.0
        vel = jnp.zeros((n, 2), jnp.float32)
        state = FormationState(pos=pos, vel=vel, landmarks=self.place_landmarks(u[2 * n :]))
        return state, self._timestep(state)

    def step_env(
        self, key: PRNGKey, state: FormationState, actions: Array
    ) -> tuple[FormationState, TimeStep]:
        pos, vel = _world_step(state.pos, state.vel, _noop_if_out_of_range(actions))
        state = state.replace(pos=pos, vel=vel)
        return state, self._timestep(state, self.reward(pos, state.landmarks))


class LineControl(_FormationControl):
    """Agents line up evenly between two landmarks 1.25 apart (targets 1.25 / (N-1) apart).

    Landmarks: the first uniform in [-0.25, 0.25]^2, the second 1.25 away in a uniform direction, turned
    by 5 degree steps until it lies inside (-1, 1)^2 (the reference's rule).  obs_dim = 2N + 6 (16 for N=5).
    """

    env_name = "mpe_line_control"
    num_landmarks = 2
    landmark_draws = 3

    def place_landmarks(self, u: Array) -> Array:
        return _line_landmarks(u)

    def targets(self, landmarks: Array, agent_pos: Array) -> Array:
        return line_targets(landmarks, self.spec.num_agents)


class CircleControl(_FormationControl):
    """Agents spread evenly on a circle of radius 0.5 around one landmark (any rotation, see circle_targets).

    The landmark starts uniformly in [-0.25, 0.25]^2.  obs_dim = 2N + 4 (14 for N=5).
    """

    env_name = "mpe_circle_control"
    num_landmarks = 1
    landmark_draws = 2

    def place_landmarks(self, u: Array) -> Array:
        return _spawn_landmark(u)[None]

    def targets(self, landmarks: Array, agent_pos: Array) -> Array:
        return circle_targets(landmarks[0], agent_pos)
