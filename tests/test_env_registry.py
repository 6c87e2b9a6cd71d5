"""Names, options and their error messages."""

import pytest

import envs

FAMILIES = ["matrix", "matrix_tad10", "matrix_qtran", "matrix_penalty", "matrix_dpo1", "stochastic_game",
            "hallway", "predator_prey", "predator_prey_p0.5", "checkers", "mpe_simple_spread",
            "mpe_line_control", "mpe_circle_control", "smax_3m", "smax_3s5z", "smax_smacv2_20_units",
            "lbf", "rware"]


def test_every_family_is_registered():
    assert set(FAMILIES) <= set(envs.names())
    assert envs.names() == sorted(envs.names())


def test_unknown_name_lists_close_matches_and_all_names():
    with pytest.raises(ValueError) as err:
        envs.make("smax_3s5")
    msg = str(err.value)
    assert "'smax_3s5z'" in msg and "Did you mean" in msg and "hallway" in msg


def test_unknown_option_is_rejected_with_valid_options():
    with pytest.raises(ValueError) as err:
        envs.make("predator_prey", punishmnt=-1.0)
    assert "'punishment'" in str(err.value) and "Valid options" in str(err.value)


def test_preset_options_cannot_be_overridden():
    with pytest.raises(ValueError, match="no option 'punishment'"):
        envs.make("predator_prey_p0", punishment=-1.0)


def test_options_report_defaults():
    opts = envs.options("predator_prey")
    assert opts["punishment"] == -2.0
    assert "punishment" not in envs.options("predator_prey_p2")
