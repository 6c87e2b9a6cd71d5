"""Every algorithm exports, loads back, evaluates and renders; the command line refuses what it cannot load.

The round trip for each name of ``jmarl.algorithm_names()`` needs no training: a train state of the
learner's init shapes (zeros, ``jax.eval_shape``: nothing compiled) with random parameters, whose greedy
evaluation in process must equal the exported and loaded policy's on the same key. The command-line checks
share one tiny trained LAN run on hallway (the off-policy learners act through one base class).
"""

import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image

import jmarl
from experiments.evaluate import main
from jmarl.config import ConfigError
from jmarl.evaluate import evaluation_key
from jmarl.offpolicy import OffPolicyLearner
from jmarl.policy import export_policy, load_policy
from jmarl.registry import action_kinds, config_class, make_algorithm
from jmarl.render import render
from jmarl.runner import run

# Tiny settings for every learner family (a config takes the keys it has); hallway has multi-step episodes
# and a drawing.
TINY = dict(total_steps=128, num_envs=4, num_steps=16, hidden_dim=8, num_layers=2, epochs=1, eval_every=1,
            eval_episodes=3, batch_size=4, buffer_size=64, target_update_episodes=4, target_update_updates=4,
            mixing_embed_dim=8, hypernet_dim=8, central_embed_dim=8, central_hidden_dim=8, value_embed_dim=8,
            value_hidden_dim=8, attn_heads=1, attn_dim=4)


def tiny(algo: str, env: str = "hallway"):
    names = {f.name for f in dataclasses.fields(config_class(algo))}
    return jmarl.make_config(algo, env, **{k: v for k, v in TINY.items() if k in names})


def random_state(learner, seed: int):
    """A train state of ``learner``'s init shapes: zeros, random parameters, a PRNG key."""
    shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes.params)
    return state.replace(params=params, key=jax.random.PRNGKey(seed))


# One name per network layout runs in the fast suite; the other presets differ from these only in their
# losses and run with `make test-slow`.
FAST = ("dpo", "tad_ppo", "mappo", "qmix", "vdn", "remix", "lan", "iql", "tad_dqn", "happo", "iddpg")  # qtran: qmix


def home_env(algo: str) -> str:
    """hallway (multi-step, drawn) for learners of discrete actions, the differential game for the others."""
    return "hallway" if "discrete" in action_kinds(algo) else "differential_game"


# every name on its home env, and the learners of both action kinds on continuous actions too
CASES = [(a, home_env(a)) for a in jmarl.algorithm_names()] + [("dpo", "differential_game"),
                                                                 ("happo", "differential_game")]


@pytest.mark.parametrize("algo,env", [c if c[0] in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in CASES])
def test_every_algorithm_exports_loads_evaluates_and_renders(algo, env, tmp_path):
    config = tiny(algo, env)
    learner = make_algorithm(config)
    state = random_state(learner, 7)
    expected = jax.device_get(jax.jit(learner.evaluate)(state))

    export_policy(tmp_path / "policy", config, state.params, {"note": "random"})
    policy = load_policy(tmp_path / "policy")
    assert policy.config == config
    for a, b in zip(jax.tree.leaves(policy.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    got = policy.evaluate(config.eval_episodes, evaluation_key(state.key))
    assert set(got) <= set(expected) and "return" in got
    assert got == {k: float(expected[k]) for k in got}

    text = repr(policy)
    assert text.startswith(f"Policy({algo} on {env}, ") and "parameters" in text and len(text) < 200
    if env != "hallway":  # no drawing of the differential game
        return

    episode, paths = render(policy.algo, policy.params, jax.random.PRNGKey(1), tmp_path / "frames", "episode",
                            frames=True)
    assert len(paths) == episode.length + 2 and all(p.exists() for p in paths)
    with Image.open(paths[0]) as gif:
        assert gif.n_frames == episode.length + 1


def test_export_refuses_parameters_of_other_networks(tmp_path):
    config = tiny("qmix")
    learner = make_algorithm(config)
    params = random_state(learner, 0).params
    other = tiny("vdn")  # no mixer network: a different parameter tree
    with pytest.raises(ConfigError, match="cannot export vdn's policy"):
        export_policy(tmp_path / "policy", other, params)
    assert not (tmp_path / "policy").exists()


# ----- the command line on trained runs -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("roundtrip") / "lan"
    run(tiny("lan"), seeds=2, out_dir=out, log=lambda line: None, plots=False, checkpoint_every=0)
    return out


def test_an_off_policy_run_exports_evaluates_and_renders_from_the_command_line(trained, tmp_path, capsys):
    """The user report: LAN's --render and QMIX's exported policy exited 2 (no greedy_policy)."""
    run_dir, exported = trained, tmp_path / "policy"
    assert main([str(run_dir), "--export", str(exported), "--seed", "1", "--out", str(tmp_path / "eval")]) == 0
    assert f"exported seed 1 to {exported}" in capsys.readouterr().out
    assert main([str(exported), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "lan on hallway (exported policy, 2 episodes): return " in out
    policy = load_policy(exported)
    assert policy.source["seed"] == 1 and policy.config == tiny("lan")
    assert f"from run {run_dir} seed 1, loaded from {exported}" in repr(policy)

    assert main([str(run_dir), "--render", "--frames", "--out", str(tmp_path / "render")]) == 0
    out = capsys.readouterr().out
    assert "wrote " in out and "frames" in out
    assert (tmp_path / "render" / "episode_seed0.gif").exists()
    assert (tmp_path / "render" / "episode_seed0_000.png").exists()


def test_export_refuses_a_learner_that_cannot_be_loaded_back(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(OffPolicyLearner, "greedy_policy")
    for flags in (["--export", str(tmp_path / "policy")], ["--render"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(trained), *flags, "--out", str(tmp_path / "eval")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "lan does not expose greedy_policy" in err, err
    assert not (tmp_path / "policy").exists() and not (tmp_path / "eval").exists()  # nothing written

