"""Sweeps: traced keys form one vmapped program whose points equal separate runs; other keys run one
program per value; undeclared float keys and malformed sweeps are rejected before compiling."""

import json

import jax
import numpy as np
import pytest

import jmarl
from jmarl import runner
from jmarl import sweep as sw
from jmarl.config import ConfigError
from jmarl.registry import ALGORITHMS, make_algorithm
from jmarl.runner import run

TINY = dict(total_steps=128, num_envs=4, num_steps=8, hidden_dim=8, num_layers=1, epochs=2, eval_every=1,
            eval_episodes=4)
CONFIG = jmarl.make_config("ippo", "matrix_dpo4", **TINY)
QUIET = dict(log=lambda line: None, plots=False, checkpoints=False)


@pytest.mark.parametrize("items, needle", [
    (["lr"], "KEY=V1,V2"),
    (["lrr=1,2"], "did you mean lr"),
    (["env=hallway,matrix_dpo1"], "cannot be swept"),
    (["lr=1e-3", "lr=1e-4"], "given twice"),
    (["lr=1e-3,1e-3"], "repeats a value"),
    (["lr=,"], "has no values"),
    (["epochs=1.5,2"], "epochs must be an int"),
])
def test_malformed_sweeps_are_rejected(items, needle):
    with pytest.raises(ConfigError, match=needle):
        sw.parse_sweeps("ippo", items)


def test_keys_are_split_into_traced_sequential_and_rejected():
    sweeps = sw.parse_sweeps("dpo", ["lr=1e-3,3e-4", "hidden_dim=8,16", "recurrent=true,false", "d_target=0.1"])
    assert sweeps == {"lr": (1e-3, 3e-4), "hidden_dim": (8, 16), "recurrent": (True, False), "d_target": (0.1,)}
    traced, sequential = sw.split("dpo", sweeps)
    assert traced == {"lr": (1e-3, 3e-4), "d_target": (0.1,)}
    assert sequential == {"hidden_dim": (8, 16), "recurrent": (True, False)}
    with pytest.raises(ConfigError, match="dpo does not declare value_clip sweepable .*declared: lr,"):
        sw.split("dpo", {"value_clip": (0.1, 0.2)})  # read in Python control flow (`if value_clip > 0`)
    assert "clip" in sw.split("tad_ppo", {"clip": (0.1, 0.2)})[0]  # TAD-PPO reads its clip as a number


def test_grid_order_and_run_axis_layout():
    points = sw.grid({"lr": (1.0, 2.0), "gamma": (0.5, 0.9, 0.99)})
    assert points[:4] == [{"lr": 1.0, "gamma": 0.5}, {"lr": 1.0, "gamma": 0.9}, {"lr": 1.0, "gamma": 0.99},
                          {"lr": 2.0, "gamma": 0.5}]
    hp = sw.hparam_arrays(CONFIG, points, seeds=2)  # run r = point r // seeds
    np.testing.assert_array_equal(hp["lr"], np.float32([1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]))
    np.testing.assert_array_equal(hp["gamma"], np.float32([.5, .5, .9, .9, .99, .99] * 2))
    assert sw.point_name(points[1]) == "lr=1.0__gamma=0.9"
    assert sw.grid({}) == [{}]


def _one_per_learner():
    """One algorithm name per learner class that declares traced keys: its unmodified preset where it has one."""
    chosen = {}
    for name, (_, learner, *_) in sorted(ALGORITHMS.items(), key=lambda item: bool(item[1][3])):
        if getattr(learner, "sweepable", ()):
            chosen.setdefault(learner, name)
    return sorted(chosen.values())


@pytest.mark.parametrize("algo", [pytest.param(a, marks=() if a == "dpo" else pytest.mark.slow)
                                  for a in _one_per_learner()])
