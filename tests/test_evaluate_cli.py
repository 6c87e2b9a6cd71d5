"""experiments/evaluate.py: a checkpoint's evaluation, policy export and rendering."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

import envs
import jmarl
from experiments.evaluate import main
from jmarl.config import ConfigError
from jmarl.policy import export_policy, load_policy
from jmarl.registry import make_algorithm
from jmarl.render import Episode, draw_frames, record_episode, render
from jmarl.run_dir import load_checkpoint
from jmarl.runner import run

# The same tiny run as tests/test_checkpoint.py (one compiled program per process serves both).
CONFIG = jmarl.make_config("ippo", "matrix_dpo4", total_steps=128, num_envs=4, num_steps=8, hidden_dim=8,
                           num_layers=1, epochs=2, eval_every=1, eval_episodes=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "run"
    run(CONFIG, seeds=2, out_dir=out, log=lambda line: None, plots=False, checkpoint_every=0)
    return out


def test_evaluation_reproduces_the_final_training_evaluation(trained, capsys):
    assert main([str(trained)]) == 0
    evaluation = json.loads((trained / "evaluation.json").read_text())
    summary = json.loads((trained / "summary.json").read_text())
    assert evaluation["episodes"] == 4 and evaluation["checkpoint"]["chunks_done"] == 4
    for row, final in zip(evaluation["runs"], summary["per_seed"], strict=True):
        assert row["seed"] == final["seed"]
        assert (row["return"], row["optimality_gap"]) == (final["return"], final["optimality_gap"])
    assert "| - | mean (95% CI) |" in capsys.readouterr().out


def test_exported_policy_needs_no_checkpoint(trained, tmp_path, capsys):
    exported = tmp_path / "policy"
    assert main([str(trained), "--export", str(exported), "--seed", "1"]) == 0
    _, state, _, _ = load_checkpoint(trained)
    policy = load_policy(exported)
    assert policy.source["seed"] == 1 and policy.config == CONFIG
    for a, b in zip(jax.tree.leaves(policy.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b[1])
    # matrix_dpo4 has one state: the greedy joint action's payoff is the return, whatever the key
    final = json.loads((trained / "summary.json").read_text())["per_seed"][1]["return"]
    assert policy.evaluate(16, jax.random.PRNGKey(3))["return"] == final
    (exported / "params.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="does not hold this config's parameters"):
        load_policy(exported)


@pytest.mark.parametrize("argv, needle", [
    (["--seed", "5"], "--seed must be in [0, 1]"),
    (["--point", "lr=1"], "not a sweep point"),
    (["--episodes", "0"], "--episodes must be >= 1"),
    (["--step", "2"], "no checkpoint 2"),
    (["--render"], "no drawing for matrix_dpo4"),
])
def test_bad_input_exits_2(trained, argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(trained), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_hallway_episode_follows_the_rules_and_becomes_a_gif(tmp_path):
    """A greedy episode of an untrained policy: positions replayed by hand from the recorded actions."""
    algo = make_algorithm(jmarl.make_config("dpo", "hallway", hidden_dim=8, num_layers=1, num_envs=2))
    params = jax.jit(algo.init)(jax.random.PRNGKey(0)).params
    episode = record_episode(algo, params, jax.random.PRNGKey(1))
    positions = np.array([1, 1])
    assert np.array_equal(episode.states[0].positions, positions)
    for t, actions in enumerate(episode.actions):
        positions = np.clip(positions + np.where(actions == 1, 1, -1), 0, 4)
        np.testing.assert_array_equal(episode.states[t + 1].positions, positions)
        over = bool(np.any((positions == 0) | (positions == 4)))
        assert over == (t == episode.length - 1) or episode.length == 100
    both = positions[0] == positions[1] and positions[0] in (0, 4)
    assert episode.won == both
    np.testing.assert_allclose(episode.rewards.sum(), -episode.length + 8 * (both and positions[0] == 4)
                               + 5 * (both and positions[0] == 0))
    _, paths = render(algo, params, jax.random.PRNGKey(1), tmp_path, "hallway", frames=True)
    with Image.open(paths[0]) as gif:
        assert gif.n_frames == episode.length + 1
    assert len(paths) == episode.length + 2

    export_policy(tmp_path / "policy", algo.config, params, {"note": "untrained"})
    loaded = load_policy(tmp_path / "policy")
    assert loaded.config == algo.config and loaded.source == {"note": "untrained"}
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="not an exported policy"):
        load_policy(tmp_path / "nothing")


def _synthetic_states():
    """Hand-made raw states (no env stepping): what each drawing reads."""
    from envs.checkers import CheckersState, initial_fruit
    from envs.mpe import FormationState
    from envs.predator_prey import PredatorPreyState

    apples, lemons = initial_fruit()
    rng = np.random.default_rng(0)
    return {
        "checkers": CheckersState(np.array([[0, 6], [2, 6]]), apples, lemons),
        "predator_prey": PredatorPreyState(rng.integers(0, 10, (8, 2)), np.ones(8, bool), rng.integers(0, 10, (8, 2)),
                                           np.r_[np.ones(7, bool), False]),
        "mpe_line_control": FormationState(rng.uniform(-1, 1, (5, 2)), np.zeros((5, 2)), np.array([[-1.0, 0], [1, 0]])),
    }


@pytest.mark.parametrize("name", ["checkers", "predator_prey", "mpe_line_control"])
def test_each_env_family_draws_its_state(name):
    env = envs.wrap(envs.make(name))
    frames = draw_frames(env, Episode([_synthetic_states()[name]], np.zeros((0, 2)), np.zeros(0), False), name)
    assert len(frames) == 1 and frames[0].ndim == 3 and frames[0].shape[2] == 3
    assert frames[0].std() > 10  # something was drawn on the white canvas


@pytest.mark.parametrize("name, legend", [
    ("hallway", ["agent 0", "agent 1", "goal (paid when both agents reach it)"]),
    ("checkers", ["agent 0: apple +10, lemon -10", "agent 1: apple +1, lemon -1", "apple", "lemon"]),
    ("predator_prey", ["agent (numbered)", "prey (uncaught)"]),
    ("mpe_line_control", ["agent 0", "agent 1", "agent 2", "agent 3", "agent 4", "landmark"]),
])
def test_frames_say_what_their_marks_are_and_number_agents_from_0(name, legend):
    from matplotlib.figure import Figure

    from envs.hallway import HallwayState
    from jmarl.render import drawer

    env = envs.wrap(envs.make(name))
    state = {**_synthetic_states(), "hallway": HallwayState(np.array([1, 3]))}[name]
    draw, bounds = drawer(env)
    ax = Figure().add_subplot()
    draw(ax, env.unwrapped, state, bounds([state]))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == legend
    numbers = sorted(int(t.get_text()) for t in ax.texts if t.get_text().isdigit())
    alive = np.asarray(getattr(state, "agent_alive", np.ones(env.spec.num_agents, bool)))
    assert numbers == list(np.flatnonzero(alive))  # agents numbered as in the env's arrays, from 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mpe_simple_spread", "smax_3m"])
def test_jaxmarl_envs_render_an_episode(name, tmp_path):
    """Simple spread (jaxmarl's state) with matplotlib; SMAX with jaxmarl's own visualiser (minutes on CPU)."""
    algo = make_algorithm(jmarl.make_config("dpo", name, hidden_dim=8, num_layers=1, num_envs=2))
    params = jax.jit(algo.init)(jax.random.PRNGKey(0)).params
    episode, paths = render(algo, params, jax.random.PRNGKey(1), tmp_path, name)
    with Image.open(paths[0]) as gif:
        assert gif.n_frames >= episode.length + 1


def _hashes(directory):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_export_never_writes_over_a_policy(trained, tmp_path, capsys):
    exported = tmp_path / "policy"
    assert main([str(trained), "--export", str(exported)]) == 0
    before = _hashes(exported)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(trained), "--export", str(exported), "--seed", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == (
        f"evaluate.py: error: --export {exported} already holds a policy (policy.json, params.msgpack); choose "
        f"another directory (its files stay as they are)")
    assert _hashes(exported) == before


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """The same run with a checkpoint after every chunk (2, 3, 4 kept), and checkpoint 4's state metadata cut
    in half."""
    out = tmp_path_factory.mktemp("damaged") / "run"
    run(CONFIG, seeds=2, out_dir=out, log=lambda line: None, plots=False, checkpoint_every=1)
    metadata = out / "checkpoints" / "4" / "state" / "_METADATA"
    metadata.write_bytes(metadata.read_bytes()[: metadata.stat().st_size // 2])
    return out


def test_a_damaged_checkpoint_names_the_step_to_evaluate_instead(damaged, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(damaged)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == (
        f"evaluate.py: error: checkpoint 4 under {(damaged / 'checkpoints').resolve()} is damaged (its state "
        f"metadata could not be read); evaluate the older complete checkpoint with --step 3")
    assert main([str(damaged), "--step", "3"]) == 0
    assert "checkpoint 3 (96 env steps per run)" in capsys.readouterr().out


def test_the_script_says_so_in_one_line_without_tracebacks(damaged):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "evaluate.py"
    proc = subprocess.run([sys.executable, str(script), str(damaged), "--no-compile-cache"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1 and "--step 3" in proc.stderr, proc.stderr
