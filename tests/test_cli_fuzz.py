"""experiments/run.py under random command lines (with --check, so nothing trains): every argument list is
either accepted (exit 0, the resolved run as JSON) or rejected with exit code 2 and exactly one line on
stderr, never a traceback. Pieces of the command line carry a label (good, bad, or depends on the rest),
so the test also knows when a rejection or an acceptance is wrong."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import jmarl
from experiments import presets
from jmarl.registry import action_kinds

ROOT = Path(__file__).resolve().parents[1]
MISSING_DIR = str(ROOT / "no" / "such" / "run")
INT32_MAX = 2**31 - 1

GOOD, BAD, EITHER = "good", "bad", "either"

# Envs every algorithm runs on and that build in milliseconds (stochastic_game, SMAX, MPE, RWARE take seconds),
# and the presets on them.
ENVS = ["hallway", "matrix_dpo1", "checkers", "predator_prey"]
PRESETS = [name for name in presets.names() if presets.load(name).env in ENVS + ["matrix_tad10"]]
WEIRD = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)  # unicode, line breaks, control characters


def choice(label, flag, values):
    return st.tuples(st.just(label), st.sampled_from(values).map(lambda v: [flag, v]))


def kinds(good, *others):
    """(strategy of good pieces, strategy of any piece): clean command lines draw only from the first."""
    return good, st.one_of(good, *others)


# ENVS have discrete actions: an algorithm for continuous actions only (iddpg) is refused on every one of them
DISCRETE_ALGOS = [a for a in jmarl.algorithm_names() if "discrete" in action_kinds(a)]
CONTINUOUS_ONLY = [a for a in jmarl.algorithm_names() if a not in DISCRETE_ALGOS]
ALGO = kinds(choice(GOOD, "--algo", DISCRETE_ALGOS),
             choice(BAD, "--algo", ["dpp", "qmx", "", "QMIX", "dpo\u00e9", "lan\n", *CONTINUOUS_ONLY]),
             st.tuples(st.just(EITHER), WEIRD.map(lambda v: ["--algo", v])))
ENV = kinds(choice(GOOD, "--env", ENVS),
            choice(BAD, "--env", ["halway", "", "matrix", "smax_3", "checkers ", "hallway\x00"]),
            st.tuples(st.just(EITHER), WEIRD.map(lambda v: ["--env", v])))

# Keys every algorithm's config has, with values allowed for each and values allowed for none.
SET_VALUES = {
    "lr": (["0.01", "3e-4", "1", "1_000"], ["0", "-1", "nan", "inf", "-inf", "1e400", "abc", "", "0x10", "\u221e"]),
    "num_envs": (["1", "2", "16", "4.0"], ["0", "-3", "2.5", "1e30", "inf", "two"]),
    "hidden_dim": (["8", "64"], ["0", "-1", "99999999999", "8.5", "nan"]),
    "eval_every": (["1", "7"], ["0", "-2", "1e12"]),
    "total_steps": (["100000", "1000000"], ["0", "-5", "1e15", "1.5"]),
}


def set_item(key, clean):
    good, bad = SET_VALUES[key]
    good_item = st.sampled_from(good).map(lambda v: (GOOD, ["--set", f"{key}={v}"]))
    if clean:
        return good_item
    return st.one_of(good_item, st.sampled_from(bad).map(lambda v: (BAD, ["--set", f"{key}={v}"])),
                     st.just((BAD, ["--set", key])))  # no '='


OTHER_SET = (None, st.one_of(  # keys some algorithms have and others do not, and nonsense
    st.sampled_from(["epochs=2", "batch_size=16", "eps_start=0.5", "mixer=vdn", "clip=0.1", "td_lambda=0.5",
                     "recurrent=true", "recurrent=maybe", "buffer_size=20", "attn_heads=2"]).map(
        lambda v: (EITHER, ["--set", v])),
    st.sampled_from(["=3", "algo=dpo", "env=hallway", "lrr=3", "gamma=1.5", "gamma=0", "eval_episodes=0",
                     "num_envs==2", " =", "\u00e9=1", "lr=1\n2"]).map(lambda v: (BAD, ["--set", v])),
    st.tuples(st.just(EITHER), st.tuples(WEIRD, WEIRD).map(lambda kv: ["--set", f"{kv[0]}={kv[1]}"])),
))
# gamma is traced by every learner (one program); eval_episodes changes the program (one per value).
SWEEP = kinds(choice(GOOD, "--sweep", ["gamma=0.9,0.99", "gamma=1", "eval_episodes=2,4", "eval_episodes=3"]),
              choice(BAD, "--sweep", ["gamma", "gamma=", "gamma=0.9,0.9", "gamma=0.5,2", "gamma=nan", "foo=1,2",
                                      "algo=dpo,qmix", "eval_episodes=0,1", "eval_episodes=1.5"]),
              choice(EITHER, "--sweep", ["clip=0.1,0.2", "value_clip=0.1,0.2", "epochs=1,2", "w_min=0.1,0.2"]))
NUMBER = kinds(
    st.one_of(choice(GOOD, "--seeds", ["1", "3"]), choice(GOOD, "--seed", ["0", "7", str(2**32 - 1), "1e3"]),
              choice(GOOD, "--total-steps", ["100000", "2000000", "1e5"])),  # integral floats read as --set does
    choice(BAD, "--seeds", ["0", "-1", "1.5", "x", ""]),
    choice(BAD, "--seed", ["-1", str(2**32), str(2**64), "2.5"]),
    choice(BAD, "--total-steps", ["0", "-100", str(10**12), "2.5", "nan"]),
    choice(EITHER, "--total-steps", ["1", "64", "500"]),  # depends on one update's env steps
    st.tuples(st.just(EITHER), st.tuples(st.sampled_from(["--seeds", "--seed", "--total-steps"]),
                                         st.integers(-(2**70), 2**70).map(str)).map(list)),
)
OPTION = kinds(
    st.one_of(choice(GOOD, "--devices", ["1"]), choice(GOOD, "--vmap-block", ["1", "8"]),
              choice(GOOD, "--cpu-devices", ["1"]),  # jax's one CPU device here; another count only as a script
              choice(GOOD, "--checkpoint-every", ["0", "5"]), choice(GOOD, "--keep-checkpoints", ["1", "3"]),
              st.sampled_from(["--no-plots", "--no-checkpoints", "--distributed"]).map(lambda f: (GOOD, [f]))),
    choice(BAD, "--devices", ["0", "-1", "999"]),
    choice(BAD, "--cpu-devices", ["0", "-2", "1.5"]),
    choice(BAD, "--vmap-block", ["0", "-4"]),
    choice(BAD, "--checkpoint-every", ["-1"]),
    choice(BAD, "--keep-checkpoints", ["0", "-2"]),
)
JUNK = (None, st.one_of(
    st.sampled_from([["--algoo", "dpo"], ["--lr", "3"], ["positional"], ["--set"], ["--sweep"], ["--seeds"],
                     ["--check=1"], ["-x"], ["--"], ["--no-plots=yes"]]).map(lambda t: (BAD, t)),
    st.tuples(st.just(EITHER), st.lists(WEIRD, min_size=1, max_size=2)),
))


CATEGORIES = ("preset", "algo", "env", "set", "sweep", "number", "option", "other_set", "resume", "junk")


@st.composite
def command_lines(draw):
    """(argv, pieces) where pieces are (label, tokens). A third of the command lines are made of good pieces
    only, a third have one category drawn from all kinds (so one bad piece must be enough to reject), a third
    draw every category from all kinds. Single-valued options and --set keys appear at most once (argparse
    keeps the last of repeated ones, which would hide a bad earlier one)."""
    mode = draw(st.sampled_from(["clean", "one", "chaos"]))
    odd = draw(st.sampled_from(CATEGORIES)) if mode == "one" else None

    def kind(category):
        return 1 if mode == "chaos" or category == odd else 0

    pieces = []
    preset = draw(st.sampled_from([None, None, None, "good"] + (["bad"] if kind("preset") else [])))
    if preset == "good":
        pieces.append((EITHER, ["--preset", draw(st.sampled_from(PRESETS))]))  # its algos and env decide
    elif preset == "bad":
        pieces.append((BAD, ["--preset", draw(st.sampled_from(["tad_halway", "", "../presets/tad_hallway"]))]))
    for name, strategies in (("algo", ALGO), ("env", ENV)):
        if preset is None or draw(st.booleans()):
            pieces.append(draw(strategies[kind(name)]))
    for key in draw(st.lists(st.sampled_from(sorted(SET_VALUES)), unique=True, max_size=3)):
        pieces.append(draw(set_item(key, clean=not kind("set"))))
    pieces += draw(st.lists(SWEEP[kind("sweep")], max_size=1))
    pieces += draw(st.lists(NUMBER[kind("number")], max_size=2, unique_by=lambda p: p[1][0]))
    pieces += draw(st.lists(OPTION[kind("option")], max_size=2, unique_by=lambda p: p[1][0]))
    if kind("other_set"):
        pieces += draw(st.lists(OTHER_SET[1], max_size=2))
    if kind("resume") and draw(st.booleans()):
        pieces.append((BAD, ["--resume", MISSING_DIR]))
    if kind("junk") and draw(st.booleans()):
        pieces.append(draw(JUNK[1]))
    pieces = draw(st.permutations(pieces))
    argv = [token for _, tokens in pieces for token in tokens] + ["--check"]
    return argv, pieces


def expected(pieces):
    """GOOD, BAD or EITHER for the whole command line."""
    labels = [label for label, _ in pieces]
    flags = {tokens[0] for _, tokens in pieces if tokens}
    if BAD in labels:
        return BAD
    if "--preset" not in flags and not {"--algo", "--env"} <= flags:
        return BAD  # nothing names the algorithm or the env
    if "--total-steps" in flags and any(t[0] == "--set" and t[1].startswith("total_steps=") for _, t in pieces
                                        if len(t) == 2):
        return BAD  # the budget given twice
    return GOOD if set(labels) == {GOOD} else EITHER


def check_accepted_report(out, argv):
    """Independent checks of what --check printed for an accepted command line."""
    report = json.loads(out)
    config, opts = report["config"], report["run_options"]
    assert config["algo"] in jmarl.algorithm_names() and config["env"]
    for key, value in config.items():
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)
        if isinstance(value, int) and not isinstance(value, bool):
            assert value <= INT32_MAX, (key, value)
    assert config["lr"] > 0 and 0 < config["gamma"] <= 1 and config["num_envs"] >= 1 and config["hidden_dim"] >= 1
    assert config["total_steps"] >= 1 and config["eval_every"] >= 1 and config["eval_episodes"] >= 1
    if "eps_start" in config:
        assert 0 <= config["eps_finish"] <= config["eps_start"] <= 1
    if "buffer_size" in config:
        assert config["batch_size"] <= config["buffer_size"]
    assert opts["seeds"] >= 1 and 0 <= opts["base_seed"] < 2**32
    assert report["programs"]
    for program in report["programs"]:
        steps = program["steps_per_update"]
        assert config["total_steps"] >= steps  # at least one update
        assert program["planned_env_steps"] == program["total_updates"] * steps <= INT32_MAX
        assert program["total_updates"] == program["updates_per_chunk"] * program["num_chunks"]
        assert program["planned_env_steps"] >= config["total_steps"]
    for i, token in enumerate(argv[:-1]):
        if token == "--set" and "=" in argv[i + 1]:
            key, value = argv[i + 1].split("=", 1)
            if key in SET_VALUES and value in SET_VALUES[key][0]:
                assert config[key] == float(value.replace("_", "")), (key, value)


def labelled(*pieces):
    """An explicit example: pieces (label, token, ...) -> (argv, pieces)."""
    pieces = [(label, list(tokens)) for label, *tokens in pieces]
    return [t for _, tokens in pieces for t in tokens] + ["--check"], pieces


def run_main(argv, capsys):
    """(exit code, stdout, stderr) of main(argv); any exception but SystemExit propagates."""
    from experiments.run import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=command_lines())
@example(case=labelled((GOOD, "--algo", "qmix"), (GOOD, "--env", "hallway"), (BAD, "--set", "lr=1\n2")))
@example(case=labelled((GOOD, "--algo", "dpo"), (BAD, "--env", "\udc80\n")))  # undecodable bytes of a real argv
@example(case=labelled((GOOD, "--algo", "dpo"), (GOOD, "--env", "hallway"), (BAD, "--total-steps", "64")))
@example(case=labelled((GOOD, "--algo", "dpo"), (GOOD, "--env", "hallway"), (GOOD, "--set", "num_envs=1"),
                  (GOOD, "--set", "num_steps=1"), (GOOD, "--total-steps", "1")))  # one update of one env step
@example(case=labelled((GOOD, "--algo", "dpo"), (GOOD, "--env", "hallway"), (BAD, "--set", "total_steps=0"),
                  (GOOD, "--total-steps", "100000")))
def test_random_command_lines_are_accepted_or_rejected_in_one_line(case, capsys):
    argv, pieces = case
    code, out, err = run_main(argv, capsys)
    want = expected(pieces)
    event(f"{want} command line, exit {code}")  # --hypothesis-show-statistics shows the mix
    if code == 0:
        assert want != BAD, f"accepted a bad command line {argv!r}"
        assert err == ""
        check_accepted_report(out, argv)
    else:
        assert code == 2, (argv, code, err)
        # a well-formed run may still not fit this machine's memory (the plan counts what is free now)
        does_not_fit = " of train state, more than the devices" in err
        assert want != GOOD or does_not_fit, f"rejected a good command line {argv!r}: {err}"
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("run.py: error: "), (argv, err)
        assert lines[0].isprintable(), lines[0]
        assert "Traceback" not in err


# ----- explicit examples of each range check ---------------------------------------------------------------

BASE = ["--algo", "dpo", "--env", "hallway", "--check"]
QMIX = ["--algo", "qmix", "--env", "hallway", "--check"]


@pytest.mark.parametrize("argv, needle", [
    (BASE + ["--set", "lr=0"], "lr must be > 0"),
    (BASE + ["--set", "lr=inf"], "lr must be a finite float"),
    (BASE + ["--set", "lr=nan"], "lr must be a float, got 'nan'"),
    (BASE + ["--set", "gamma=0"], "gamma must be > 0"),
    (BASE + ["--set", "gamma=1.0001"], "gamma must be <= 1"),
    (BASE + ["--set", "gae_lambda=1.1"], "gae_lambda must be <= 1"),
    (BASE + ["--set", "num_envs=0"], "num_envs must be >= 1"),
    (BASE + ["--set", "num_envs=1e30"], "num_envs must be <= 2147483647"),
    (BASE + ["--set", "num_minibatches=3"], "num_envs (16) must be divisible by num_minibatches (3)"),
    (BASE + ["--set", "beta_min=2", "--set", "beta_max=1"], "beta_min (2.0) must be <= beta_max (1.0)"),
    (BASE + ["--seeds", "0"], "--seeds must be >= 1"),
    (BASE + ["--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (BASE + ["--seed", str(2**32)], "--seed must be between 0 and 4294967295"),
    (BASE + ["--total-steps", "0"], "total_steps must be >= 1"),
    (BASE + ["--total-steps", "2047"], "collects 2048 env steps per update (num_envs=16 x 128 steps per env); "
                                       "use total_steps >= 2048"),
    (BASE + ["--total-steps", str(2**31 - 100), "--set", "eval_every=1000"], "above the int32 step counter"),
    (BASE + ["--set", "algo=qmix"], "algo is not a hyperparameter; choose it with --algo"),
    (BASE + ["--set", "lrr=1"], "did you mean lr"),
    (BASE + ["--sweep", "gamma=0.5,2"], "gamma must be <= 1"),
    (BASE + ["--sweep", "num_envs=4,0"], "num_envs must be >= 1"),
    (BASE + ["--sweep", "num_minibatches=1,3"], "must be divisible by num_minibatches (3)"),
    (BASE + ["--keep-checkpoints", "0"], "--keep-checkpoints must be >= 1"),
    (BASE + ["--out", ""], "--out needs a directory name"),
    (BASE + ["--out", __file__], "is a file; results need a directory"),
    (QMIX + ["--set", "eps_start=1.5"], "eps_start must be <= 1"),
    (QMIX + ["--set", "eps_finish=-0.1"], "eps_finish must be >= 0"),
    (QMIX + ["--set", "eps_start=0.1", "--set", "eps_finish=0.2"], "eps_finish (0.2) must be <= eps_start (0.1)"),
    (QMIX + ["--set", "batch_size=64", "--set", "buffer_size=32"], "batch_size (64) must be <= buffer_size (32)"),
    (QMIX + ["--set", "batch_size=32", "--set", "buffer_size=35"], "buffer_size (35) must be at least"),
    (QMIX + ["--set", "td_lambda=-0.1"], "td_lambda must be >= 0"),
    (QMIX + ["--set", "alpha=2"], "alpha must be <= 1"),
    (QMIX + ["--set", "mixer=max"], "mixer must be one of qmix, vdn"),
    (["--algo", "dpo", "--env", "matrix", "--check"], "environment 'matrix' cannot be built from its name alone"),
    (["--preset", "../presets/tad_hallway", "--check"], "unknown preset"),
    (["--resume", MISSING_DIR, "--check"], "no config.json"),
])
def test_range_checks_exit_2_with_one_line(argv, needle, capsys):
    code, out, err = run_main(argv, capsys)
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and needle in lines[0], (code, err)


def test_check_prints_the_resolved_run_and_its_plan(capsys):
    """1000 steps at 4 envs x 32 steps = 128 per update: ceil(1000/128) = 8 updates in chunks of 3 -> 3 chunks
    (9 updates, 1152 steps); a sweep over num_envs (one program per value) plans each program on its own."""
    argv = ["--algo", "ippo", "--env", "hallway", "--total-steps", "1000", "--set", "num_envs=4", "--set",
            "num_steps=32", "--set", "eval_every=3", "--seeds", "2", "--sweep", "lr=1e-3,1e-4", "--check"]
    code, out, err = run_main(argv, capsys)
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert (report["config"]["algo"], report["config"]["clip"], report["config"]["num_envs"]) == ("ippo", 0.2, 4)
    assert report["sweep"] == {"traced": {"lr": [1e-3, 1e-4]}, "sequential": {}}
    assert report["run_options"]["seeds"] == 2 and report["runs_per_program"] == 4
    assert report["programs"] == [{"point": {}, "steps_per_update": 128, "updates_per_chunk": 3, "num_chunks": 3,
                                   "total_updates": 9, "planned_env_steps": 1152}]
    argv = ["--algo", "ippo", "--env", "hallway", "--total-steps", "1000", "--set", "num_steps=32", "--set",
            "eval_every=3", "--sweep", "num_envs=2,8", "--check"]
    code, out, _ = run_main(argv, capsys)
    programs = json.loads(out)["programs"]
    assert [(p["point"], p["steps_per_update"], p["total_updates"]) for p in programs] == [
        ({"num_envs": 2}, 64, 18), ({"num_envs": 8}, 256, 6)]  # ceil(1000/64)=16 -> 6 chunks of 3; 4 -> 2 of 3


def test_check_compiles_and_trains_nothing(capsys, monkeypatch):
    import experiments.run as cli
    import jmarl.runner

    def forbidden(*args, **kwargs):
        raise AssertionError("--check must not compile or train")

    monkeypatch.setattr(cli, "execute", forbidden)
    monkeypatch.setattr(jmarl.runner, "compile_program", forbidden)
    code, out, err = run_main(["--algo", "lan", "--env", "predator_prey", "--check"], capsys)
    assert (code, err) == (0, "") and json.loads(out)["config"]["algo"] == "lan"


def test_the_script_itself_checks_and_exits_0():
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--preset", "tad_hallway", "--algo",
                           "mappo", "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["config"]["attention"] is False and report["run_options"]["seeds"] == 3
    assert report["programs"][0]["planned_env_steps"] == 30720  # 60 updates of 16 envs x 32 steps
