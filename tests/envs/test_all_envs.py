"""Contract checks run on every registered environment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.rollout import make_random_rollout

NUM_ENVS = 4


def full_record(ts, actions, avail):
    return {
        "obs": ts.obs, "state": ts.state, "avail": ts.avail_actions, "reward": ts.reward,
        "terminated": ts.terminated, "truncated": ts.truncated, "actions": actions, "avail_used": avail,
        "final_obs": ts.info["final_obs"], "length": ts.info["episode_length"],
    }


# Every SMAX map costs 20-40 s of compile: two maps (the smallest and the headline 3s5z) in the fast suite,
# the rest under -m slow; they share one adapter, and tests/envs/test_smax.py checks it against jaxmarl.
FAST_SMAX = ("smax_3m", "smax_3s5z")
# Brax physics compiles in 15-25 s and a 1000-step episode runs past the limit here: the MuJoCo robots run
# under -m slow (tests/envs/test_mamujoco.py checks hopper_3x1 in the fast suite).


def _slow(name: str) -> bool:
    return (name.startswith("smax_") and name not in FAST_SMAX) or name.startswith("mamujoco")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if _slow(n) else n for n in envs.names()])
def test_env_contract(name):
    kwargs = {"payoff": [[1.0, 0.0], [0.0, 1.0]]} if name == "matrix" else {}
    env = envs.make(name, **kwargs)
    spec = env.spec
    assert spec.name == name or name == "matrix"
    n, a = spec.num_agents, spec.num_actions

    # reset: shapes, dtypes and determinism for a fixed key
    state, ts = jax.jit(env.reset)(jax.random.PRNGKey(3))
    _, ts2 = jax.jit(env.reset)(jax.random.PRNGKey(3))
    assert ts.obs.shape == (n, spec.obs_dim) and ts.obs.dtype == jnp.float32
    assert ts.state.shape == (spec.state_dim,) and ts.state.dtype == jnp.float32
    assert ts.avail_actions.shape == (n, a) and ts.avail_actions.dtype == jnp.bool_
    assert ts.reward.shape == () and ts.terminated.shape == () and ts.truncated.shape == ()
    for key in ("episode_return", "episode_length", "won"):
        assert ts.info[key].shape == ()
    jax.tree.map(np.testing.assert_array_equal, ts, ts2)
    assert bool(ts.avail_actions.any(axis=-1).all()), "every agent needs an available action"

    # a whole episode and more, jit + vmap, random available actions
    steps = spec.episode_limit + 5
    rollout = jax.jit(make_random_rollout(env, NUM_ENVS, steps, record=full_record))
    out = rollout(jax.random.PRNGKey(0))
    again = rollout(jax.random.PRNGKey(0))
    jax.tree.map(np.testing.assert_array_equal, out, again)  # deterministic for a fixed key

    assert out["obs"].shape == (steps, NUM_ENVS, n, spec.obs_dim)
    assert out["state"].shape == (steps, NUM_ENVS, spec.state_dim)
    for k in ("obs", "state", "reward", "final_obs"):
        assert np.isfinite(np.asarray(out[k])).all(), f"{name}: non-finite {k}"
    low, high = spec.reward_bounds
    reward = np.asarray(out["reward"])
    assert reward.min() >= low - 1e-5 and reward.max() <= high + 1e-5, (reward.min(), reward.max())
    if spec.continuous:  # float vectors within the bounds, 0 on the dimensions an agent does not control
        actions, low_a, high_a = np.asarray(out["actions"]), *spec.action_bounds
        assert actions.shape == (steps, NUM_ENVS, n, a) and actions.dtype == np.float32
        assert (actions >= low_a).all() and (actions <= high_a).all()
        assert (actions[~np.asarray(out["avail_used"])] == 0).all()
    else:  # the helper never picks an unavailable action
        taken = np.take_along_axis(np.asarray(out["avail_used"]), np.asarray(out["actions"])[..., None], -1)
        assert taken.all()
    # episodes end by the limit, termination and truncation never together, truncation only at the limit
    done = np.asarray(out["terminated"]) | np.asarray(out["truncated"])
    assert done.any(axis=0).all(), f"{name}: some env never finished an episode in {steps} steps"
    assert not (np.asarray(out["terminated"]) & np.asarray(out["truncated"])).any()
    length = np.asarray(out["length"])
    assert length.max() <= spec.episode_limit
    assert (length[np.asarray(out["truncated"])] == spec.episode_limit).all()
