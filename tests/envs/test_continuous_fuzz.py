"""Fuzzing the continuous-action environments (tests/envs/test_env_fuzz.py fuzzes the discrete ones).

Hypothesis draws a seed and a scale for Gaussian actions, many far outside the bounds; one jitted scan
steps the auto-reset env with them, then again with the same actions clipped to ``spec.action_bounds``
and zeroed on the dimensions an agent does not control. The env documents that it clips and ignores
those, so the two runs must agree on everything but the actions. The trajectory is then checked in
NumPy: finite values, rewards within the spec's bounds, and episode counters that follow the steps.

The fast suite fuzzes the differential game; the MuJoCo robots (a physics compile each) run under -m slow
with a short step limit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs

CONTINUOUS = [n for n in envs.names() if n == "differential_game" or n.startswith("mamujoco")]
NUM_ENVS, STEPS = 3, 40
LIMITS = {"differential_game": {}}  # options that keep a fuzz short; the robots get a 15-step limit


@functools.cache
def program(name: str):
    env = envs.wrap(envs.make(name, **LIMITS.get(name, {"episode_limit": 15})))

    def run(key, actions):
        state, ts = jax.vmap(env.reset)(jax.random.split(key, NUM_ENVS))
        first_avail = ts.avail_actions

        def body(carry, xs):
            state, _ = carry
            k, a = xs
            state, ts = jax.vmap(env.step)(jax.random.split(k, NUM_ENVS), state, a)
            return (state, ts), dict(obs=ts.obs, state=ts.state, reward=ts.reward, terminated=ts.terminated,
                                     truncated=ts.truncated, length=ts.info["episode_length"],
                                     ret=ts.info["episode_return"], final_obs=ts.info["final_obs"],
                                     avail=ts.avail_actions)

        _, out = jax.lax.scan(body, (state, ts), (jax.random.split(key, STEPS), actions))
        out["first_avail"] = first_avail
        return out

    return env, jax.jit(run)


def fuzz(name: str, seed: int, scale: float):
    env, run = program(name)
    spec = env.spec
    rng = np.random.default_rng(seed)
    raw = (rng.normal(size=(STEPS, NUM_ENVS, spec.num_agents, spec.num_actions)) * scale).astype(np.float32)
    key = jax.random.PRNGKey(seed)
    out = jax.tree.map(np.asarray, run(key, raw))
    avail = np.concatenate([out["first_avail"][None], out["avail"][:-1]])  # what each step's actions met
    clipped = np.where(avail, np.clip(raw, *spec.action_bounds), 0.0).astype(np.float32)
    again = jax.tree.map(np.asarray, run(key, clipped))
    for k in out:
        np.testing.assert_array_equal(out[k], again[k], err_msg=f"{name}: clipping changed {k}")
    return spec, out


def check(spec, out) -> None:
    for k in ("obs", "state", "reward", "final_obs", "ret"):
        assert np.isfinite(out[k]).all(), f"{spec.name}: non-finite {k}"
    low, high = spec.reward_bounds
    assert out["reward"].min() >= low - 1e-4 and out["reward"].max() <= high + 1e-4
    assert not (out["terminated"] & out["truncated"]).any(), "terminated and truncated together"
    done = out["terminated"] | out["truncated"]
    start = np.concatenate([np.ones((1, NUM_ENVS), bool), done[:-1]])
    previous = np.concatenate([np.zeros((1, NUM_ENVS), np.int64), out["length"][:-1]])
    np.testing.assert_array_equal(out["length"], np.where(start, 1, previous + 1), "episode length counter")
    prev_ret = np.concatenate([np.zeros((1, NUM_ENVS), np.float32), out["ret"][:-1]])
    np.testing.assert_allclose(out["ret"], np.where(start, 0, prev_ret) + out["reward"], rtol=1e-5, atol=1e-4)
    assert out["length"].max() <= spec.episode_limit
    assert (out["length"][out["truncated"]] == spec.episode_limit).all(), "truncated before the limit"


examples = st.tuples(st.integers(0, 2**16), st.sampled_from([0.3, 1.0, 5.0, 1e3]))


@pytest.mark.parametrize("name", [n if n == "differential_game" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CONTINUOUS])
@settings(max_examples=6, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(example=examples)
def test_fuzz_continuous(name, example):
    spec, out = fuzz(name, *example)
    check(spec, out)


def test_check_catches_a_reward_out_of_bounds():
    spec, out = fuzz("differential_game", 0, 1.0)
    check(spec, out)
    out = jax.tree.map(np.copy, out)
    out["reward"][3, 0] = 10.5
    with pytest.raises(AssertionError):
        check(spec, out)


def test_out_of_bound_actions_act_as_clipped():
    """By hand: (30, -30) acts as (10, -10): f2 = -(5^2 + 15^2) + 10 = -240, f1 = 0.8 (-(15/3)^2 - (5/3)^2)."""
    env = envs.make("differential_game")
    state, _ = env.reset(jax.random.PRNGKey(0))
    _, ts = env.step(jax.random.PRNGKey(0), state, jnp.array([[30.0], [-30.0]]))
    np.testing.assert_allclose(ts.reward, max(-240.0, 0.8 * (-25 - 25 / 9)), rtol=1e-6)


@pytest.mark.parametrize("a1,a2,reward", [(5.0, 5.0, 10.0), (-5.0, -5.0, 0.0), (10.0, 10.0, -40.0),
                                          (0.0, 0.0, 0.8 * -50 / 9), (5.0, 4.0, 9.0)])
def test_differential_game_payoff_by_hand(a1, a2, reward):
    """The optimum, the local optimum, the box's minimum, the start of a zero-mean policy, one step off the top."""
    env = envs.make("differential_game")
    state, _ = env.reset(jax.random.PRNGKey(0))
    _, ts = env.step(jax.random.PRNGKey(0), state, jnp.array([[a1], [a2]]))
    np.testing.assert_allclose(ts.reward, reward, rtol=1e-6)
    assert bool(ts.terminated)
