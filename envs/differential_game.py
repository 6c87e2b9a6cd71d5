"""A cooperative one-step differential game: the continuous-action counterpart of the matrix games.

"Max of two quadratics" (Wei et al. 2018, "Multiagent soft Q-learning"): two agents each choose a
number in [-10, 10] and share

    r(a1, a2) = max(f1, f2),
    f1 = 0.8 * (-((a1 + 5) / 3)^2 - ((a2 + 5) / 3)^2),
    f2 = 1.0 * (-((a1 - 5) / 1)^2 - ((a2 - 5) / 1)^2) + 10.

The wide bump at (-5, -5) peaks at 0, the narrow one at (5, 5) at 10 (the optimum): independent
learners that average over their partner's exploration are drawn to the wide one (relative
overgeneralisation). Over the box the reward spans [-40, 10]: the minimum -40 is at (10, 10), where
both bumps are -40 (a grid search agrees). It compiles in a moment, so the continuous-action learners are tested on it
without a physics engine. The observation is a constant 1 per agent (there is nothing to see); the
state is the same.
"""

from __future__ import annotations

import jax.numpy as jnp

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep

BOUND = 10.0
# (height, centre, width, offset) of each bump, the same centre and width on both axes.
BUMPS = ((0.8, -5.0, 3.0, 0.0), (1.0, 5.0, 1.0, 10.0))


def payoff(actions: Array) -> Array:
    """r(a1, a2) for actions [..., 2] (already within the bounds)."""
    values = [h * -jnp.sum(jnp.square((actions - c) / w), axis=-1) + off for h, c, w, off in BUMPS]
    return jnp.maximum(*values)


class DifferentialGame(MultiAgentEnv):
    """Two agents, one step, one action dimension each in [-10, 10]; optimum 10 at (5, 5)."""

    def __init__(self) -> None:
        self.spec = EnvSpec(name="differential_game", num_agents=2, obs_dim=1, state_dim=1, num_actions=1,
                            episode_limit=1, reward_bounds=(-40.0, 10.0),
                            optimal_return=10.0, continuous=True, action_bounds=(-BOUND, BOUND),
                            source="Wei et al. 2018, max of two quadratics")

    def _timestep(self, reward: Array | float = 0.0, terminated: Array | bool = False) -> TimeStep:
        return make_timestep(jnp.ones((2, 1)), jnp.ones(1), jnp.ones((2, 1), bool), reward, terminated)

    def reset_env(self, key: PRNGKey) -> tuple[Array, TimeStep]:
        return jnp.zeros((), jnp.int32), self._timestep()

    def step_env(self, key: PRNGKey, state: Array, actions: Array) -> tuple[Array, TimeStep]:
        return state, self._timestep(payoff(actions[:, 0]), True)
