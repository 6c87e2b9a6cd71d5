"""experiments/run.py: rejects bad input with exit code 2 and one line before compiling, writes its results
files, and combines presets with the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "experiments" / "run.py")]


@pytest.mark.parametrize("argv, needle", [
    (["--algo", "dpp", "--env", "hallway"], "did you mean dpo"),
    (["--algo", "dpo", "--env", "halway"], "did you mean hallway"),
    (["--algo", "dpo", "--env", "hallway", "--set", "lrr=3"], "did you mean lr"),
    (["--algo", "dpo", "--env", "hallway", "--set", "lr=-1"], "lr must be > 0"),
    (["--algo", "dpo", "--env", "hallway", "--set", "gamma=1.5"], "gamma must be <= 1"),
    (["--algo", "dpo", "--env", "hallway", "--set", "epochs=2.5"], "epochs must be an int"),
    (["--algo", "dpo", "--env", "hallway", "--set", "lr"], "KEY=VALUE"),
    (["--algo", "dpo", "--env", "hallway", "--seeds", "0"], "--seeds must be >= 1"),
    (["--algo", "dpo", "--env", "hallway", "--total-steps", "0"], "total_steps must be >= 1"),
    (["--env", "hallway"], "--algo"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys):
    from experiments.run import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


def test_the_script_itself_exits_2_with_one_line():
    """One real process (the cases above call main() in-process): exit code 2, one line, no traceback."""
    proc = subprocess.run(RUN + ["--algo", "dpp", "--env", "hallway"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean dpo" in lines[0] and "Traceback" not in proc.stderr


def test_end_to_end_writes_config_metrics_and_summary(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(RUN + ["--no-compile-cache", "--algo", "ippo", "--env", "hallway", "--seeds", "2",
                                 "--total-steps", "256",
                                 "--set", "num_envs=4", "--set", "num_steps=32", "--set", "eval_every=1",
                                 "--set", "hidden_dim=16", "--set", "epochs=2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "ippo" and config["clip"] == 0.2 and config["seeds"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2  # two evaluation points (256 steps / 128 per update) x two seeds
    assert {r["seed"] for r in rows} == {0, 1}
    assert [r["env_steps"] for r in rows] == [128, 128, 256, 256]
    for r in rows:
        assert {"env_steps", "seed", "return", "won", "optimality_gap"} <= set(r)
        assert r["optimality_gap"] == pytest.approx(5.0 - r["return"], abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["seed"] for s in summary["per_seed"]] == [0, 1]
    assert summary["mean"]["return"] == pytest.approx(sum(r["return"] for r in rows[2:]) / 2, abs=1e-6)
    lo, hi = summary["ci95"]["return"]
    assert lo <= summary["mean"]["return"] <= hi
    assert "steps/s" in proc.stdout and "95% interval" in proc.stdout and "compiled in" in proc.stdout
    assert config["versions"]["jax"] and "git_commit" in config and config["sweep"] == {}
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["env_steps", "seed", "return", "won", "optimality_gap"]
    assert "| return |" in (out / "summary.md").read_text()
    assert {p.name for p in out.glob("curve_*.png")} == {"curve_return.png", "curve_won.png",
                                                          "curve_optimality_gap.png"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]


@pytest.mark.parametrize("argv, needle", [
    (["--algo", "dpo", "--env", "hallway", "--sweep", "lr"], "--sweep expects KEY=V1,V2"),
    (["--algo", "dpo", "--env", "hallway", "--sweep", "value_clip=0.1,0.2"], "does not declare value_clip"),
    (["--algo", "dpo", "--env", "hallway", "--sweep", "lr=1,2", "--set", "lr=3"], "both --set and --sweep"),
    (["--algo", "dpo", "--env", "hallway", "--sweep", "lr=0.1,-1"], "lr must be > 0"),
    (["--algo", "dpo", "--env", "hallway", "--devices", "99"], "--devices must be between 1 and"),
    (["--algo", "dpo", "--env", "hallway", "--vmap-block", "0"], "--vmap-block must be >= 1"),
    (["--algo", "dpo", "--env", "hallway", "--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    (["--resume", "no/such/dir"], "no config.json"),
    (["--resume", "no/such/dir", "--algo", "dpo", "--seeds", "3"], "drop --algo, --seeds"),
])
def test_bad_run_options_exit_2_before_compiling(argv, needle, capsys):
    from experiments.run import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_every_preset_resolves_and_is_documented():
    from experiments import presets

    readme = (ROOT / "experiments" / "presets" / "README.md").read_text()
    assert readme == presets.readme(), "rewrite it: python -m experiments.presets"
    assert len(presets.names()) >= 11
    for name in presets.names():
        preset = presets.load(name)
        assert f"| `{name}` | {preset.paper}: {preset.figure} |" in readme
        for algo, config in preset.configs().items():  # every algorithm of every preset is registered by now
            assert (config.algo, config.env, config.total_steps) == (algo, preset.env, preset.total_steps)
            assert all(getattr(config, k) == v for k, v in preset.per_algo.get(algo, {}).items())


def test_presets_and_command_line_combine():
    from experiments.compare import build_parser as compare_parser
    from experiments.compare import resolve as compare_resolve
    from experiments.run import build_parser, resolve

    config, sweep, opts = resolve(build_parser().parse_args(
        ["--preset", "tad_hallway", "--algo", "mappo", "--set", "hidden_dim=16", "--seeds", "2"]))
    assert (config.algo, config.env, config.hidden_dim, config.ent_coef, config.recurrent) == (
        "mappo", "hallway", 16, 2.0, False)
    assert (config.total_steps, opts.seeds, sweep) == (30720, 2, {})
    env, algos, seeds, overrides = compare_resolve(compare_parser().parse_args(
        ["--preset", "lan_smax_3m", "--algos", "lan", "qmix", "--total-steps", "5000", "--out", "x"]))
    assert (env, algos, seeds) == ("smax_3m", ["lan", "qmix"], 10)
    assert overrides["qmix"]["eps_anneal_steps"] == 50000 and "eps_anneal_steps" not in overrides["lan"]
    assert overrides["lan"]["total_steps"] == overrides["qmix"]["total_steps"] == 5000


@pytest.mark.parametrize("argv, needle", [
    (["--preset", "tad_halway"], "did you mean tad_hallway"),
    (["--preset", "tad_hallway", "--algo", "dpo"], "preset tad_hallway runs tad_ppo, mappo, happo; not dpo"),
    (["--preset", "tad_hallway", "--env", "matrix_tad10"], "runs on hallway; drop --env"),
])
def test_bad_presets_exit_2(argv, needle, capsys):
    from experiments.run import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_library_runs_refuse_seeds_outside_32_bits():
    """PRNGKey keeps 32 bits, so seed 2**32 would silently repeat seed 0: refused from code as from the CLI."""
    from jmarl.config import ConfigError
    from jmarl.spec import RunOptions

    RunOptions(base_seed=2**32 - 1).check()
    for bad in (-1, 2**32):
        with pytest.raises(ConfigError, match="--seed must be between 0 and 4294967295"):
            RunOptions(base_seed=bad).check()


def test_without_out_results_go_to_a_fresh_runs_directory(tmp_path, monkeypatch, capsys):
    """The headline command has no --out: its results are still written (and resumable), one directory per run."""
    from experiments.run import main

    monkeypatch.chdir(tmp_path)
    tiny = ["--algo", "ippo", "--env", "matrix_dpo4", "--total-steps", "20", "--set", "num_envs=2", "--set",
            "num_steps=5", "--set", "hidden_dim=4", "--set", "eval_every=2", "--set", "eval_episodes=1", "--no-plots"]
    assert main(tiny) == 0
    (out,) = (tmp_path / "runs").iterdir()
    assert out.name.startswith("ippo_matrix_dpo4_")
    assert f"results: runs/{out.name}" in capsys.readouterr().out
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoints"} <= {p.name for p in out.iterdir()}
    assert main(tiny + ["--no-save"]) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 1  # --no-save wrote nothing
    with pytest.raises(SystemExit) as exc:
        main(tiny + ["--no-save", "--out", "x"])
    assert exc.value.code == 2 and "--no-save writes no results directory" in capsys.readouterr().err


def test_check_prints_only_json_on_stdout_even_for_jaxmarl_envs():
    """jaxmarl prints when imported; --check's stdout must stay machine-readable (the plan of the headline run,
    on a device of 80 GiB: the 112 GiB of its 32 replay buffers fit no CPU test machine)."""
    env = {**os.environ, "JMARL_DEVICE_MEMORY": "80GiB"}
    proc = subprocess.run(RUN + ["--algo", "lan", "--env", "smax_3s5z", "--seeds", "32", "--check"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["config"]["total_steps"] == 2_000_000 and report["runs_per_program"] == 32
    assert report["programs"][0]["planned_env_steps"] == 2_000_000  # 10,000 updates of 8 envs x 25 steps


# ----- results directories: never overwritten, resumed only from checkpoints, extended ------------------------

TINY = ["--algo", "ippo", "--env", "matrix_dpo4", "--set", "num_envs=2", "--set", "num_steps=5", "--set",
        "hidden_dim=4", "--set", "eval_every=2", "--set", "eval_episodes=1", "--no-plots"]  # 10 env steps per update


def _hashes(directory):
    import hashlib

    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _refused(argv, capsys):
    from experiments.run import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    return lines[0]


def test_an_earlier_run_without_checkpoints_is_neither_overwritten_nor_resumed(tmp_path, capsys):
    from experiments.run import main

    out = tmp_path / "run"
    assert main(TINY + ["--total-steps", "40", "--no-checkpoints", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["checkpoints"] is False
    before = _hashes(out)
    assert {"config.json", "metrics.jsonl", "summary.json"} <= set(before)
    capsys.readouterr()
    line = _refused(TINY + ["--total-steps", "40", "--out", str(out)], capsys)
    assert line == (f"run.py: error: {out} already holds a run's results (config.json, metrics.jsonl, metrics.csv, "
                    f"summary.json) and no checkpoint to resume from; choose another results directory (its files "
                    f"stay as they are)")
    line = _refused(["--resume", str(out)], capsys)
    assert line.startswith(f"run.py: error: {out} holds no checkpoint to resume from (it ran with --no-checkpoints) "
                           f"and already holds results")
    assert _hashes(out) == before


def test_resume_with_a_larger_budget_equals_a_run_started_with_it(tmp_path, capsys):
    """40 env steps are 2 whole chunks of 2 updates: extended to 80, the run equals an 80-step run bit for bit."""
    from experiments.run import main
    from jmarl.run_dir import load_checkpoint

    short, long = tmp_path / "short", tmp_path / "long"
    assert main(TINY + ["--total-steps", "40", "--out", str(short)]) == 0
    assert main(TINY + ["--total-steps", "80", "--out", str(long)]) == 0
    before = _hashes(short)
    capsys.readouterr()
    line = _refused(["--resume", str(short), "--total-steps", "30"], capsys)
    assert line == (f"run.py: error: total_steps=30 is below the budget of the run in {short} (40 env steps per "
                    f"seed): a resumed run can be extended, not shortened")
    assert _hashes(short) == before
    assert main(["--resume", str(short), "--total-steps", "80"]) == 0
    out = capsys.readouterr().out
    assert "extending the run from total_steps=40 to 80 env steps per seed (4 chunks)" in out
    assert "resumed from" in out and "at chunk 2/4" in out
    for name in ("metrics.jsonl", "metrics.csv", "summary.json", "summary.md"):
        assert (short / name).read_bytes() == (long / name).read_bytes(), name
    config = json.loads((short / "config.json").read_text())
    assert (config["total_steps"], config["planned_env_steps"], config["num_chunks"]) == (80, 80, 4)
    _, a, _, record_a = load_checkpoint(short)
    _, b, _, record_b = load_checkpoint(long)
    assert record_a["chunks_done"] == record_b["chunks_done"] == 4
    import jax
    import numpy as np

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert main(["--resume", str(short), "--total-steps", "80"]) == 0  # resuming a finished run changes nothing
    for name in ("metrics.jsonl", "summary.json"):
        assert (short / name).read_bytes() == (long / name).read_bytes(), name


def test_the_compile_cache_stores_quick_programs_unless_jax_is_told_otherwise(tmp_path):
    """At jax's 1 s threshold a program compiling near it is stored by one process and not by the next, so the
    tools store every program; jax's own setting, when given, is kept."""
    probe = ("import jax; from jmarl.compile_cache import use_compile_cache; import sys; "
             "print(use_compile_cache(sys.argv[1]), jax.config.jax_persistent_cache_min_compile_time_secs)")
    base = {k: v for k, v in os.environ.items()
            if k != "JAX_COMPILATION_CACHE_DIR" and not k.startswith("JAX_PERSISTENT_CACHE")}
    for extra, expected in (({}, "0.0"), ({"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2.5"}, "2.5")):
        proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "xla")], capture_output=True, text=True,
                              timeout=120, env={**base, **extra})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == [str(tmp_path / "xla"), expected]


def test_the_persistent_compile_cache_gives_the_same_bits(tmp_path):
    """Two fresh processes with the cache in tmp_path: the second loads the programs from it; results are equal."""
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items()
           if k != "JAX_COMPILATION_CACHE_DIR" and not k.startswith("JAX_PERSISTENT_CACHE")}  # jax's defaults
    env["JMARL_COMPILE_CACHE"] = str(cache)
    outputs = []
    for name in ("first", "second"):
        proc = subprocess.run(RUN + TINY + ["--total-steps", "20", "--no-checkpoints", "--out", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout)
    compiled = [next(line for line in out.splitlines() if line.startswith("compiled in")) for out in outputs]
    assert "cache" not in compiled[0] and compiled[1].endswith("(from the persistent compilation cache)"), compiled
    assert any(cache.iterdir())
    for name in ("metrics.jsonl", "summary.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
