"""The one array API every jmarl environment speaks.

Environments are cooperative (one team reward), have a fixed number of agents and talk in arrays, not
dicts, so that rollouts are a plain ``lax.scan`` over ``vmap``-ed steps.  Subclasses implement
``reset_env`` / ``step_env``; the base class adds what every learner needs the same way everywhere:
episode return and length, and the time limit as *truncation* (bootstrap) kept apart from
*termination* (no bootstrap).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array
PRNGKey = jax.Array


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what is printed inside the block to stderr: jaxmarl prints on import ("Importing submoduled
    environments..."), and stdout is kept for our own output (``run.py --check``'s JSON, tables). Both
    Python's ``sys.stdout`` and file descriptor 1 are redirected."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static description of an environment (plain Python, never traced).

    ``reward_bounds`` bound the team reward of a single step (used by fuzz tests and for scaling);
    ``optimal_return`` is the best expected episode return where it is known exactly;
    ``has_won`` says whether ``info["won"]`` is meaningful (SMAX) or always False.

    Actions are discrete by default: one int per agent in ``[0, num_actions)``, ``avail_actions`` [N, A]
    marks the legal ones. With ``continuous`` each agent sends a float vector of ``num_actions``
    dimensions, ``action_bounds`` bound every dimension (the env clips what it receives), and
    ``avail_actions`` [N, A] marks the dimensions an agent really controls (agents with fewer joints
    than ``num_actions`` are padded; learners leave padded dimensions out of log-probabilities).
    """

    name: str
    num_agents: int
    obs_dim: int
    state_dim: int
    num_actions: int
    episode_limit: int
    reward_bounds: tuple[float, float] = (-jnp.inf, jnp.inf)
    optimal_return: float | None = None
    has_won: bool = False
    source: str = ""
    continuous: bool = False
    action_bounds: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        for field in ("num_agents", "obs_dim", "state_dim", "num_actions", "episode_limit"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EnvSpec.{field} must be a positive int, got {value!r}")
        low, high = self.action_bounds
        if not low < high:
            raise ValueError(f"EnvSpec.action_bounds must be (low, high) with low < high, got {self.action_bounds!r}")


@struct.dataclass
class TimeStep:
    """What an agent team sees after reset or step.

    obs [N, obs_dim] float32, state [state_dim] float32 (global, for centralised training),
    avail_actions [N, A] bool (legal actions; for continuous actions the dimensions each agent controls),
    active [N] bool (the agent is in play and its next action matters: false
    once it has died or been removed, so learners can leave its forced steps out; all true in envs where
    agents never leave), reward [] float32 (team), terminated [] bool (true end: do not bootstrap),
    truncated [] bool (time limit: bootstrap), info: dict of scalars with at least ``episode_return``,
    ``episode_length`` and ``won``.
    """

    obs: Array
    state: Array
    avail_actions: Array
    active: Array
    reward: Array
    terminated: Array
    truncated: Array
    info: dict[str, Any]

    @property
    def done(self) -> Array:
        return jnp.logical_or(self.terminated, self.truncated)


@struct.dataclass
class EpisodeState:
    """Env state plus the episode counters the base class keeps for every env."""

    env_state: Any
    episode_return: Array
    episode_length: Array


def make_timestep(
    obs: Array,
    state: Array,
    avail_actions: Array,
    reward: Array | float = 0.0,
    terminated: Array | bool = False,
    won: Array | bool = False,
    active: Array | None = None,
    **info: Any,
) -> TimeStep:
    """Build a TimeStep with the dtypes the API promises (used by ``reset_env`` / ``step_env``).

    ``active`` defaults to every agent (envs where agents never leave); ``truncated`` and the episode
    counters are filled in by :class:`MultiAgentEnv`.
    """
    avail_actions = jnp.asarray(avail_actions, bool)
    num_agents = avail_actions.shape[0]
    active = jnp.ones(num_agents, bool) if active is None else jnp.asarray(active, bool)
    if active.shape != (num_agents,):
        raise ValueError(f"active must have shape ({num_agents},) (one flag per agent), got {active.shape}")
    return TimeStep(
        obs=jnp.asarray(obs, jnp.float32),
        state=jnp.asarray(state, jnp.float32),
        avail_actions=avail_actions,
        active=active,
        reward=jnp.asarray(reward, jnp.float32),
        terminated=jnp.asarray(terminated, bool),
        truncated=jnp.asarray(False),
        info={"won": jnp.asarray(won, bool), **{k: jnp.asarray(v) for k, v in info.items()}},
    )


class MultiAgentEnv(abc.ABC):
    """Base class: implement ``spec``, ``reset_env`` and ``step_env``; call ``reset`` and ``step``.

    ``step_env`` reports only true termination; the base class truncates at ``spec.episode_limit``.
    ``step`` does not reset: wrap the env in :class:`AutoReset` for rollouts.
    """

    spec: EnvSpec

    @abc.abstractmethod
    def reset_env(self, key: PRNGKey) -> tuple[Any, TimeStep]:
        """Start an episode: (env-specific state, first TimeStep)."""

    @abc.abstractmethod
    def step_env(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:
        """Advance one step with int actions [N] (continuous: float [N, A], within the bounds); set
        ``terminated`` only for true ends."""

    def reset(self, key: PRNGKey) -> tuple[EpisodeState, TimeStep]:
        env_state, ts = self.reset_env(key)
        zero_f, zero_i = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        ts = ts.replace(info={**ts.info, "episode_return": zero_f, "episode_length": zero_i})
        return EpisodeState(env_state, zero_f, zero_i), ts

    def step(self, key: PRNGKey, state: EpisodeState, actions: Array) -> tuple[EpisodeState, TimeStep]:
        actions = self.check_actions(actions)
        env_state, ts = self.step_env(key, state.env_state, actions)
        length = state.episode_length + 1
        ret = state.episode_return + ts.reward
        truncated = jnp.logical_and(length >= self.spec.episode_limit, jnp.logical_not(ts.terminated))
        ts = ts.replace(
            truncated=truncated, info={**ts.info, "episode_return": ret, "episode_length": length}
        )
        return EpisodeState(env_state, ret, length), ts

    def check_actions(self, actions: Array) -> Array:
        """Reject wrong shapes at trace time and out-of-range values when they are concrete; continuous
        actions are clipped to ``spec.action_bounds`` (what MAPPO-style code sends a MuJoCo env)."""
        actions = jnp.asarray(actions)
        n, a = self.spec.num_agents, self.spec.num_actions
        if self.spec.continuous:
            if actions.shape != (n, a):
                raise ValueError(f"{self.spec.name}: actions must have shape ({n}, {a}) (one float vector per "
                                 f"agent), got {actions.shape}")
            low, high = self.spec.action_bounds
            return jnp.clip(actions.astype(jnp.float32), low, high)
        if actions.shape != (n,):
            raise ValueError(
                f"{self.spec.name}: actions must have shape ({n},) (one int per agent), got {actions.shape}"
            )
        if not jnp.issubdtype(actions.dtype, jnp.integer):
            raise ValueError(f"{self.spec.name}: actions must be integers, got dtype {actions.dtype}")
        concrete = concrete_or_none(actions)  # None under jit: the env's documented rule applies
        if concrete is not None and (concrete.min() < 0 or concrete.max() >= a):
            raise ValueError(f"{self.spec.name}: actions must lie in [0, {a - 1}], got {concrete.tolist()}")
        return actions.astype(jnp.int32)

    def __repr__(self) -> str:
        s = self.spec
        actions = f"{s.num_actions}-d continuous actions" if s.continuous else f"{s.num_actions} actions"
        return f"<{s.name}: {s.num_agents} agents, obs {s.obs_dim}, state {s.state_dim}, {actions}>"


class Wrapper(MultiAgentEnv):
    """Delegates to an inner env; subclasses change what they need (spec, obs, state)."""

    def __init__(self, env: MultiAgentEnv):
        self.env = env
        self.spec = env.spec

    def reset_env(self, key: PRNGKey) -> tuple[Any, TimeStep]:  # pragma: no cover - not used
        raise NotImplementedError

    def step_env(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:  # pragma: no cover
        raise NotImplementedError

    def reset(self, key: PRNGKey) -> tuple[Any, TimeStep]:
        return self.env.reset(key)

    def step(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:
        return self.env.step(key, state, actions)

    def __getattr__(self, name: str) -> Any:
        # Reached only for attributes missing on the wrapper: expose the inner env's extras.
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def unwrapped(self) -> MultiAgentEnv:
        env = self.env
        while isinstance(env, Wrapper):
            env = env.env
        return env


class AutoReset(Wrapper):
    """Resets finished episodes inside ``step`` while keeping what bootstrapping needs.

    After a step that ends an episode, ``obs/state/avail_actions/active`` are the *new* episode's
    first ones (what the policy acts on next), ``reward/terminated/truncated`` describe the finished
    transition, ``info["episode_return"/"episode_length"/"won"]`` describe the finished episode, and
    ``info["final_obs"/"final_state"/"final_avail_actions"]`` hold the terminal observation for the
    value target (equal to ``obs`` etc. when the episode goes on).
    """

    def reset(self, key: PRNGKey) -> tuple[Any, TimeStep]:
        state, ts = self.env.reset(key)
        return state, self._with_final(ts, ts)

    def step(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:
        key_step, key_reset = jax.random.split(key)
        next_state, ts = self.env.step(key_step, state, actions)
        reset_state, reset_ts = self.env.reset(key_reset)
        done = ts.done
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(done, a, b), new, old)  # noqa: E731
        out_state = pick(reset_state, next_state)
        out = ts.replace(
            obs=jnp.where(done, reset_ts.obs, ts.obs),
            state=jnp.where(done, reset_ts.state, ts.state),
            avail_actions=jnp.where(done, reset_ts.avail_actions, ts.avail_actions),
            active=jnp.where(done, reset_ts.active, ts.active),
        )
        return out_state, self._with_final(out, ts)

    @staticmethod
    def _with_final(out: TimeStep, final: TimeStep) -> TimeStep:
        return out.replace(
            info={
                **out.info,
                "final_obs": final.obs,
                "final_state": final.state,
                "final_avail_actions": final.avail_actions,
            }
        )


@struct.dataclass
class LastActionState:
    env_state: Any
    last_actions: Array


class LastActionObs(Wrapper):
    """Appends each agent's previous action as a one-hot (zeros at an episode's first step); a continuous
    action is appended as it was applied (clipped to the bounds)."""

    def __init__(self, env: MultiAgentEnv):
        super().__init__(env)
        self.spec = dataclasses.replace(env.spec, obs_dim=env.spec.obs_dim + env.spec.num_actions)

    def _obs(self, ts: TimeStep, last_one_hot: Array) -> TimeStep:
        return ts.replace(obs=jnp.concatenate([ts.obs, last_one_hot], axis=-1))

    def reset(self, key: PRNGKey) -> tuple[LastActionState, TimeStep]:
        state, ts = self.env.reset(key)
        none = jnp.zeros((self.spec.num_agents, self.env.spec.num_actions), jnp.float32)
        return LastActionState(state, none), self._obs(ts, none)

    def step(self, key: PRNGKey, state: LastActionState, actions: Array) -> tuple[LastActionState, TimeStep]:
        inner, ts = self.env.step(key, state.env_state, actions)
        if self.env.spec.continuous:
            last = self.env.check_actions(actions)
        else:
            last = jax.nn.one_hot(actions, self.env.spec.num_actions, dtype=jnp.float32)
        return LastActionState(inner, last), self._obs(ts, last)


class AgentIdObs(Wrapper):
    """Appends a one-hot agent id so that agents sharing parameters can still act differently."""

    def __init__(self, env: MultiAgentEnv):
        super().__init__(env)
        self.spec = dataclasses.replace(env.spec, obs_dim=env.spec.obs_dim + env.spec.num_agents)
        self._ids = jnp.eye(env.spec.num_agents, dtype=jnp.float32)

    def _obs(self, ts: TimeStep) -> TimeStep:
        return ts.replace(obs=jnp.concatenate([ts.obs, self._ids], axis=-1))

    def reset(self, key: PRNGKey) -> tuple[Any, TimeStep]:
        state, ts = self.env.reset(key)
        return state, self._obs(ts)

    def step(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:
        state, ts = self.env.step(key, state, actions)
        return state, self._obs(ts)


def concrete_or_none(x: Array) -> np.ndarray | None:
    """The value of ``x`` when it is known at trace time (eager call), else None (traced under jit)."""
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def random_actions(key: PRNGKey, avail_actions: Array, spec: EnvSpec | None = None) -> Array:
    """Uniformly random *available* action per agent (int32 [N]); used by demos, tests, benchmarks.

    Given a continuous ``spec``: uniform in ``spec.action_bounds`` on every dimension (float32 [N, A]),
    0 on the padded ones.
    """
    if spec is not None and spec.continuous:
        low, high = spec.action_bounds
        draw = jax.random.uniform(key, avail_actions.shape, jnp.float32, low, high)
        return jnp.where(avail_actions, draw, 0.0)
    logits = jnp.where(avail_actions, 0.0, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
