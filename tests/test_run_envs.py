"""The runner end to end for a few hundred steps on each env family DPO is used on: the files it writes,
returns within what the env can pay, and, on the tabular envs, reported returns that agree with an
independent evaluation of the checkpointed parameters."""

import json

import jax
import numpy as np
import pytest
from exact_values import greedy_actions, run_params, stochastic_game_greedy, stochastic_game_value

import envs
import jmarl
from jmarl.run_dir import load_checkpoint
from jmarl.runner import run

TINY = dict(num_envs=2, num_steps=16, hidden_dim=16, num_layers=2, epochs=1, eval_every=4, eval_episodes=2)


def check_independent_evaluation(env_name: str, config, out, final: list[dict]) -> None:
    """The final reported return of each seed against the checkpointed parameters' own value: exact on the
    one-step matrix game (the greedy joint action's payoff), the exact expected return of the greedy
    policy on the stochastic game (the report is a Monte Carlo mean over ``eval_episodes``)."""
    _, state, meta, _ = load_checkpoint(out)
    assert meta["seeds"] == len(final)
    algo = jmarl.make_algorithm(config)
    env = envs.make(env_name)
    for r, row in enumerate(final):
        params = run_params(state, r)
        if env_name == "matrix_dpo1":
            _, ts = algo.env.reset(jax.random.PRNGKey(r))
            actions = greedy_actions(algo, params, ts.obs[None], ts.avail_actions[None])[0]
            payoff = float(env.payoff[(0, *actions)])
            assert row["return"] == pytest.approx(payoff, abs=1e-5), (row, actions)
            assert row["optimality_gap"] == pytest.approx(env.spec.optimal_return - payoff, abs=1e-5)
        else:
            exact = stochastic_game_value(env, stochastic_game_greedy(env, algo, params))
            # 256 episodes of a deterministic policy: the standard error is about 0.1
            assert row["return"] == pytest.approx(exact, abs=0.5), (row, exact)


@pytest.mark.parametrize("env, keys", [
    ("matrix_dpo1", {"return", "optimality_gap"}),
    ("stochastic_game", {"return", "optimality_gap"}),
    ("mpe_simple_spread", {"return"}),
    pytest.param("smax_3m", {"return", "won"}, marks=pytest.mark.slow),  # ~1 min; SMAX's won key: envs/test_smax.py
])
def test_runner_on_env(env, keys, tmp_path):
    episodes = {"eval_episodes": 256} if env == "stochastic_game" else {}
    config = jmarl.make_config("dpo", env, total_steps=256, **{**TINY, **episodes})
    summary = run(config, seeds=2, out_dir=tmp_path, log=lambda s: None)
    assert set(summary["mean"]) == keys
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [128, 128, 256, 256]
    assert all(set(r) >= keys | {"env_steps", "seed"} for r in rows)
    if env == "smax_3m":
        assert json.loads((tmp_path / "config.json").read_text())["recurrent"] is True
        assert all(0.0 <= r["won"] <= 1.0 for r in rows)

    # Every return is one an episode can earn: the reward bounds times the episode limit.
    spec = envs.make(env).spec
    low, high = (bound * spec.episode_limit for bound in spec.reward_bounds)
    returns = np.array([r["return"] for r in rows])
    assert np.isfinite(returns).all() and (returns >= min(low, 0.0) - 1e-4).all(), returns
    assert (returns <= max(high, 0.0) + 1e-4).all(), returns
    # The summary is the last evaluation of each seed, and its mean their mean.
    final = [r for r in rows if r["env_steps"] == 256]
    assert [r["seed"] for r in final] == [0, 1]
    for key in keys:
        assert [s[key] for s in summary["per_seed"]] == [r[key] for r in final]
        assert summary["mean"][key] == pytest.approx(np.mean([r[key] for r in final]), rel=1e-6)
    if env == "mpe_simple_spread":  # continuous returns: two seeds (other init, other episodes) differ
        assert final[0]["return"] != final[1]["return"] and rows[0]["return"] != rows[1]["return"], rows
    if env in ("matrix_dpo1", "stochastic_game"):
        check_independent_evaluation(env, config, tmp_path, final)


def test_runner_reports_both_tad_ppo_policies_and_the_matrix_score(tmp_path):
    config = jmarl.make_config("tad_ppo", "matrix_tad10", total_steps=64, num_envs=8, num_steps=1, hidden_dim=16,
                               recurrent=False, epochs=1, eval_every=4, eval_episodes=2)
    summary = run(config, seeds=2, out_dir=tmp_path, log=lambda s: None)
    assert set(summary["mean"]) == {"return", "optimality_gap", "score", "return_sequential",
                                    "optimality_gap_sequential", "score_sequential"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [32, 32, 64, 64]
    assert all(-180.0 <= r["score"] <= 100.0 for r in rows)  # sums of ten payoffs: worst -180, best 100
