"""The side-by-side peer benchmark: the work settings it claims, its report, the missing-peer path, and
(slow, where the peer's scripts are present) its --quick path end to end.

The smoke run is a subprocess because the benchmark registers a 3-agent simple spread under its own
name, which must not leak into other tests that list the registered envs. XLA's backend optimisation is
turned down for it: the run checks the pipeline and its bookkeeping, not speed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_scripts import load

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "peer_comparison.py"


BENCH = load("peer_comparison")


def peer_folder() -> Path | None:
    try:
        return BENCH.find_peer(None)
    except BENCH.PeerMissing:
        return None


needs_peer = pytest.mark.skipif(peer_folder() is None, reason="jaxmarl's scripts (the peer) are not beside the project")


def test_a_missing_peer_is_one_line_and_exit_2(tmp_path, capsys):
    assert BENCH.main(["--peer", str(tmp_path), "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no peer_bench.py in" in err and "--peer" in err
    assert not (tmp_path / "out").exists()  # nothing written


@needs_peer
def test_cases_claim_the_peers_own_settings():
    """Our overrides equal the peer's yaml values wherever both have the setting."""
    pb = BENCH.load_peer(peer_folder())
    same = {"num_envs": "NUM_ENVS", "num_steps": "NUM_STEPS", "epochs": "UPDATE_EPOCHS",
            "num_minibatches": "NUM_MINIBATCHES", "lr": "LR", "max_grad_norm": "MAX_GRAD_NORM", "clip": "CLIP_EPS",
            "ent_coef": "ENT_COEF", "batch_size": "BUFFER_BATCH_SIZE", "train_steps": "NUM_EPOCHS",
            "mixing_embed_dim": "MIXER_EMBEDDING_DIM", "hypernet_dim": "MIXER_HYPERNET_HIDDEN_DIM"}
    widths = ("GRU_HIDDEN_DIM", "FC_DIM_SIZE", "HIDDEN_SIZE")
    for case in BENCH.CASES.values():
        cfg = pb.CASES[case.peer_case]["cfg"]
        checked = 0
        for ours, theirs in same.items():
            if ours in case.overrides and theirs in cfg:
                assert case.overrides[ours] == pytest.approx(cfg[theirs]), (case.name, ours)
                checked += 1
        for w in widths:
            if w in cfg:
                assert case.overrides["hidden_dim"] == cfg[w], (case.name, w)
        assert checked >= 4, case.name
    assert BENCH.CASES["ippo_rnn_smax_3m"].overrides["shared_layers"] == 2  # the peer's shared Dense + GRU
    assert BENCH.CASES["ippo_ff_mpe"].overrides["hidden_dim"] == 64  # its fixed Dense 64 layers


def fake_row(name: str, peer: float, ours: float) -> dict:
    cost = {"flops_per_step": 2e6, "bytes_per_step": 3e5, "kernels_per_update": 1000.0, "while_loops": 2,
            "unknown_trip_counts": 0}
    sides = [{"compile_s": 3.0, "run_s": [1.0, 1.0], "cpu_s": [2.0, 2.0], "steps_per_s": s, "cpu_steps_per_s": s / 2,
              "cost": dict(cost, flops_per_step=cost["flops_per_step"] * k)} for s, k in ((peer, 1), (ours, 0.5))]
    sides[1].update(overrides={"num_envs": 16}, num_envs=16, num_steps=128)
    r = BENCH.ratio(sides[1], sides[0])
    return {"name": name, "seeds": 1, "updates": 1, "quick": False, "differences": ["a difference"], "peer": sides[0],
            "ours": sides[1], "ratio": r, "target": 1.5, "target_met": r["steps_per_s"] >= 1.5}


def test_ratios_and_report_follow_from_the_numbers():
    row = fake_row("ippo_ff_mpe", 1000.0, 2000.0)
    assert row["ratio"]["steps_per_s"] == 2.0 and row["ratio"]["flops_per_step"] == 0.5
    assert row["target_met"]
    slow = fake_row("mappo_rnn_smax_3m", 1000.0, 1200.0)
    meta = {"device": "cpu", "jax": "0", "cpus": 2, "date": "d", "quick": False, "peer": "p"}
    md = BENCH.markdown([row, slow], meta)
    assert ("| ippo_ff_mpe | 1 | 1,000 | 2,000 | **2.00** | 2.00 | 3 / 3 | 2.0 / 1.0 | 0.30 / 0.30 | 1,000 / 1,000 "
            "| met |") in md
    assert "| mappo_rnn_smax_3m | 1 | 1,000 | 1,200 | **1.20** |" in md and md.count("not met") == 1
    assert "  - a difference" in md


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("peer")
    # The subprocess inherits the session's fast-compile flags and compilation cache (conftest.py).
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--cases", "ippo_ff_mpe", "qmix_rnn_smax_3m",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "peer_comparison_quick.json").read_text())


@needs_peer
@pytest.mark.slow  # both sides compiled and run on tiny sizes in a subprocess (a few minutes)
def test_quick_run_measures_both_sides(quick_run):
    assert quick_run["meta"]["quick"] is True
    names = [r["name"] for r in quick_run["cases"]]
    assert names == ["ippo_ff_mpe", "qmix_rnn_smax_3m"]
    for row in quick_run["cases"]:
        for side in ("peer", "ours"):
            s = row[side]
            assert len(s["run_s"]) == len(s["cpu_s"]) == BENCH.ROUNDS
            numbers = [s["steps_per_s"], s["cpu_steps_per_s"], s["cost"]["flops_per_step"],
                       s["cost"]["bytes_per_step"], s["cost"]["kernels_per_update"]]
            assert all(math.isfinite(x) and x > 0 for x in numbers), (row["name"], side, numbers)
        assert row["ratio"]["steps_per_s"] == pytest.approx(row["ours"]["steps_per_s"] / row["peer"]["steps_per_s"],
                                                            rel=1e-2)
    qmix = quick_run["cases"][1]["peer"]
    assert qmix["warmup_updates"] == 3  # BUFFER_BATCH_SIZE 2 + 1 in the quick settings
