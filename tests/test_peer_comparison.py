"""The peer comparison benchmark: its --quick path end to end, and the work settings it claims.

The smoke run is a subprocess because the benchmark registers a 3-agent simple spread under its own
name, which must not leak into other tests that list the registered envs. XLA's backend optimisation is
turned down for it: the run checks the pipeline and its bookkeeping, not speed. The smoke run is `slow`
(make test-slow); the work settings and findings are checked in the fast suite.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "peer_comparison.py"
CASE_KEYS = {"name", "algo", "env", "seeds", "updates", "overrides", "work", "peer_work", "macs", "compile_s",
             "train_steps_per_s", "train_cpu_steps_per_s", "raw_steps_per_s", "raw_compile_s", "train_over_raw",
             "peer", "vs_peer", "targets"}


def load_benchmark():
    spec = importlib.util.spec_from_file_location("peer_comparison", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("peer")
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--cases", "ippo_ff_mpe", "--no-breakdown",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "peer_comparison_quick.json").read_text()), (out / "peer_comparison_quick.md").read_text()


def positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow  # a benchmark smoke run in a subprocess (about 30 s)
def test_quick_json_has_the_documented_keys_and_positive_finite_numbers(quick_run):
    result, _ = quick_run
    assert result["meta"]["quick"] is True
    (case,) = result["cases"]
    assert CASE_KEYS <= set(case)
    assert "breakdown" not in case  # --no-breakdown
    assert len(case["train_steps_per_s"]) == 2 and len(case["train_cpu_steps_per_s"]) == 2  # two timed runs
    assert len(case["raw_steps_per_s"]) == 2
    numbers = [case["compile_s"], case["raw_compile_s"], case["train_over_raw"], *case["train_steps_per_s"],
               *case["train_cpu_steps_per_s"], *case["raw_steps_per_s"], case["vs_peer"]["recorded"],
               *case["vs_peer"]["by_raw_ratio"], *case["vs_peer"]["by_raw_ratio_work_adjusted"]]
    assert all(positive_finite(x) for x in numbers), numbers


@pytest.mark.slow  # a benchmark smoke run in a subprocess (about 30 s)
def test_quick_work_settings_are_the_ones_claimed(quick_run):
    (case,) = quick_run[0]["cases"]
    w = case["work"]
    # --quick: 4 envs x 8 steps, 1 epoch of 2 minibatches, on the 3-agent simple spread
    assert (w["num_agents"], w["num_envs"], w["num_steps"], w["epochs"], w["num_minibatches"]) == (3, 4, 8, 1, 2)
    assert w["env_steps_per_update"] == 4 * 8
    assert w["gradient_steps_per_update"] == 1 * 2
    assert w["samples_per_gradient_step"] == (4 // 2) * 8 * 3
    assert (w["hidden_dim"], w["num_layers"], w["recurrent"], w["shared_across_agents"]) == (64, 2, False, True)


@pytest.mark.slow  # a benchmark smoke run in a subprocess (about 30 s)
def test_quick_multiply_adds_match_hand_counts(quick_run):
    m = quick_run[0]["cases"][0]["macs"]
    # ours: obs 18 + agent id 3 = 21 inputs; actor 21*64 + 64*64 + 64*5, critic 21*64 + 64*64 + 64*1
    assert m["ours_per_agent_step"] == {"shared": 0, "actor": 5760, "critic": 5504}
    # the peer's: 18 inputs, no id
    assert m["peer_per_agent_step"] == {"shared": 0, "actor": 5568, "critic": 5312}
    agent_steps = 32 * 3
    # ours: rollout actor + critic + critic on the next obs; 1 epoch fwd+bwd (3 passes); the actor once for the KL
    ours = agent_steps * (11264 + 5504) + 3 * agent_steps * 11264 + agent_steps * 5760
    peer = agent_steps * 10880 + 3 * agent_steps * 10880
    assert (m["ours_per_update"]["total"], m["peer_per_update"]["total"]) == (ours, peer)
    assert m["ours_per_update"]["rollout"] == agent_steps * (11264 + 5504)


@pytest.mark.slow  # a benchmark smoke run in a subprocess (about 30 s)
def test_quick_ratios_follow_from_the_measured_numbers(quick_run):
    result, md = quick_run
    (case,) = result["cases"]
    train, raw = max(case["train_steps_per_s"]), max(case["raw_steps_per_s"])
    assert case["train_over_raw"] == pytest.approx(train / raw)
    assert case["vs_peer"]["recorded"] == pytest.approx(train / 77_000)
    peer_lo, peer_hi = 77_000 / 470_000, 77_000 / 300_000
    assert case["peer"]["train_over_raw"] == pytest.approx([peer_lo, peer_hi])
    assert case["vs_peer"]["by_raw_ratio"] == pytest.approx([train / raw / peer_hi, train / raw / peer_lo])
    assert "| ippo_ff_mpe | 4x8 | 1 x 2 | 48 |" in md


def test_full_cases_claim_the_peers_work_settings():
    bench = load_benchmark()
    for case in bench.CASES.values():
        peer = case.peer["work"]
        ours = {k: case.overrides[k] for k in ("num_envs", "num_steps", "epochs", "num_minibatches")}
        assert ours == {k: peer[k] for k in ours}, case.name
        assert case.overrides.get("share_params", case.algo == "mappo"), case.name  # mappo always shares
    assert bench.CASES["ippo_ff_mpe_8seeds"].seeds == 8
    # the peer's networks, from its scripts' layer sizes (SMAX 3m: 75 obs, 72 state, 8 actions, 3 agents)
    smax = bench.envs.EnvSpec(name="x", num_agents=3, obs_dim=75, state_dim=72, num_actions=8, episode_limit=100)
    rnn = bench.peer_network("ippo_rnn", smax)
    assert rnn == {"shared": 75 * 128 + 3 * 128 * 128 * 2, "actor": 128 * 128 + 128 * 8, "critic": 128 * 128 + 128}
    mappo = bench.peer_network("mappo_rnn", smax)
    assert mappo["critic"] == 75 * 128 + 6 * 128 * 128 + 128 * 128 + 128


def test_findings_state_the_breakdown_and_what_the_targets_ask():
    bench = load_benchmark()
    row = {"name": "ippo_gru_smax_3m", "seeds": 1, "work": {"env_steps_per_update": 16384},
           "macs": {"ours_per_update": {"total": 10**12}, "ours_over_peer": 2.0},
           "peer": {"steps_per_s": 10_000, "implied_gflops_per_s": 100.0}, "raw_steps_per_s": [40_000, 50_000],
           "targets": {"raw_fraction_target": 0.5},
           "breakdown": {"collect_ms": 1000.0, "learn_ms": 3000.0, "env_in_collect_ms": 400.0,
                         "learn_per_gradient_step_ms": 187.5, "learn_gflops_per_cpu_s": 40.0,
                         "matmul_reference_gflops_per_cpu_s": 50.0}}
    text = bench.findings(row, cpus=2)
    assert "one update takes 4,000 ms here, 75% of it learning" in text
    assert "implies 100 GFLOP per second, 100% of 2 cores" in text
    assert "(50% of ours is work the peer does not do)" in text
    # 2e12 FLOP per 16,384 env steps: 1.5 x 10,000 steps/s -> 1,831 GFLOP/s; 0.5 x 50,000 -> 3,052 GFLOP/s
    assert "needs 1831 GFLOP/s (18.3x 2 cores at the reference rate)" in text
    assert "needs 3052 GFLOP/s (30.5x)" in text
