"""experiments/claims.py and experiments/reproduce.py: claims judged by hand-worked numbers, and a
reproduction run in two pieces (a time limit, then the same command) whose report judges its claims."""

import json

import numpy as np
import pytest

from experiments import presets, reproduce
from experiments.claims import Claim, judge, parse_claims, per_seed
from experiments.reproduce import main
from jmarl.config import ConfigError
from jmarl.runner import Interrupted


def above(**kw):
    return Claim(says="a above b", paper="Fig. 1", kind="above", algo="a", other="b", **kw)


def test_above_needs_intervals_apart_in_the_claimed_order():
    high, low = np.array([10.0, 11.0, 12.0, 11.0]), np.array([1.0, 2.0, 1.5, 2.5])
    mixed = np.array([1.0, 12.0, 2.0, 11.0])
    assert judge(above(), {"a": high, "b": low}, 0.2).verdict == "reproduced"
    assert judge(above(), {"a": mixed, "b": low}, 1.0).verdict == "undecided"  # intervals overlap
    # the opposite order: refuted only at the full budget
    assert judge(above(), {"a": low, "b": high}, 0.5).verdict == "undecided"
    assert judge(above(), {"a": low, "b": high}, 1.0).verdict == "refuted"
    verdict = judge(above(), {"a": high, "b": low}, 1.0)
    assert verdict.ours.startswith("a 11.00 [") and " vs b 1.75 [" in verdict.ours


def test_reaches_and_below_count_seeds_against_the_value():
    reaches = Claim(says="s", paper="p", kind="reaches", algo="a", value=8.0, seeds=0.5)
    below = Claim(says="s", paper="p", kind="below", algo="a", value=8.0, seeds=0.75)
    two_of_four = np.array([8.0, 7.9999999, 0.0, 0.0])  # a float32 8 counts as 8
    one_of_four = np.array([8.0, 0.0, 0.0, 0.0])
    assert judge(reaches, {"a": two_of_four}, 0.1).verdict == "reproduced"
    assert judge(reaches, {"a": one_of_four}, 0.1).verdict == "undecided"
    assert judge(reaches, {"a": one_of_four}, 1.0).verdict == "refuted"
    assert "at least 8 on 2/4 seeds" in judge(reaches, {"a": two_of_four}, 0.1).ours
    # below: 3 of 4 seeds below 8 satisfies 75%; it is settled only at the full budget, and refuted at any
    assert judge(below, {"a": one_of_four}, 0.5).verdict == "undecided"
    assert judge(below, {"a": one_of_four}, 1.0).verdict == "reproduced"
    assert judge(below, {"a": two_of_four}, 0.5).verdict == "refuted"


def test_per_seed_final_and_mean_statistics():
    rows = [{"env_steps": s, "seed": seed, "return": float(s * (seed + 1))} for s in (20, 10, 30) for seed in (1, 0)]
    np.testing.assert_allclose(per_seed(rows, "return", "final"), [30.0, 60.0])
    np.testing.assert_allclose(per_seed(rows, "return", "mean"), [20.0, 40.0])
    with pytest.raises(ConfigError, match="no evaluation reports 'won'"):
        per_seed(rows, "won", "final")


