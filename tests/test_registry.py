"""jmarl/registry.py: algorithm names, and a config resolved in order: the class's (paper) defaults, the
env family's defaults, the algorithm's preset, the user's overrides."""

from __future__ import annotations

import dataclasses

import pytest

import jmarl
from jmarl.algos import dpo
from jmarl.config import ConfigError
from jmarl.registry import ALGORITHMS, build_learner, config_class, env_defaults, learner_class, make_config


def test_resolution_order_defaults_env_preset_overrides():
    paper = dpo.DPOConfig()
    cfg = make_config("ippo", "smax_3m")
    assert (cfg.d_target, cfg.recurrent) == (0.02, True) != (paper.d_target, paper.recurrent)  # smax_ family
    assert (cfg.clip, cfg.use_sqrt, cfg.final_kl) == (0.2, False, False)  # the ippo preset
    assert cfg.lr == paper.lr  # untouched: the paper's
    assert make_config("ippo", "smax_3m", d_target=0.5, clip=0.3).d_target == 0.5  # overrides win
    assert make_config("ippo", "smax_3m", clip=0.3).clip == 0.3
    assert make_config("dpo", "stochastic_game").d_target == 0.1
    assert env_defaults("dpo", "smax_3m") == {"d_target": 0.02, "recurrent": True}  # prefix ending in _
    assert env_defaults("dpo", "smax") == {}  # a prefix matches only names that continue it


@pytest.mark.parametrize("args, needle", [
    (("ippp", "matrix_dpo4"), "unknown algorithm 'ippp' (did you mean ippo"),
    (("ippo", "matrix_dpo44"), "unknown environment 'matrix_dpo44' (did you mean matrix_dpo4"),
    (("LAN", "hallway"), "unknown algorithm 'LAN' (did you mean lan"),  # names are lower-case
    (("lan", "SMAX_3m"), "unknown environment 'SMAX_3m' (did you mean smax_3m"),
])
def test_unknown_names_suggest_close_ones(args, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        make_config(*args)


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown hyperparameter 'lrr' for ippo") as err:
        make_config("ippo", "matrix_dpo4", lrr=1e-3)
    valid = str(err.value).split("valid: ")[1].split(", ")
    assert "lr" in valid and "algo" not in valid and "env" not in valid  # --set refuses those two


def test_every_name_maps_to_a_config_and_a_learner_of_its_family():
    for name, (cls, learner, _, preset, desc) in ALGORITHMS.items():
        assert config_class(name) is cls and learner_class(name) is learner and desc
        assert set(preset) <= {f.name for f in dataclasses.fields(cls)}, name
    assert jmarl.algorithm_names() == sorted(ALGORITHMS)


def test_make_algorithm_validates_and_build_learner_trusts():
    cfg = make_config("ippo", "matrix_dpo4", total_steps=256)
    bad = dataclasses.replace(cfg, lr=-1.0)
    with pytest.raises(ConfigError, match="lr must be > 0.0"):
        jmarl.make_algorithm(bad)
    assert type(build_learner(cfg)) is dpo.DPO


def test_an_env_that_needs_arguments_says_so():
    cfg = dataclasses.replace(make_config("ippo", "matrix_dpo4"), env="matrix")
    with pytest.raises(ConfigError, match="cannot be built from its name alone"):
        jmarl.make_algorithm(cfg)
