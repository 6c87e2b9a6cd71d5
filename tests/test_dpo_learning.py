"""DPO and IPPO learn: greedy evaluation after a small budget beats the random policy clearly."""

import jax
import numpy as np
import pytest

import envs
import jmarl
from envs.rollout import make_random_rollout, summarise_episodes


def random_return(name: str) -> float:
    env = envs.make(name)
    out = jax.jit(make_random_rollout(env, 256, 4 * env.spec.episode_limit))(jax.random.PRNGKey(0))
    return summarise_episodes(out)["return"]


def final_eval_returns(algo: str, env: str, seeds: int, **overrides) -> np.ndarray:
    config = jmarl.make_config(algo, env, **overrides)
    train = jmarl.make_train(config)
    _, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(1), seeds))
    return np.asarray(metrics["eval/return"][:, -1])


@pytest.mark.parametrize("algo", ["dpo", "ippo"])
def test_learns_matrix_dpo4(algo):
    # (20, 0, 0, 10): random play earns 7.5; both greedy coordinated corners earn >= 10.
    final = final_eval_returns(algo, "matrix_dpo4", 4, total_steps=4096, num_envs=32, num_steps=8,
                               eval_every=16, hidden_dim=32, epochs=5)
    assert random_return("matrix_dpo4") == pytest.approx(7.5, abs=1.0)
    assert (final >= 10.0).all(), final


@pytest.mark.parametrize("algo", ["dpo", "ippo"])
def test_learns_hallway(algo):
    # the random policy loses about a step's cost per episode; learners reach a goal together (4 or 5)
    final = final_eval_returns(algo, "hallway", 3, total_steps=8192, num_envs=16, num_steps=32,
                               eval_every=16, hidden_dim=32, epochs=5)
    assert random_return("hallway") < 1.0
    assert (final >= 4.0).all(), final


@pytest.mark.slow
def test_stochastic_game_gap_to_the_dp_optimum(capsys):
    """DPO on DPO's stochastic game: report the gap to the exact optimum. No policy can beat the
    dynamic-programming optimum, so the gap must stay positive (a negative gap would mean a wrong
    solver or a wrong evaluation), and the greedy return lies within the reward range [0, 25]."""
    optimum = envs.make("stochastic_game").spec.optimal_return
    config = jmarl.make_config("dpo", "stochastic_game", total_steps=40_960, eval_every=5)
    _, metrics = jax.jit(jax.vmap(jmarl.make_train(config)))(jax.random.split(jax.random.PRNGKey(0), 3))
    ret, gap = np.asarray(metrics["eval/return"]), np.asarray(metrics["eval/optimality_gap"])
    np.testing.assert_allclose(gap, optimum - ret, atol=1e-4)
    assert (gap > 0).all() and (ret >= 0).all() and (ret <= 25).all()
    with capsys.disabled():
        print(f"\nstochastic_game DPO after 40,960 steps: greedy return {ret[:, -1].mean():.2f}, "
              f"optimum {optimum:.2f}, gap {gap[:, -1].mean():.2f}")