def test_every_declared_key_can_be_traced(algo):
    """All declared keys traced at once through init and one update (a key read in Python control flow, in
    a shape or converted to a Python number fails here). DPO in the fast suite; the other learners' tracing
    takes tens of seconds on CPU, so they run with the slow tests."""
    fields = {f for f in jmarl.registry.config_class(algo).__dataclass_fields__}
    overrides = {k: v for k, v in {**TINY, "num_layers": 2, "ent_coef_final": 0.0}.items() if k in fields}
    env = "matrix_dpo4" if "discrete" in jmarl.registry.action_kinds(algo) else "differential_game"
    algorithm = make_algorithm(jmarl.make_config(algo, env, **overrides))
    hp = {k: jax.ShapeDtypeStruct((2,), np.float32) for k in sw.traced_keys(algo)}

    def update(key, hparams):
        learner = sw.bind(algorithm, hparams)
        return learner.update(learner.init(key))

    state, _ = jax.eval_shape(jax.vmap(update), jax.ShapeDtypeStruct((2, 2), np.uint32), hp)
    assert state.env_steps.shape == (2,)


def test_sweep_points_equal_separate_runs(tmp_path):
    """lr is traced: 2 points x 2 seeds train in one program, and each point equals a run of its own."""
    result = run(CONFIG, seeds=2, out_dir=tmp_path, sweep={"lr": (5e-4, 5e-3)}, **QUIET)
    assert [e["point"] for e in result["sweep"]] == [{"lr": 5e-4}, {"lr": 5e-3}]
    leaf = tmp_path / "lr=0.0005"
    assert json.loads((leaf / "config.json").read_text())["lr"] == 5e-4
    assert json.loads((tmp_path / "config.json").read_text())["sweep"] == {"lr": [5e-4, 5e-3]}
    swept = rows(leaf)

    alone = tmp_path / "alone"
    run(CONFIG, seeds=2, out_dir=alone, **QUIET)  # lr 5e-4 is IPPO's default
    reference = rows(alone)
    assert [r["env_steps"] for r in swept] == [r["env_steps"] for r in reference] == [32, 32, 64, 64, 96, 96, 128,
                                                                                      128]
    for a, b in zip(swept, reference, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-5, atol=1e-6)
    # the points really differ: a 10x learning rate moves the policy further per update
    assert max(r["train/kl"] for r in swept) < min(r["train/kl"] for r in rows(tmp_path / "lr=0.005"))
    assert result["sweep"][0]["mean"]["return"] == pytest.approx(np.mean([r["return"] for r in reference[-2:]]))
    table = (tmp_path / "sweep.md").read_text()
    assert "| lr=0.0005 |" in table and "| lr=0.005 |" in table


def test_shape_keys_run_one_program_each(tmp_path, monkeypatch):
    """A sweep over num_envs (shapes) and lr (traced): one program per num_envs, each with both lr points."""
    calls = []

    def fake_program(spec, program, log):
        config = program.config
        calls.append((config.num_envs, dict(spec.traced), spec.program_dir(program).relative_to(tmp_path).as_posix()))
        summary = {"per_seed": [], "mean": {"return": float(config.num_envs)}, "ci95": {"return": [0.0, 1.0]}}
        return {"sweep": [{"point": p, **summary} for p in sw.grid(spec.traced)]}

    monkeypatch.setattr(runner, "_run_program", fake_program)
    lines = []
    result = run(CONFIG, seeds=2, out_dir=tmp_path, sweep={"num_envs": (2, 4), "lr": (5e-4, 5e-3)},
                 log=lines.append, plots=False)
    assert "num_envs changes the compiled program: running 2 programs one after another" in lines
    assert calls == [(2, {"lr": (5e-4, 5e-3)}, "num_envs=2"), (4, {"lr": (5e-4, 5e-3)}, "num_envs=4")]
    assert [e["point"] for e in result["sweep"]] == [{"num_envs": 2, "lr": 5e-4}, {"num_envs": 2, "lr": 5e-3},
                                                      {"num_envs": 4, "lr": 5e-4}, {"num_envs": 4, "lr": 5e-3}]
    assert json.loads((tmp_path / "config.json").read_text())["sequential"] == ["num_envs"]
    assert "| num_envs=4__lr=0.005 | 4.000 [0.000, 1.000] |" in (tmp_path / "sweep.md").read_text()
    with pytest.raises(ConfigError, match="num_envs .* must be divisible by num_minibatches|num_envs must be >= 1"):
        run(CONFIG, seeds=2, sweep={"num_envs": (0, 4)}, **QUIET)


def rows(directory):
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
