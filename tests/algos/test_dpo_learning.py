"""DPO and IPPO learn: greedy evaluation after a small budget beats the random policy clearly."""

import jax
import numpy as np
import pytest
from exact_values import run_params, stochastic_game_greedy, stochastic_game_value, uniform_joint

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


# Independent learners start from uniform play, where one agent's action barely moves the shared return
# (its effect is averaged over the other five agents' 5**5 joint actions). With the default entropy bonus
# (0.01) DPO's greedy return stays at chance (about 12.5) for 40,960 steps with the default network and for
# 409,600 steps with this one; without the bonus, and with small, frequent updates, it leaves chance after
# about 10**5 steps and reaches about 22 at this budget.
SG_BUDGET = dict(total_steps=204_800, num_steps=32, eval_every=50, hidden_dim=32, num_layers=2, epochs=4,
                 lr=3e-3, ent_coef=0.0)


@pytest.mark.slow
def test_stochastic_game_gap_to_the_dp_optimum(capsys):
    """DPO on DPO's stochastic game closes a good part of the gap between chance and the exact optimum.

    Chance is the uniform random policy's exact value (about 12.5 of an optimum of 25.0, cross-checked by
    a Monte Carlo rollout of the env) and the untrained network's greedy policy's exact value; DPO's
    final greedy policy, valued exactly from its parameters, must reach chance + 40% of the way to the
    optimum, and the training's own (Monte Carlo) evaluation must agree with that exact value."""
    env = envs.make("stochastic_game")
    optimum = env.spec.optimal_return
    uniform = stochastic_game_value(env, uniform_joint(env))
    assert random_return("stochastic_game") == pytest.approx(uniform, abs=0.3)

    config = jmarl.make_config("dpo", "stochastic_game", **SG_BUDGET)
    algo = jmarl.make_algorithm(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    untrained = [stochastic_game_value(env, stochastic_game_greedy(env, algo, algo.init(k).params)) for k in keys]
    state, metrics = jax.jit(jax.vmap(jmarl.make_train(config)))(keys)
    reported = np.asarray(metrics["eval/return"][:, -1])
    exact = np.array([stochastic_game_value(env, stochastic_game_greedy(env, algo, run_params(state, r)))
                      for r in range(len(keys))])
    bar = max(uniform, *untrained) + 0.4 * (optimum - uniform)
    with capsys.disabled():
        print(f"\nstochastic_game DPO after {config.total_steps:,} steps: greedy value {np.round(exact, 2)} "
              f"(reported {np.round(reported, 2)}), untrained {np.round(untrained, 2)}, random {uniform:.2f}, "
              f"bar {bar:.2f}, optimum {optimum:.2f}")
    assert (exact <= optimum + 1e-3).all(), exact  # no policy beats the dynamic-programming optimum
    assert (exact >= bar).all(), (exact, bar)
    np.testing.assert_allclose(reported, exact, atol=1.0)  # 32 episodes: standard error about 0.27
