"""Results files, learning curves and the progress line, against hand-worked values and closed forms."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from jmarl.plots import curve, curve_figure, learning_curves
from jmarl.progress import Progress, format_duration, render
from jmarl.results import (
    MetricsFiles,
    bootstrap_band,
    bootstrap_ci,
    eval_keys,
    metric_rows,
    summarise,
    summary_markdown,
)

ORDER = ("return", "won", "optimality_gap")


def test_rows_keep_known_keys_first_and_any_new_key():
    metrics = {"env_steps": np.array([64, 64]), "eval/return": np.array([1.0, 3.0]),
               "eval/zeta_new": np.array([0.5, 0.25]), "eval/optimality_gap": np.array([4.0, 2.0]),
               "train/kl": np.array([0.1, 0.2])}
    rows = metric_rows(metrics, runs=[1, 0], seeds=[7, 8], order=ORDER)
    assert rows == [{"env_steps": 64, "seed": 7, "return": 3.0, "optimality_gap": 2.0, "zeta_new": 0.25,
                     "train/kl": 0.2},
                    {"env_steps": 64, "seed": 8, "return": 1.0, "optimality_gap": 4.0, "zeta_new": 0.5,
                     "train/kl": 0.1}]
    assert eval_keys(rows[0], ORDER) == ["return", "optimality_gap", "zeta_new"]
    summary = summarise(rows, ORDER)
    assert summary["mean"] == {"return": 2.0, "optimality_gap": 3.0, "zeta_new": 0.375}
    assert summary["per_seed"][0] == {"seed": 7, "env_steps": 64, "return": 3.0, "optimality_gap": 2.0,
                                      "zeta_new": 0.25}


def test_bootstrap_band_matches_the_normal_approximation():
    """With many seeds the percentile interval of the mean approaches mean +- 1.96 sd / sqrt(n)."""
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 2.0, size=(2, 400))
    lo, hi = bootstrap_band(values)
    half = 1.96 * values.std(axis=1) / np.sqrt(400)
    np.testing.assert_allclose(lo, values.mean(axis=1) - half, atol=0.03)
    np.testing.assert_allclose(hi, values.mean(axis=1) + half, atol=0.03)
    assert bootstrap_ci(values[1]) == (pytest.approx(lo[1]), pytest.approx(hi[1]))  # rows are independent
    np.testing.assert_allclose(bootstrap_band(np.full((3, 5), 2.5)), np.full((2, 3), 2.5))
    one_seed = bootstrap_band(np.array([[1.0], [4.0]]))
    np.testing.assert_array_equal(one_seed[0], [1.0, 4.0])


def test_curve_groups_rows_by_env_steps():
    rows = [{"env_steps": s, "seed": i, "return": float(s // 10 + i)} for s in (10, 20) for i in range(3)]
    rows.append({"env_steps": 30, "seed": 0, "return": 9.0})  # seeds 1, 2 never reached 30
    steps, mean, lo, hi = curve(rows, "return")
    np.testing.assert_array_equal(steps, [10, 20])
    np.testing.assert_allclose(mean, [2.0, 3.0])  # (1+2+3)/3, (2+3+4)/3
    assert np.all(lo <= mean) and np.all(mean <= hi) and np.all(lo >= [1, 2]) and np.all(hi <= [3, 4])


def test_metrics_files_jsonl_and_csv_agree(tmp_path):
    files = MetricsFiles(tmp_path)
    first = [{"env_steps": 32, "seed": s, "return": 0.5 * s, "train/kl": 1e-3 * s} for s in range(2)]
    second = [{**r, "env_steps": 64} for r in first]
    files.reset()
    files.append(first)
    files.append(second)
    jsonl = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    with open(tmp_path / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert jsonl == first + second
    assert [list(r) for r in table] == [["env_steps", "seed", "return", "train/kl"]] * 4
    assert [{k: float(v) for k, v in r.items()} for r in table] == [{k: float(v) for k, v in r.items()}
                                                                     for r in jsonl]
    files.reset(first)  # a resumed run keeps the rows up to its checkpoint
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3


def test_summary_markdown_table():
    summary = {"per_seed": [{"seed": 0, "env_steps": 8, "return": 1.0}, {"seed": 1, "env_steps": 8, "return": 3.0}],
               "mean": {"return": 2.0}, "ci95": {"return": [1.0, 3.0]}}
    text = summary_markdown(summary, "dpo on hallway", "note")
    assert text.splitlines() == ["# dpo on hallway", "", "note", "",
                                 "| metric | mean | 95% interval | seed 0 | seed 1 |", "|---|---:|---|---:|---:|",
                                 "| return | 2 | [1, 3] | 1 | 3 |"]


def test_learning_curve_pngs(tmp_path):
    rows = [{"env_steps": s, "seed": i, "return": s / 10 + i, "won": 0.5, "train/kl": 0.0}
            for s in (10, 20, 30) for i in range(2)]
    paths = learning_curves(rows, tmp_path, "title", ORDER, optimum=5.0)
    assert [p.name for p in paths] == ["curve_return.png", "curve_won.png"]
    for p in paths:
        with Image.open(p) as image:
            assert image.format == "PNG" and image.size == (720, 480)


def test_a_one_point_curve_is_drawn_with_a_marker():
    """A one-chunk run has one evaluation point: no line to draw, so the mean gets a marker."""
    one = [{"env_steps": 64, "seed": i, "return": float(i)} for i in range(3)]
    three = [{"env_steps": s, "seed": 0, "return": 1.0} for s in (10, 20, 30)]
    ax = curve_figure({"one": one, "three": three}, "return", optimum=2.0).axes[0]
    markers = {line.get_label(): line.get_marker() for line in ax.get_lines()}
    assert markers["one"] == "o" and markers["three"] in (None, "None", "")
    assert ax.collections  # the one-point series' band as a bar, the other's as a filled band


def test_progress_line():
    assert format_duration(3725.4) == "1:02:05"
    line = render(25, 100, rate=5.0, runs=2, evals={"return": 1.5, "won": 0.25, "other": 3.0})
    assert line == ("[#####...............]  25% | env steps 25/100 | 10 steps/s | ETA 0:00:15 | "
                    "eval: return 1.500  win rate 0.250")
    assert render(0, 100, None, 1, {}) == "[....................]   0% | env steps 0/100"
    lines = []
    progress = Progress(total_steps=100, runs=4, log=lines.append)
    progress.start(done=50)  # a resumed run: throughput counts only what this process ran
    progress.update(100, {"optimality_gap": 0.0})
    assert lines[0].startswith("[####################] 100% | env steps 100/100 | ")
    assert lines[0].endswith("ETA 0:00:00 | eval: gap 0.000")


def test_a_long_chunk_says_it_is_still_running():
    import time

    lines = []
    progress = Progress(total_steps=100, runs=1, log=lines.append, heartbeat_s=0.05)
    with progress.chunk(3, 10):
        time.sleep(0.3)
    count = len(lines)
    assert count >= 2 and all(line.startswith("chunk 3/10 running for 0:00:0") for line in lines), lines
    time.sleep(0.15)
    assert len(lines) == count  # nothing after the chunk
    with Progress(total_steps=100, runs=1, log=lines.append, heartbeat_s=None).chunk(1, 1):
        time.sleep(0.1)
    assert len(lines) == count


def _fake_run(directory, algo, returns):
    """A finished run's files: returns[t][s] at env steps 100 (t + 1)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"algo": algo, "env": "matrix_dpo4", "seeds": 2,
                                                       "base_seed": 0}))
    rows = [{"env_steps": 100 * (t + 1), "seed": s, "return": r, "optimality_gap": 20 - r}
            for t, per_seed in enumerate(returns) for s, r in enumerate(per_seed)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "summary.json").write_text(json.dumps(summarise(rows[-2:], ORDER)))