@pytest.mark.parametrize("item,message", [
    ({"says": "s", "paper": "p", "kind": "above", "algo": "a", "other": "b", "colour": 1}, "unknown key 'colour'"),
    ({"says": "s", "paper": "p", "kind": "beats", "algo": "a"}, "kind must be one of above, reaches, below"),
    ({"says": "s", "paper": "p", "kind": "above", "algo": "a"}, "needs other"),
    ({"says": "s", "paper": "p", "kind": "reaches", "algo": "a"}, "needs value"),
    ({"says": "s", "paper": "p", "kind": "above", "algo": "a", "other": "z"}, "about z, which the preset does not run"),
    ({"says": "s", "paper": "p", "kind": "reaches", "algo": "a", "value": 1, "seeds": 2}, "seeds is a fraction"),
    ({"says": "s", "kind": "reaches", "algo": "a", "value": 1}, "lacks paper"),
])
def test_malformed_claims_are_refused_naming_the_claim(item, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_claims([item], ("a", "b"), "x.toml")
    assert str(info.value).startswith("x.toml claim 1")


def test_every_preset_states_a_claim():
    assert all(presets.load(name).claims for name in presets.names())


TINY = """title = "DPO vs IPPO on a tiny matrix game"
paper = "DPO (dpo.md)"
figure = "a test"
env = "matrix_dpo4"
algos = ["dpo", "ippo"]
seeds = 2
total_steps = 256

[set]
num_envs = 8
num_steps = 4
epochs = 1
num_minibatches = 1
hidden_dim = 8
eval_every = 2
eval_episodes = 2

[[claim]]
says = "DPO reaches 0"
paper = "by construction"
kind = "reaches"
algo = "dpo"
value = -1000
seeds = 1.0

[[claim]]
says = "IPPO wins"
paper = "a metric no learner reports"
kind = "reaches"
algo = "ippo"
metric = "score"
value = 1
"""


def test_a_reproduction_in_two_pieces_then_its_report(tmp_path, monkeypatch, capsys):
    """A time limit stops the first piece after DPO's first chunk (checkpoint saved, exit 75, IPPO not
    started); the same command then resumes DPO, trains IPPO and writes the report, whose claim holds."""
    monkeypatch.setattr(presets, "DIRECTORY", tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    out = tmp_path / "r"
    argv = ["--preset", "tiny", "--out", str(out), "--time-limit", "1e-9"]
    assert main(argv) == 75
    assert "rerun the same command to continue" in capsys.readouterr().err
    assert (out / "dpo" / "checkpoints").is_dir() and not (out / "dpo" / "summary.json").exists()
    assert not (out / "ippo").exists()
    assert main(argv[:-2]) == 0
    report = (out / "reproduction.md").read_text()
    assert "256 env steps per seed, 100.0% of the preset's 256" in report
    assert "| DPO reaches 0 (final return) | by construction | dpo: at least -1000 on 2/2 seeds" in report
    assert "**reproduced**" in report
    missing = "| IPPO wins (final score) | a metric no learner reports |  | **undecided** | ippo reports no 'score' |"
    assert missing in report
    record = json.loads((out / "reproduction.json").read_text())
    assert record["fraction"] == 1.0 and [c["verdict"] for c in record["claims"]] == ["reproduced", "undecided"]
    pieces = json.loads((out / "pieces.json").read_text())
    assert [p["finished"] for p in pieces] == [False, True] and set(pieces[1]["wall_s"]) == {"dpo", "ippo"}
    assert (out / "comparison.md").exists()
    # the whole budget is done: a third run trains nothing and writes the same verdicts
    assert main(argv[:-2]) == 0
    assert json.loads((out / "reproduction.json").read_text())["claims"] == record["claims"]


@pytest.mark.parametrize("env_steps, said", [(128, "at env steps 128 per run, checkpoints saved"),
                                              (None, "before the algorithm's first chunk")])
def test_a_signal_says_to_rerun_the_same_command(tmp_path, monkeypatch, capsys, env_steps, said):
    """SIGTERM during an algorithm (run.py's Interrupted): exit 128 + 15, the piece logged as unfinished, and
    the advice is this command again, not run.py --resume of one algorithm's directory."""
    monkeypatch.setattr(presets, "DIRECTORY", tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)

    def stopped(*args, **kwargs):
        raise Interrupted("interrupted; resume with: python experiments/run.py --resume x", 15, env_steps)

    monkeypatch.setattr(reproduce, "run", stopped)
    out = tmp_path / "r"
    assert main(["--preset", "tiny", "--out", str(out)]) == 143
    err = capsys.readouterr().err
    assert f"reproduce.py: interrupted {said}; rerun the same command to continue" in err
    assert "run.py" not in err
    pieces = json.loads((out / "pieces.json").read_text())
    assert [p["finished"] for p in pieces] == [False] and set(pieces[0]["wall_s"]) == {"dpo"}


def test_results_without_a_checkpoint_are_refused_untouched(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(presets, "DIRECTORY", tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    stray = tmp_path / "r" / "dpo"
    stray.mkdir(parents=True)
    (stray / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit) as info:
        main(["--preset", "tiny", "--out", str(tmp_path / "r")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds results with no checkpoint to continue from" in err
    assert sorted(p.name for p in stray.iterdir()) == ["metrics.jsonl"]
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--out", str(tmp_path / "s"), "--fraction", "1.5"])
    assert "--fraction must be in (0, 1]" in capsys.readouterr().err
