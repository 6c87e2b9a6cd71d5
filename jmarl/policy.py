"""Exported policies: one run's parameters plus the config that rebuilds its networks.

An exported directory holds ``policy.json`` (format version, the resolved config, which run of
which results directory it came from, package versions) and ``params.msgpack`` (Flax's msgpack of
the parameter tree). Loading needs neither the checkpoint, the optimiser state nor the training
loop: the config rebuilds the learner object (its network modules and env wrappers), and the
learner's ``greedy_policy(params, batch)`` gives decentralised greedy execution in
:func:`jmarl.evaluate.evaluate_greedy`'s form (``(carry, policy(carry, obs, avail, reset))``).

The parameter tree is the learner's whole ``params`` (for DPO each agent's actor and critic, which
share one module): the greedy policy only reads the actor.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from jmarl.config import ConfigError, validate
from jmarl.evaluate import evaluate_greedy
from jmarl.registry import config_class, make_algorithm
from jmarl.run_dir import versions

FORMAT = 1


def require_greedy_policy(algo: Any) -> None:
    if not callable(getattr(algo, "greedy_policy", None)) or not hasattr(algo, "env"):
        raise ConfigError(f"{algo.config.algo} does not expose greedy_policy(params, batch) and env, which "
                          f"exported policies and rendering need (contract in docs/contributing.md)")


def _param_shapes(algo: Any) -> Any:
    """Zero arrays shaped like ``algo``'s parameters (from the shapes of its init; nothing is computed)."""
    target = jax.eval_shape(lambda key: algo.init(key).params, jax.random.PRNGKey(0))
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), target)


def _check_params(params: Any, target: Any) -> None:
    """Raise ValueError unless ``params`` has ``target``'s tree structure and leaf shapes."""
    if jax.tree.structure(params) != jax.tree.structure(target) or any(
            np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(target), strict=True)):
        raise ValueError("parameter shapes differ from the config's networks")


def export_policy(directory: str | Path, config: Any, params: Any, source: dict[str, Any] | None = None) -> Path:
    """Write ``params`` (one run's, no run axis) and ``config`` under ``directory``.

    Only what :func:`load_policy` can load back is written: a learner without ``greedy_policy`` and
    ``env``, or parameters that are not its networks', give a ConfigError before anything is written.
    """
    algo = make_algorithm(config)
    require_greedy_policy(algo)
    try:
        _check_params(params, _param_shapes(algo))
    except ValueError as err:
        raise ConfigError(f"cannot export {config.algo}'s policy: {err}") from None
    record = {"format": FORMAT, "config": dataclasses.asdict(config), "source": source or {}, "versions": versions()}
    text = json.dumps(record, indent=1)
    raw = serialization.to_bytes(jax.device_get(params))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.json").write_text(text)
    (directory / "params.msgpack").write_bytes(raw)
    return directory


def parameter_count(params: Any) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True, repr=False)
class Policy:
    """A loaded policy: the learner object built from the config, and its parameters; printed, it says
    which algorithm on which env, how many parameters and where it came from."""

    config: Any
    algo: Any
    params: Any
    source: dict[str, Any]
    directory: Path | None = None

    def __repr__(self) -> str:
        src = self.source
        if "run_dir" in src:
            point = ", ".join(f"{k}={v}" for k, v in (src.get("point") or {}).items())
            origin = f"run {src['run_dir']} seed {src.get('seed', 0)}" + (f" ({point})" if point else "")
        else:
            origin = ", ".join(f"{k}={v}" for k, v in src.items()) or "no source recorded"
        loaded = f", loaded from {self.directory}" if self.directory is not None else ""
        return (f"Policy({self.config.algo} on {self.config.env}, {parameter_count(self.params):,} parameters, "
                f"from {origin}{loaded})")

    def greedy(self, batch: int) -> tuple[Any, Any]:
        """(initial carry, policy) for ``batch`` parallel episodes."""
        return self.algo.greedy_policy(self.params, batch)

    def evaluate(self, episodes: int, key: jax.Array) -> dict[str, float]:
        """Greedy decentralised return (and win rate, gap to the optimum where defined) over ``episodes``."""

        def run(params, key):
            carry, policy = self.algo.greedy_policy(params, episodes)
            return evaluate_greedy(self.algo.env, policy, carry, key, episodes)

        return {k: float(v) for k, v in jax.jit(run)(self.params, key).items()}


def load_policy(directory: str | Path) -> Policy:
    """Rebuild an exported policy; a missing, foreign or damaged export gives a ConfigError."""
    directory = Path(directory)
    try:
        record = json.loads((directory / "policy.json").read_text())
        raw = (directory / "params.msgpack").read_bytes()
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{directory} is not an exported policy ({type(err).__name__}: {err})") from None
    if record.get("format") != FORMAT:
        raise ConfigError(f"{directory}: policy format {record.get('format')!r} is not {FORMAT}")
    fields = record["config"]
    cls = config_class(fields["algo"])
    names = {f.name for f in dataclasses.fields(cls)}
    config = validate(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in names}))
    algo = make_algorithm(config)
    require_greedy_policy(algo)
    target = _param_shapes(algo)
    try:
        params = serialization.from_bytes(target, raw)
        _check_params(params, target)
    except Exception as err:  # msgpack and Flax raise several types for damaged or foreign bytes
        raise ConfigError(f"{directory}/params.msgpack does not hold this config's parameters "
                          f"({type(err).__name__}: {err})") from None
    return Policy(config, algo, params, record.get("source", {}), directory)