def test_compare_collects_runs_into_one_table_and_plot(tmp_path):
    from experiments.compare import main

    _fake_run(tmp_path / "a", "dpo", [[7.0, 10.0], [20.0, 10.0]])
    _fake_run(tmp_path / "b", "ippo", [[7.0, 7.0], [10.0, 10.0]])
    assert main(["--runs", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| dpo | 2 | 200 | 15.000 [10.000, 20.000] | 5.000 [0.000, 10.000] |" in table
    assert "| ippo | 2 | 200 | 10.000 [10.000, 10.000] | 10.000 [10.000, 10.000] |" in table
    assert "Optimum (exact): 20.000." in table
    assert sorted(p.name for p in (tmp_path / "cmp").glob("*.png")) == ["compare_optimality_gap.png",
                                                                          "compare_return.png"]


def test_compare_overrides_go_to_the_algorithms_that_have_them():
    from experiments.compare import split_overrides
    from jmarl.config import ConfigError

    out = split_overrides(["dpo", "mappo"], ["lr=1e-3", "d_target=0.05", "mappo.distill_coef=2"], 4096)
    assert out == {"dpo": {"lr": 1e-3, "d_target": 0.05, "total_steps": 4096},
                   "mappo": {"lr": 1e-3, "distill_coef": 2.0, "total_steps": 4096}}
    with pytest.raises(ConfigError, match="did you mean lr"):
        split_overrides(["dpo"], ["lrr=1"], None)
    with pytest.raises(ConfigError, match="not one of the compared algorithms"):
        split_overrides(["dpo"], ["ippo.lr=1"], None)
