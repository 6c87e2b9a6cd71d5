"""jmarl/spec.py: the run spec is made once, with every check before compiling made exactly once."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

import jmarl
from jmarl import spec as sp
from jmarl.config import ConfigError

CONFIG = jmarl.make_config("ippo", "matrix_dpo4", total_steps=256, num_envs=4, num_steps=8, eval_every=2,
                           hidden_dim=8, eval_episodes=2)


@pytest.fixture
def counted(monkeypatch):
    """Counts of validations and learner builds inside make_run_spec."""
    calls = {"validate": 0, "build": 0}
    validate, build = sp.validate, sp.build_learner

    def counting_validate(config):
        calls["validate"] += 1
        return validate(config)

    def counting_build(config):
        calls["build"] += 1
        return build(config)

    monkeypatch.setattr(sp, "validate", counting_validate)
    monkeypatch.setattr(sp, "build_learner", counting_build)
    return calls


def test_a_plain_run_is_validated_once_and_its_learner_built_once(counted):
    spec = sp.make_run_spec(CONFIG, options=sp.RunOptions(seeds=3))
    assert counted == {"validate": 1, "build": 1}
    (program,) = spec.programs
    assert (spec.runs, program.runs, program.point, program.traced) == (3, 3, {}, ())
    assert program.plan.steps_per_update == 32 and program.plan.num_chunks == 4  # 8 updates in chunks of 2
    assert program.memory.runs == 3 and program.learner.config is program.config


def test_a_sweep_validates_every_point_once_and_builds_one_learner_per_program(counted):
    spec = sp.make_run_spec(CONFIG, {"num_envs": (2, 4), "lr": (1e-3, 3e-4, 1e-4)}, sp.RunOptions(seeds=2))
    assert counted == {"validate": 6, "build": 2}
    assert [p.point for p in spec.programs] == [{"num_envs": 2}, {"num_envs": 4}]
    assert [p.config.num_envs for p in spec.programs] == [2, 4]
    assert spec.traced == {"lr": (1e-3, 3e-4, 1e-4)} and spec.runs == 6
    assert all(p.traced == ("lr",) and p.runs == 6 for p in spec.programs)


def test_program_directories_and_identity(tmp_path):
    spec = sp.make_run_spec(CONFIG, {"num_envs": (2, 4)}, sp.RunOptions(seeds=2, base_seed=7), tmp_path)
    assert [spec.program_dir(p) for p in spec.programs] == [tmp_path / "num_envs=2", tmp_path / "num_envs=4"]
    identity = spec.identity(spec.programs[1])
    assert identity["config"]["num_envs"] == 4 and (identity["seeds"], identity["base_seed"]) == (2, 7)
    assert sp.make_run_spec(CONFIG).program_dir(sp.make_run_spec(CONFIG).programs[0]) is None


def test_programs_compare_by_what_they_compile():
    """The compile cache keys on config, traced keys, runs, devices and block, not on the learner object."""
    a, b = sp.make_run_spec(CONFIG).programs[0], sp.make_run_spec(CONFIG).programs[0]
    assert a.learner is not b.learner and a == b and hash(a) == hash(b)
    assert a != sp.make_run_spec(CONFIG, options=sp.RunOptions(seeds=2)).programs[0]


@pytest.mark.parametrize("kwargs, needle", [
    ({"options": sp.RunOptions(seeds=0)}, "--seeds must be >= 1, got 0"),
    ({"options": sp.RunOptions(base_seed=-1)}, "--seed must be between 0 and"),
    ({"options": sp.RunOptions(vmap_block=0)}, "--vmap-block must be >= 1 runs, got 0"),
    ({"options": sp.RunOptions(keep_checkpoints=0)}, "--keep-checkpoints must be >= 1"),
    ({"resume": True}, "resume needs the run's results directory"),
    ({"sweep": {"lr": (1e-3, -1.0)}}, "lr must be > 0.0"),
    ({"sweep": {"clip": (0.1, 0.2)}}, "does not declare clip sweepable"),
])
def test_bad_runs_are_refused_before_any_learner_is_built(kwargs, needle, counted):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        sp.make_run_spec(CONFIG, **kwargs)
    assert counted["build"] == 0


def test_a_budget_below_one_update_is_refused():
    with pytest.raises(ConfigError, match="total_steps=16 is less than one update"):
        sp.make_run_spec(dataclasses.replace(CONFIG, total_steps=16))


def test_a_directory_holding_checkpoints_is_refused_unless_resuming(tmp_path):
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds checkpoints of a run; continue it with --resume"):
        sp.make_run_spec(CONFIG, out=tmp_path)
    assert sp.make_run_spec(CONFIG, out=tmp_path, resume=True).resume
    sp.make_run_spec(CONFIG, out=tmp_path / "elsewhere")  # a fresh directory is fine


def test_seed_keys_do_not_depend_on_how_many_seeds_run():
    import numpy as np

    assert np.array_equal(np.asarray(sp.seed_keys(3, 5))[:2], np.asarray(sp.seed_keys(3, 2)))


def _earlier_run(directory, total_steps=256, updates_per_chunk=2, checkpoint=True, checkpoints=True, rows=True):
    """The files an earlier run left: config.json, results, and (optionally) one complete checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"total_steps": total_steps, "checkpoints": checkpoints,
                                                       "updates_per_chunk": updates_per_chunk}))
    if rows:
        (directory / "metrics.jsonl").write_text('{"env_steps": 64, "seed": 0, "return": 1.0}\n')
        (directory / "summary.json").write_text("{}")
    if checkpoint:
        step = directory / "checkpoints" / "4"
        for item in ("state", "record"):
            (step / item).mkdir(parents=True)
        (step / "commit_success.txt").write_text("")


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "metrics.csv", "summary.json"])
def test_a_new_run_never_writes_over_an_earlier_runs_results(tmp_path, name):
    (tmp_path / "notes.txt").write_text("mine")
    sp.make_run_spec(CONFIG, out=tmp_path)  # other files are no results
    (tmp_path / name).write_text("")
    with pytest.raises(ConfigError, match=rf"already holds a run's results \({name}\) and no checkpoint to resume "
                                          r"from; choose another results directory"):
        sp.make_run_spec(CONFIG, out=tmp_path)


