"""experiments/compare.py: one budget for every algorithm, and refusals before anything trains."""

import math

import pytest

import jmarl
from experiments.compare import equal_budget, main, planned_steps
from jmarl.core import plan
from jmarl.registry import make_algorithm


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_budget_that_rounds_differently_is_refused_with_one_that_does_not(tmp_path, capsys):
    """DPO on hallway updates in 2,048 env steps, LAN in 200 (chunks of 10 and 50 updates): 100 steps would
    train 2,048 and 200."""
    err = refused(["--env", "hallway", "--algos", "dpo", "lan", "--total-steps", "100", "--out", str(tmp_path / "c")],
                  capsys)
    assert "the budget of 100 env steps rounds to different numbers of env steps per seed: dpo 2,048, lan 200" in err
    assert "--total-steps 2560000 trains every algorithm exactly that many" in err
    assert not (tmp_path / "c").exists()  # nothing trained, nothing written
    for algo in ("dpo", "lan"):  # the suggested budget is what both train
        learner = make_algorithm(jmarl.make_config(algo, "hallway", total_steps=2_560_000))
        assert plan(learner).total_steps == 2_560_000


def test_the_equal_budget_is_the_smallest_that_every_learner_trains_exactly():
    cases = [([(2048, 10), (200, 50)], 100), ([(6, 1), (4, 3)], 1), ([(6, 1), (4, 3)], 50), ([(8, 2)], 9),
             ([(10, 3), (15, 2), (4, 1)], 7), ([(10, 3), (15, 2)], 1000)]
    for sizes, start in cases:
        whole_updates = math.lcm(*(s for s, _ in sizes))  # an exact budget is a whole number of every update
        first = -(-start // whole_updates) * whole_updates
        brute = next(x for x in range(first, 10**8, whole_updates)
                     if all(planned_steps(s, e, x) == x for s, e in sizes))
        assert equal_budget(sizes, start) == brute, (sizes, start)


def test_planned_steps_is_the_runs_plan():
    for algo, total in (("dpo", 100), ("lan", 100), ("lan", 12_345), ("tad_ppo", 30_000)):
        learner = make_algorithm(jmarl.make_config(algo, "hallway", total_steps=total))
        expected = plan(learner).total_steps
        assert planned_steps(learner.steps_per_update, learner.config.eval_every, total) == expected


def test_an_existing_out_is_refused_without_pointing_to_resume(tmp_path, capsys):
    (tmp_path / "c" / "ippo").mkdir(parents=True)
    (tmp_path / "c" / "ippo" / "config.json").write_text("{}")
    err = refused(["--env", "matrix_dpo4", "--algos", "dpo", "ippo", "--total-steps", "256", "--out",
                   str(tmp_path / "c")], capsys)
    assert f"--out {tmp_path / 'c'} already holds {tmp_path / 'c' / 'ippo'}" in err and "--runs" in err
    assert "--resume" not in err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["ippo"]


def test_every_preset_plans_one_budget_for_its_algorithms():
    from experiments import presets
    from experiments.compare import check_budgets

    for name in presets.names():
        preset = presets.load(name)
        assert check_budgets(preset.configs()) >= preset.total_steps, name
