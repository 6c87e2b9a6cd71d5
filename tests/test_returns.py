"""GAE and normalisation checked against a plain Python loop and against numbers worked by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from jmarl.returns import gae, normalise


def gae_loop(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Reference GAE over [T, E, N] arrays, one env and one agent at a time, walking backwards.

    A terminated step bootstraps from 0, a truncated step from the value of its terminal
    observation; both restart the recursion. Other steps bootstrap from next_values[t].
    """
    num_steps, num_envs, num_agents = values.shape
    adv = np.zeros(values.shape)
    for e in range(num_envs):
        for i in range(num_agents):
            acc = 0.0
            for t in reversed(range(num_steps)):
                end = terminated[t, e] or truncated[t, e]
                next_v = 0.0 if terminated[t, e] else next_values[t, e, i]
                delta = rewards[t, e] + gamma * next_v - values[t, e, i]
                acc = delta if end else delta + gamma * lam * acc
                adv[t, e, i] = acc
    return adv, adv + values


def random_batch(seed, num_steps=9, num_envs=4, num_agents=3):
    """Random data with ends of both kinds (T >= 9, E >= 4) placed by hand, else drawn at random."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(num_steps, num_envs))
    values = rng.normal(size=(num_steps, num_envs, num_agents))
    next_values = rng.normal(size=(num_steps, num_envs, num_agents))
    if num_steps >= 9 and num_envs >= 4:
        terminated = np.zeros((num_steps, num_envs), bool)
        truncated = np.zeros((num_steps, num_envs), bool)
        terminated[2, 0] = terminated[5, 1] = terminated[8, 3] = True  # one at the very last step
        truncated[4, 0] = truncated[1, 2] = truncated[6, 2] = True
        terminated[3, 3] = truncated[3, 3] = True  # both at once: termination wins (next value 0)
    else:
        terminated = rng.random((num_steps, num_envs)) < 0.25
        truncated = rng.random((num_steps, num_envs)) < 0.25
    return rewards, values, next_values, terminated, truncated


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_python_loop_with_both_episode_ends(gamma, lam):
    """Terminations and truncations inside the batch, agent axis broadcast from [T, E, 1] inputs."""
    rewards, values, next_values, terminated, truncated = random_batch(0)
    done = terminated | truncated
    adv, targets = gae(jnp.asarray(rewards, jnp.float32)[..., None], jnp.asarray(values, jnp.float32),
                       jnp.asarray(next_values, jnp.float32), jnp.asarray(terminated)[..., None],
                       jnp.asarray(done)[..., None], gamma, lam)
    assert adv.shape == targets.shape == values.shape
    ref_adv, ref_targets = gae_loop(rewards, values, next_values, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, ref_targets, rtol=1e-5, atol=1e-5)


def test_gae_accepts_array_coefficients():
    """gamma and lambda given as arrays (as under a vmap over hyperparameters) give the same numbers."""
    rewards, values, next_values, terminated, truncated = random_batch(1, num_steps=5, num_envs=2, num_agents=2)
    assert terminated.any() and truncated.any()
    done = terminated | truncated
    adv, _ = gae(jnp.asarray(rewards)[..., None], jnp.asarray(values), jnp.asarray(next_values),
                 jnp.asarray(terminated)[..., None], jnp.asarray(done)[..., None], jnp.float32(0.8), jnp.float32(0.7))
    ref_adv, _ = gae_loop(rewards, values, next_values, terminated, truncated, 0.8, 0.7)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)


def run_scalar(rewards, values, next_values, terminated, done, gamma=0.5, lam=1.0):
    as_col = lambda x, dtype=jnp.float32: jnp.asarray(x, dtype)[:, None]  # [T] -> [T, 1]
    adv, targets = gae(as_col(rewards), as_col(values), as_col(next_values), as_col(terminated, bool),
                       as_col(done, bool), gamma, lam)
    return np.asarray(adv[:, 0]), np.asarray(targets[:, 0])


# Hand-worked case, T=3, gamma=0.5, lambda=1: rewards 1, 1, 1; V(s_t) = 1, 2, 4; V(s_{t+1}) = 2, 4, 8.
REWARDS, VALUES, NEXT_VALUES = [1.0, 1.0, 1.0], [1.0, 2.0, 4.0], [2.0, 4.0, 8.0]


def test_gae_by_hand_no_episode_end():
    """deltas are 1 + 0.5*2 - 1 = 1, 1 + 0.5*4 - 2 = 1, 1 + 0.5*8 - 4 = 1, so A = 1.75, 1.5, 1.

    The targets are the discounted returns bootstrapped from V = 8 after the last step:
    1 + 0.5 + 0.25 + 0.125*8 = 2.75, 1 + 0.5 + 0.25*8 = 3.5, 1 + 0.5*8 = 5.
    """
    adv, targets = run_scalar(REWARDS, VALUES, NEXT_VALUES, [0, 0, 0], [0, 0, 0])
    np.testing.assert_allclose(adv, [1.75, 1.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(targets, [2.75, 3.5, 5.0], rtol=1e-6)


def test_gae_by_hand_termination():
    """Terminated at t=1: the terminal observation's value (100) is ignored and the recursion stops.

    delta_1 = 1 + 0 - 2 = -1 = A_1; A_0 = 1 + 0.5*(-1) = 0.5 (target 1 + 0.5*1 = 1.5); A_2 = 1 as before.
    """
    adv, targets = run_scalar(REWARDS, VALUES, [2.0, 100.0, 8.0], [0, 1, 0], [0, 1, 0])
    np.testing.assert_allclose(adv, [0.5, -1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(targets, [1.5, 1.0, 5.0], rtol=1e-6)


def test_gae_by_hand_truncation():
    """Truncated at t=1 with terminal-observation value 6: bootstrap from it, then stop the recursion.

    delta_1 = 1 + 0.5*6 - 2 = 2 = A_1 (target 4); A_0 = 1 + 0.5*2 = 2 (target 1 + 0.5 + 0.25*6 = 3).
    """
    adv, targets = run_scalar(REWARDS, VALUES, [2.0, 6.0, 8.0], [0, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(adv, [2.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(targets, [3.0, 4.0, 5.0], rtol=1e-6)


def test_gae_by_hand_lambda_zero_is_one_step_td():
    """With lambda = 0 the advantage is the one-step TD error: 1, 1, 1 here, whatever the episode ends."""
    adv, targets = run_scalar(REWARDS, VALUES, NEXT_VALUES, [0, 0, 0], [0, 0, 0], lam=0.0)
    np.testing.assert_allclose(adv, [1.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(targets, [2.0, 3.0, 5.0], rtol=1e-6)


def test_normalise_all_axes_and_per_agent():
    """Zero mean, unit (population) std overall, and per agent with axis=(0, 1); hand case [1, 3] -> [-1, 1]."""
    np.testing.assert_allclose(normalise(jnp.array([1.0, 3.0])), [-1.0, 1.0], rtol=1e-6)
    x = np.random.default_rng(2).normal(3.0, 5.0, size=(6, 4, 2))
    x[..., 1] *= 100.0
    out = np.asarray(normalise(jnp.asarray(x, jnp.float32), axis=(0, 1)))
    expected = (x - x.mean(axis=(0, 1))) / x.std(axis=(0, 1))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    flat = np.asarray(normalise(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(flat, (x - x.mean()) / x.std(), rtol=1e-4, atol=1e-5)


def test_normalise_constant_input_is_zero_not_nan():
    """A constant batch has std 0; the eps keeps the result finite (all zeros)."""
    out = normalise(jnp.full((3, 2), 7.0))
    np.testing.assert_array_equal(np.asarray(out), np.zeros((3, 2)))
