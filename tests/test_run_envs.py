"""The runner end to end for a few hundred steps on each env family DPO is used on."""

import json

import pytest

import jmarl
from jmarl.runner import run

TINY = dict(num_envs=2, num_steps=16, hidden_dim=16, num_layers=2, epochs=1, eval_every=4, eval_episodes=2)


@pytest.mark.parametrize("env, keys", [
    ("matrix_dpo1", {"return", "optimality_gap"}),
    ("stochastic_game", {"return", "optimality_gap"}),
    ("mpe_simple_spread", {"return"}),
    ("smax_3m", {"return", "won"}),
])
def test_runner_on_env(env, keys, tmp_path):
    config = jmarl.make_config("dpo", env, total_steps=256, **TINY)
    summary = run(config, seeds=2, out_dir=tmp_path, log=lambda s: None)
    assert set(summary["mean"]) == keys
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [128, 128, 256, 256]
    assert all(set(r) >= keys | {"env_steps", "seed"} for r in rows)
    if env == "smax_3m":
        assert json.loads((tmp_path / "config.json").read_text())["recurrent"] is True
        assert all(0.0 <= r["won"] <= 1.0 for r in rows)


def test_runner_reports_both_tad_ppo_policies_and_the_matrix_score(tmp_path):
    config = jmarl.make_config("tad_ppo", "matrix_tad10", total_steps=64, num_envs=8, num_steps=1, hidden_dim=16,
                               recurrent=False, epochs=1, eval_every=4, eval_episodes=2)
    summary = run(config, seeds=2, out_dir=tmp_path, log=lambda s: None)
    assert set(summary["mean"]) == {"return", "optimality_gap", "score", "return_sequential",
                                    "optimality_gap_sequential", "score_sequential"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [32, 32, 64, 64]
    assert all(-180.0 <= r["score"] <= 100.0 for r in rows)  # sums of ten payoffs: worst -180, best 100