def test_a_sweep_point_directory_is_checked_too(tmp_path):
    _earlier_run(tmp_path / "num_envs=4", checkpoint=False)
    with pytest.raises(ConfigError, match="num_envs=4 already holds a run's results"):
        sp.make_run_spec(CONFIG, {"num_envs": (2, 4)}, out=tmp_path)


def test_resume_extends_but_never_shortens_a_run(tmp_path):
    _earlier_run(tmp_path)
    longer = sp.make_run_spec(dataclasses.replace(CONFIG, total_steps=512), out=tmp_path, resume=True)
    assert (longer.programs[0].plan.updates_per_chunk, longer.programs[0].plan.num_chunks) == (2, 8)
    assert sp.make_run_spec(CONFIG, out=tmp_path, resume=True).resume
    with pytest.raises(ConfigError, match=f"total_steps=128 is below the budget of the run in {tmp_path} "
                                          r"\(256 env steps per seed\): a resumed run can be extended, not shortened"):
        sp.make_run_spec(dataclasses.replace(CONFIG, total_steps=128), out=tmp_path, resume=True)


def test_resume_refuses_a_budget_that_changes_the_chunks(tmp_path):
    """A run shorter than one eval_every chunk trained in smaller chunks, which a longer budget would not keep."""
    _earlier_run(tmp_path, total_steps=32, updates_per_chunk=1)
    with pytest.raises(ConfigError, match="trained in chunks of 1 updates .* would train in chunks of 2, which its "
                                          "checkpoints cannot continue"):
        sp.make_run_spec(CONFIG, out=tmp_path, resume=True)


@pytest.mark.parametrize("checkpoints, found, why", [
    (False, "summary.json, metrics.jsonl", " (it ran with --no-checkpoints)"),  # rows it cannot redo from anything
    (True, "summary.json", ""),  # a finished run whose checkpoints are gone
])
def test_resume_refuses_results_without_a_checkpoint(tmp_path, checkpoints, found, why):
    _earlier_run(tmp_path, checkpoint=False, checkpoints=checkpoints)
    message = f"holds no checkpoint to resume from{why} and already holds results ({found}); they stay as they are"
    with pytest.raises(ConfigError, match=re.escape(message)):
        sp.make_run_spec(CONFIG, out=tmp_path, resume=True)


def test_resume_without_a_checkpoint_starts_afresh_when_nothing_is_lost(tmp_path):
    started = tmp_path / "started"  # config.json, no rows yet
    _earlier_run(started, checkpoint=False, rows=False)
    assert sp.make_run_spec(CONFIG, out=started, resume=True).resume
    cut = tmp_path / "cut"  # rows of a checkpointed run stopped before its first complete checkpoint: redone alike
    _earlier_run(cut, checkpoint=False, rows=False)
    (cut / "metrics.jsonl").write_text('{"env_steps": 64, "seed": 0, "return": 1.0}\n')
    assert sp.make_run_spec(CONFIG, out=cut, resume=True).resume
