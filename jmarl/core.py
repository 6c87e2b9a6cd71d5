"""The algorithm protocol and ``make_train``: every training run is one pure JAX program.

An algorithm is an object built from a frozen config with

- ``init(key) -> TrainState``: everything needed to resume bit-for-bit (params, optimiser state,
  env states, RNG, counters, adaptive coefficients);
- ``update(state) -> (state, metrics)``: one collect-and-learn iteration; metrics are a small
  fixed-size dict of scalars;
- ``evaluate(state) -> metrics``: greedy decentralised evaluation (jittable);
- ``act(...)``: decentralised execution, optionally greedy.

Training is a scan over *chunks*; a chunk is ``eval_every`` updates followed by one evaluation.
The runner calls the same compiled chunk repeatedly, so progress, checkpoints and logging happen
between chunks without recompiling; ``make_train`` scans the chunks inside one program instead.

Every chunk also reports whether training stayed finite (a few reductions per update, inside the
compiled program), so a run that diverges stops before a NaN reaches a checkpoint:
``nonfinite/train/<name>`` for every float metric the update returns and ``nonfinite/params`` for the
learnable parameters (``params`` and ``target_params`` where present; not replay buffers) hold the
index within the chunk of the first update after which the value was NaN or infinite, or -1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from jmarl.registry import make_algorithm


class Algorithm(Protocol):
    config: Any
    steps_per_update: int

    def init(self, key: jax.Array) -> Any: ...

    def update(self, state: Any) -> tuple[Any, dict[str, jax.Array]]: ...

    def evaluate(self, state: Any) -> dict[str, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a budget of env steps becomes compiled chunks of updates."""

    steps_per_update: int
    updates_per_chunk: int
    num_chunks: int

    @property
    def total_updates(self) -> int:
        return self.updates_per_chunk * self.num_chunks

    @property
    def total_steps(self) -> int:
        return self.total_updates * self.steps_per_update


def plan(algo: Algorithm) -> Plan:
    """At least one chunk; the budget is rounded up to whole chunks of ``eval_every`` updates."""
    cfg = algo.config
    updates = max(1, math.ceil(cfg.total_steps / algo.steps_per_update))
    per_chunk = min(cfg.eval_every, updates)
    return Plan(algo.steps_per_update, per_chunk, math.ceil(updates / per_chunk))


NONFINITE = "nonfinite/"


def learnable(state: Any) -> dict[str, Any]:
    """The parameters a diverging update corrupts first (replay buffers are left out: large, and their
    contents come from the env)."""
    out = {"params": state.params}
    if getattr(state, "target_params", None) is not None:
        out["target_params"] = state.target_params
    return out


def all_finite(tree: Any) -> jax.Array:
    checks = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(checks).all() if checks else jnp.asarray(True)


def first_false(ok: jax.Array) -> jax.Array:
    """Index of the first False along axis 0, or -1 when all are True."""
    return jnp.where(ok.all(), -1, jnp.argmin(ok)).astype(jnp.int32)


def make_chunk(algo: Algorithm, updates_per_chunk: int) -> Callable[[Any], tuple[Any, dict[str, jax.Array]]]:
    """``chunk(state) -> (state, metrics)``: a scan of updates, then a greedy evaluation.

    Metrics: training metrics averaged over the chunk under ``train/``, the evaluation under
    ``eval/``, ``env_steps`` (per seed) at the end of the chunk, and the finiteness flags under
    ``nonfinite/`` (module docstring).
    """

    def guarded_update(state, _):
        state, metrics = algo.update(state)
        finite = {f"train/{k}": all_finite(v) for k, v in metrics.items() if jnp.issubdtype(v.dtype, jnp.inexact)}
        return state, (metrics, {**finite, "params": all_finite(learnable(state))})

    def chunk(state):
        state, (train_metrics, finite) = jax.lax.scan(guarded_update, state, None, updates_per_chunk)
        evals = algo.evaluate(state)
        metrics = {f"train/{k}": v.mean() for k, v in train_metrics.items()}
        metrics.update({f"eval/{k}": v for k, v in evals.items()})
        metrics["env_steps"] = state.env_steps
        metrics.update({NONFINITE + k: first_false(ok) for k, ok in finite.items()})
        return state, metrics

    return chunk


def make_train(config: Any) -> Callable[[jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """``train(key) -> (final state, metrics stacked over evaluation points)``; pure and jittable,
    so ``jax.jit(jax.vmap(train))(keys)`` trains one seed per key in one program.

    Besides ``train/...``, ``eval/...`` and ``env_steps``, the metrics hold per chunk the finiteness
    flags ``nonfinite/train/<name>`` and ``nonfinite/params`` (-1: finite throughout the chunk; else
    the index of the first non-finite update within it): training does not stop on them, the caller
    decides (``(metrics["nonfinite/params"] >= 0).any()``)."""
    algo = make_algorithm(config)
    p = plan(algo)
    chunk = make_chunk(algo, p.updates_per_chunk)

    def train(key):
        state = algo.init(key)
        return jax.lax.scan(lambda s, _: chunk(s), state, None, p.num_chunks)

    return train

