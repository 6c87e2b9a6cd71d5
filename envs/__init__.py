"""Pure-JAX cooperative multi-agent environments behind one array API (see envs.core)."""

from envs import catalogue as _catalogue  # noqa: F401  (registers every environment)
from envs.core import (
    AgentIdObs,
    AutoReset,
    EnvSpec,
    EpisodeState,
    LastActionObs,
    MultiAgentEnv,
    TimeStep,
    Wrapper,
    make_timestep,
    random_actions,
)
from envs.registry import describe, make, names, options, register, wrap

__all__ = [
    "AgentIdObs",
    "AutoReset",
    "EnvSpec",
    "EpisodeState",
    "LastActionObs",
    "MultiAgentEnv",
    "TimeStep",
    "Wrapper",
    "describe",
    "make",
    "make_timestep",
    "names",
    "options",
    "random_actions",
    "register",
    "wrap",
]
