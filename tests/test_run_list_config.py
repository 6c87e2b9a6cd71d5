"""experiments/run.py: ``--list``, ``--config FILE.toml``, integer options read as ``--set`` reads them, the
``results:`` line, and the run's size and time in ``--check``."""

import json

import pytest

from experiments.config_file import load_config_file
from experiments.run import list_names, main
from jmarl.config import ConfigError

TINY = ["--set", "num_envs=2", "--set", "num_steps=5", "--set", "hidden_dim=4", "--set", "eval_every=2",
        "--set", "eval_episodes=1", "--no-plots", "--no-checkpoints"]


def one_error_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def check(capsys, argv):
    assert main(argv + ["--check"]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_prints_every_group_and_exits_0(capsys):
    import envs
    import jmarl
    from experiments import presets

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "algorithms (--algo):" in out and "environments (--env):" in out and "presets (--preset):" in out
    names = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert set(jmarl.algorithm_names()) | set(envs.names()) | set(presets.names()) <= names
    assert "decentralised policy optimisation" in out and "TAD-PPO vs MAPPO and HAPPO on the two-agent hallway" in out
    assert main(["--list", "algos"]) == 0
    only = capsys.readouterr().out
    assert only.startswith("algorithms") and "environments" not in only and "presets" not in only
    assert list_names("envs").startswith("environments") and "presets" not in list_names("envs")
    assert "algorithms" not in list_names("presets")
    assert "invalid choice" in one_error_line(capsys, ["--list", "algoz"])


@pytest.mark.parametrize("flag", ["--total-steps", "--seeds", "--seed"])
def test_integer_options_read_like_set(flag, capsys):
    report = check(capsys, ["--algo", "ippo", "--env", "matrix_dpo4", "--total-steps", "200", flag, "1e2"] + TINY)
    expected = {"--total-steps": report["config"]["total_steps"], "--seeds": report["run_options"]["seeds"],
                "--seed": report["run_options"]["base_seed"]}[flag]
    assert expected == 100
    line = one_error_line(capsys, ["--algo", "ippo", "--env", "matrix_dpo4", flag, "2.5"])
    assert f"argument {flag}: must be an int" in line and "'2.5'" in line


def test_check_gives_the_size_and_an_honest_time(capsys):
    report = check(capsys, ["--algo", "ippo", "--env", "matrix_dpo4", "--seeds", "3", "--total-steps", "1e3"] + TINY)
    size = report["size"]
    assert size["runs"] == 3 and size["planned_env_steps_per_run"] == report["programs"][0]["planned_env_steps"]
    assert size["planned_env_steps_all_runs"] == 3 * size["planned_env_steps_per_run"]
    assert size["updates_per_run"] == 100 and size["chunks_per_program"] == 50
    assert report["time"]["estimate_s"] is None and report["time"]["why"].startswith("unknown")


def test_check_time_from_a_matching_benchmark_row(tmp_path, capsys):
    """A time is given only from a throughput measured with the same settings on this kind of device."""
    import jax

    from experiments.run import build_parser, make_spec, time_estimate

    args = build_parser().parse_args(["--algo", "ippo", "--env", "matrix_dpo4", "--total-steps", "1e3", "--check",
                                      "--set", "num_envs=2", "--set", "num_steps=5"])
    spec = make_spec(args)
    row = {"algo": "ippo", "env": "matrix_dpo4", "seeds": 1, "num_envs": 2, "num_steps": 5, "updates": 1,
           "compile_s": 4.0, "train_steps_per_s": 100, "overrides": {}}
    results = tmp_path / "train_throughput.json"
    device = jax.devices()[0]
    results.write_text(json.dumps({"meta": {"backend": device.platform, "devices": device.device_kind,
                                            "jax": "x"}, "rows": [row]}))
    estimate = time_estimate(spec, results)
    assert estimate["train_s"] == pytest.approx(spec.programs[0].plan.total_steps / 100)
    assert estimate["estimate_s"] == pytest.approx(estimate["train_s"] + 4.0) and "measured" in estimate["why"]
    results.write_text(json.dumps({"meta": {"backend": device.platform, "devices": device.device_kind},
                                   "rows": [{**row, "overrides": {"hidden_dim": 7}}]}))
    assert time_estimate(spec, results)["estimate_s"] is None


def test_results_line_is_printed_with_out_too(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--algo", "ippo", "--env", "matrix_dpo4", "--total-steps", "2e1", "--out", str(out)] + TINY) == 0
    assert f"results: {out}" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["total_steps"] == 20


def write(path, text):
    path.write_text(text)
    return str(path)


def test_config_file_sets_the_run_and_the_command_line_wins(tmp_path, capsys):
    config = write(tmp_path / "run.toml", 'algo = "ippo"\nenv = "matrix_dpo4"\nseeds = 2\nseed = 7\n'
                                          'total_steps = 1e3\n[set]\nlr = 3e-4\nepochs = 2.0\nnum_envs = 2\n'
                                          '[sweep]\ngae_lambda = [0.9, 0.95]\n')
    report = check(capsys, ["--config", config])
    assert report["config"]["algo"] == "ippo" and report["config"]["env"] == "matrix_dpo4"
    assert report["config"]["total_steps"] == 1000 and report["config"]["lr"] == 3e-4
    assert report["config"]["epochs"] == 2 and report["config"]["num_envs"] == 2
    assert report["run_options"]["seeds"] == 2 and report["run_options"]["base_seed"] == 7
    assert report["sweep"]["traced"] == {"gae_lambda": [0.9, 0.95]}
    report = check(capsys, ["--config", config, "--set", "lr=1e-3", "--seeds", "3", "--total-steps", "2e3",
                            "--set", "gae_lambda=0.8"])
    assert report["config"]["lr"] == 1e-3 and report["run_options"]["seeds"] == 3
    assert report["config"]["total_steps"] == 2000 and report["config"]["gae_lambda"] == 0.8
    assert report["sweep"]["traced"] == {}
    report = check(capsys, ["--config", config, "--sweep", "lr=1e-3,1e-4"])
    assert report["sweep"]["traced"] == {"gae_lambda": [0.9, 0.95], "lr": [1e-3, 1e-4]}
    minimal = write(tmp_path / "min.toml", '[set]\nlr = 1e-3\n')
    report = check(capsys, ["--config", minimal, "--algo", "dpo", "--env", "hallway"])
    assert report["config"]["algo"] == "dpo" and report["config"]["lr"] == 1e-3


@pytest.mark.parametrize("text, needle", [
    ('algo = "ippo"\nenv = "matrix_dpo4"\nlr = 1e-3\n', "unknown key 'lr'"),
    ('algo = "ippo"\nenvv = "matrix_dpo4"\n', "did you mean env"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\n[set]\nlrr = 1e-3\n', "did you mean lr"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\n[set]\nepochs = 2.5\n', "epochs must be an int"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\nseeds = 2.5\n', "seeds must be an int"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\nseeds = true\n', "seeds must be an int"),
    ('algo = 3\nenv = "matrix_dpo4"\n', "algo must be a name"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\nset = 3\n', "set must be a table"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\n[sweep]\nlr = 0.1\n', "must be a list"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\n[set]\nlr = 0.1\n[sweep]\nlr = [0.1]\n', "in both [set] and [sweep]"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\ntotal_steps = 100\n[set]\ntotal_steps = 100\n', "use one"),
    ('algo = "ippo"\nenv = \n', "is not valid TOML"),
    ('algo = "ippo"\nenv = "matrix_dpo4"\n[set]\nalgo = "dpo"\n', "algo is not a hyperparameter"),
])
def test_bad_config_files_exit_2_with_one_line(tmp_path, capsys, text, needle):
    path = write(tmp_path / "bad.toml", text)
    assert needle in one_error_line(capsys, ["--config", path])


def test_missing_config_file_and_a_file_given_to_preset(tmp_path, capsys):
    line = one_error_line(capsys, ["--config", str(tmp_path / "nope.toml")])
    assert "nope.toml does not exist" in line
    path = write(tmp_path / "mine.toml", 'algo = "ippo"\n')
    line = one_error_line(capsys, ["--preset", path])
    assert "unknown preset" in line and f"--config {path}" in line
    assert "--config" not in one_error_line(capsys, ["--preset", "tad_halway"])
    line = one_error_line(capsys, ["--preset", "tad_hallway", "--config", path])
    assert "--preset and --config" in line
    with pytest.raises(ConfigError, match="is a directory"):
        load_config_file(str(tmp_path))


def test_resume_refuses_a_config_file(tmp_path, capsys):
    path = write(tmp_path / "mine.toml", 'algo = "ippo"\n')
    line = one_error_line(capsys, ["--resume", str(tmp_path), "--config", path])
    assert "drop --config" in line
