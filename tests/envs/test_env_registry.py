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
    with pytest.raises(ValueError, match="Did you mean 'smax_3m'"):
        envs.make("SMAX_3m")  # names are lower-case


def test_jaxmarl_import_prints_nothing_on_stdout():
    """jaxmarl prints "Importing submoduled environments..." when imported: stdout keeps only our own output."""
    import subprocess
    import sys

    code = "import envs; envs.make('mpe_simple_spread'); envs.make('smax_3m'); print('ours')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=__import__("pathlib").Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ours\n"


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
