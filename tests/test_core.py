"""jmarl/core.py: how a budget becomes chunks, and the finiteness flags a chunk reports."""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
import pytest

from jmarl.core import all_finite, first_false, plan


def fake(total_steps: int, eval_every: int, steps_per_update: int):
    return types.SimpleNamespace(config=types.SimpleNamespace(total_steps=total_steps, eval_every=eval_every),
                                 steps_per_update=steps_per_update)


@pytest.mark.parametrize("total, every, per_update, expected", [
    (1000, 10, 100, (10, 1)),  # exactly 10 updates: one chunk of 10
    (1001, 10, 100, (10, 2)),  # 11 updates round up to two whole chunks
    (50, 10, 100, (1, 1)),  # below one update: still one update
    (6400, 4, 128, (4, 13)),  # 50 updates -> 13 chunks of 4 (52 updates, 6656 steps)
    (300, 100, 100, (3, 1)),  # a chunk never holds more updates than the run
])
def test_plan_rounds_the_budget_up_to_whole_chunks(total, every, per_update, expected):
    p = plan(fake(total, every, per_update))
    assert (p.updates_per_chunk, p.num_chunks) == expected
    assert p.total_steps == p.updates_per_chunk * p.num_chunks * per_update
    assert p.total_steps >= total or p.total_updates == 1


def test_first_false_and_all_finite():
    assert int(first_false(jnp.array([True, True, False, False]))) == 2
    assert int(first_false(jnp.array([True, True]))) == -1
    tree = {"a": jnp.ones(3), "n": jnp.arange(3), "b": jnp.array([1.0, np.inf])}
    assert not bool(all_finite(tree)) and bool(all_finite({"a": jnp.ones(2), "n": jnp.arange(3)}))
    assert bool(all_finite({"n": jnp.arange(3)}))  # integers only: nothing to check
