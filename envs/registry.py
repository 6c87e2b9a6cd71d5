"""Name -> environment factory, with errors that say what is allowed.

Factories are stored as "module:attribute" strings and imported on first use, so ``import envs``
stays cheap and an env family whose optional dependency is heavy (jaxmarl, jumanji) is only imported
when asked for.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envs.core import AgentIdObs, AutoReset, LastActionObs, MultiAgentEnv


@dataclass(frozen=True)
class _Entry:
    target: str  # "module:callable" returning a MultiAgentEnv
    preset: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, target: str, description: str = "", **preset: Any) -> None:
    """Register ``name`` -> ``target(**preset, **user_kwargs)``; ``target`` is "module:callable"."""
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    _REGISTRY[name] = _Entry(target, dict(preset), description)


def names() -> list[str]:
    """All registered environment names, sorted."""
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    return _entry(name).description


def _suggest(word: str, choices: list[str]) -> str:
    """Up to three close matches, case aside (``SMAX_3m`` -> ``smax_3m``)."""
    lower = {c.lower(): c for c in choices}
    close = [lower[m] for m in difflib.get_close_matches(word.lower(), list(lower), n=3, cutoff=0.5)]
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown environment {name!r}.{_suggest(name, names())} Valid names: {', '.join(names())}"
        )
    return _REGISTRY[name]


def _resolve(target: str) -> Callable[..., MultiAgentEnv]:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def make(name: str, **kwargs: Any) -> MultiAgentEnv:
    """Build a registered environment; unknown names or keyword arguments raise a ValueError."""
    entry = _entry(name)
    factory = _resolve(entry.target)
    params = inspect.signature(factory).parameters
    allowed = sorted(p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY or
                     v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
    fixed = set(entry.preset)
    for key in kwargs:
        if key not in allowed or key in fixed:
            settable = [a for a in allowed if a not in fixed]
            raise ValueError(
                f"environment {name!r} has no option {key!r}.{_suggest(key, settable)} "
                f"Valid options: {', '.join(settable) if settable else '(none)'}"
            )
    env = factory(**entry.preset, **kwargs)
    # one factory serves several names (presets): the spec reports the name the user asked for
    env.spec = dataclasses.replace(env.spec, name=name)
    return env


def options(name: str) -> dict[str, Any]:
    """The keyword options a user may pass to ``make(name, ...)`` with their defaults."""
    entry = _entry(name)
    params = inspect.signature(_resolve(entry.target)).parameters
    return {
        p: (v.default if v.default is not inspect.Parameter.empty else None)
        for p, v in params.items()
        if p not in entry.preset and v.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


def wrap(
    env: MultiAgentEnv, *, agent_id: bool = False, last_action: bool = False, auto_reset: bool = True
) -> MultiAgentEnv:
    """Apply the standard wrappers in the only safe order (auto-reset outermost)."""
    if last_action:
        env = LastActionObs(env)
    if agent_id:
        env = AgentIdObs(env)
    if auto_reset:
        env = AutoReset(env)
    return env
