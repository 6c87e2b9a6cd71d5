"""SMAX (jaxmarl's JAX re-implementation of SMAC) against its heuristic enemy, in the array API.

jaxmarl's own ``step`` resets inside every call, throws the terminal observation away and cannot tell
a time-out from a real end, so this adapter drives ``reset`` and ``step_env`` of
``HeuristicEnemySMAX`` directly and lets the base class handle the time limit as truncation.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep, stdout_to_stderr

with stdout_to_stderr():  # jaxmarl prints on import
    from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO
    from jaxmarl.environments.smax.smax_env import SMAX as JaxmarlSMAX

STOP_ACTION = 4  # jaxmarl's discrete actions: 0-3 moves, 4 stop, 5 + j attack enemy j
ATTACK_MODES = ("closest", "random")
DEFAULT_EPISODE_LIMIT: int = inspect.signature(JaxmarlSMAX.__init__).parameters["max_steps"].default


class SMAX(MultiAgentEnv):
    """A SMAX map with the allies as the learning team and jaxmarl's scripted heuristic as the enemy.

    Observations are jaxmarl's "unit_list" vectors in the order of ``ally_0 .. ally_{N-1}``; the
    state is jaxmarl's world state (per unit: health fraction, map position, weapon cooldown in
    seconds, type one-hot; then every unit's team and integer type), not normalised further.
    Actions: 0 up, 1 right, 2 down, 3 left, 4 stop, ``5 + j`` attack enemy ``j``. The team reward is
    jaxmarl's shared ally reward (enemy health lost this step, each unit normalised by its maximum
    health, divided by the number of enemies, plus 1 on a win) times ``reward_scale``: every ally
    receives the same value, a step pays between 0 and 2 and an episode at most 2 (times the scale).

    ``terminated`` is a true end only: all enemies dead or all allies dead (a draw when both die in
    the same step). The time limit is the base class's truncation at exactly ``episode_limit``
    steps; jaxmarl's own time-out flag (raised one step late, at ``max_steps + 1``) is ignored.
    ``won`` is read from the state: every enemy dead and at least one ally alive.

    Dead allies observe zeros, may only take action 4 (stop) and are not ``active``. Unavailable
    actions (anything but stop for a dead unit, an attack on an enemy that is dead or out of range when
    the step starts) and out-of-range values under ``jit`` (which ``check_actions`` cannot reject) are
    replaced by 4 (stop).
    jaxmarl alone would keep an unavailable attack for the whole step, and since one env step is
    eight world steps in which the enemy moves, a target that walks into range would be hit.
    An available attack does not fire while the weapon cools down (jaxmarl's mask ignores cooldowns).

    Touching the map border kills a unit (jaxmarl's ``walls_cause_death``). On the smacv2 maps
    jaxmarl's random start positions can put a unit on or past the border (about 1% of units): it
    dies in the first step, and if it is an enemy its lost health is paid to the allies.
    """

    def __init__(
        self,
        *,
        map_name: str,
        reward_scale: float = 1.0,
        episode_limit: int | None = None,
        enemy_shoots: bool = True,
        attack_mode: str = "closest",
    ) -> None:
        if map_name not in MAP_NAME_TO_SCENARIO:
            raise ValueError(
                f"SMAX: unknown map_name {map_name!r}. Valid maps: {', '.join(sorted(MAP_NAME_TO_SCENARIO))}"
            )
        if isinstance(reward_scale, bool) or not isinstance(reward_scale, (int, float)):
            raise ValueError(f"SMAX: reward_scale must be a positive finite number, got {reward_scale!r}")
        if not (math.isfinite(reward_scale) and reward_scale > 0):
            raise ValueError(f"SMAX: reward_scale must be a positive finite number, got {reward_scale!r}")
        if episode_limit is not None and (
            isinstance(episode_limit, bool) or not isinstance(episode_limit, int) or episode_limit < 1
        ):
            raise ValueError(f"SMAX: episode_limit must be a positive int or None, got {episode_limit!r}")
        if not isinstance(enemy_shoots, bool):
            raise ValueError(f"SMAX: enemy_shoots must be True or False, got {enemy_shoots!r}")
        if attack_mode not in ATTACK_MODES:
            raise ValueError(f"SMAX: attack_mode must be one of {ATTACK_MODES}, got {attack_mode!r}")

        self.map_name = map_name
        self.reward_scale = float(reward_scale)
        self.enemy_shoots = enemy_shoots
        self.attack_mode = attack_mode
        if episode_limit is None:
            episode_limit = DEFAULT_EPISODE_LIMIT
        # jaxmarl's max_steps only feeds its own done flag, which is ignored here; it is set to the limit
        # anyway so that jaxmarl's helpers (is_terminal) know the same limit.
        self.jax_env = HeuristicEnemySMAX(
            scenario=map_name_to_scenario(map_name),
            max_steps=episode_limit,
            enemy_shoots=enemy_shoots,
            attack_mode=attack_mode,
        )
        self.agents: list[str] = list(self.jax_env.agents)
        self.num_allies = self.jax_env.num_allies
        self.num_enemies = self.jax_env.num_enemies

        # Shapes from an abstract trace of reset: no compilation.
        obs_shape = jax.eval_shape(self.jax_env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32))[0]
        num_actions = self.jax_env.action_spaces[self.agents[0]].n
        # Per step: enemy health lost is in [0, 1] after normalisation, the win bonus adds 1.
        max_reward = (1.0 + float(self.jax_env.won_battle_bonus)) * self.reward_scale
        self.spec = EnvSpec(
            name=f"smax_{map_name}",
            num_agents=len(self.agents),
            obs_dim=int(obs_shape[self.agents[0]].shape[-1]),
            state_dim=int(obs_shape["world_state"].shape[-1]),
            num_actions=int(num_actions),
            episode_limit=episode_limit,
            reward_bounds=(0.0, max_reward),
            optimal_return=None,
            has_won=True,
            source="jaxmarl SMAX (HeuristicEnemySMAX)",
        )

    def _timestep(self, obs: dict[str, Array], state: Any, reward: Array | float) -> TimeStep:
        alive = state.state.unit_alive
        allies_alive = jnp.any(alive[: self.num_allies])
        enemies_alive = jnp.any(alive[self.num_allies :])
        avail = self.jax_env.get_avail_actions(state)
        return make_timestep(
            obs=jnp.stack([obs[a] for a in self.agents]),
            state=obs["world_state"],
            avail_actions=jnp.stack([avail[a] for a in self.agents]).astype(bool),
            reward=reward,
            terminated=jnp.logical_not(allies_alive) | jnp.logical_not(enemies_alive),
            won=allies_alive & jnp.logical_not(enemies_alive),
            active=alive[: self.num_allies],
        )

    def reset_env(self, key: PRNGKey) -> tuple[Any, TimeStep]:
        obs, state = self.jax_env.reset(key)
        # jaxmarl's reset leaves some leaves weakly typed while its step does not; fix the dtypes so
        # that the state type is the same before and after a step (no retrace, scan-safe carry).
        state = jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.asarray(x).dtype), state)
        return state, self._timestep(obs, state, 0.0)

    def step_env(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:
        actions = jnp.asarray(actions, jnp.int32)
        in_range = (actions >= 0) & (actions < self.spec.num_actions)
        avail = self.jax_env.get_avail_actions(state)
        avail = jnp.stack([avail[a] for a in self.agents]).astype(bool)
        chosen = jnp.clip(actions, 0, self.spec.num_actions - 1)
        allowed = in_range & jnp.take_along_axis(avail, chosen[:, None], axis=-1)[:, 0]
        actions = jnp.where(allowed, actions, STOP_ACTION)
        action_dict = {a: actions[i] for i, a in enumerate(self.agents)}
        obs, state, rewards, _, _ = self.jax_env.step_env(key, state, action_dict)
        # jaxmarl hands every ally the same team reward; take the first ally's.
        return state, self._timestep(obs, state, rewards[self.agents[0]] * self.reward_scale)
