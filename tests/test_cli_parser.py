"""experiments/cli.py: every experiment script's bad input is one printable line on stderr and exit code 2,
whatever characters the input holds; nothing here trains or compiles."""

import pytest

from experiments import cli

# A line break, an ANSI escape (ESC [ 31 m), a bell and an unpaired surrogate (what a non-UTF-8 byte in
# argv decodes to): each would break the one-line error or drive the terminal if printed raw.
HOSTILE = "--bad\nnext\x1b[31m\x07\udcff"
ESCAPED = "--bad\\nnext\\x1b[31m\\x07\\udcff"


def _main(script: str):
    if script == "run":
        from experiments.run import main
    elif script == "compare":
        from experiments.compare import main
    else:
        from experiments.evaluate import main
    return main


# The arguments each script needs before it gets to the unknown one (compare's --out and evaluate's path
# are required, and a missing one would be the error reported instead).
SCRIPTS = [
    ("run", ["--algo", "dpo", "--env", "hallway"]),
    ("compare", ["--out", "somewhere"]),
    ("evaluate", ["somewhere"]),
]


@pytest.mark.parametrize("script, needed", SCRIPTS)
def test_an_unknown_argument_with_control_characters_is_one_printable_line(script, needed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _main(script)(needed + [HOSTILE])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{script}.py: error: unrecognized arguments: {ESCAPED}\n"
    assert captured.err[:-1].isprintable()


@pytest.mark.parametrize("script, needed", SCRIPTS)
def test_a_bad_value_with_a_line_break_is_one_line(script, needed, capsys):
    """The bad value is quoted (repr) or escaped, whichever way the script words the message: one line."""
    with pytest.raises(SystemExit) as exit_info:
        _main(script)(needed + ["--seed", "1\n2\x1b"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n") and err[:-1].isprintable(), repr(err)
    assert err.startswith(f"{script}.py: error: argument --seed: ") and "1\\n2\\x1b" in err, err


@pytest.mark.parametrize("script", ["run", "compare", "evaluate"])
def test_every_script_uses_the_shared_parser(script):
    import importlib

    module = importlib.import_module(f"experiments.{script}")
    assert type(module.build_parser()) is cli.Parser
    assert not hasattr(module, "one_line") or module.one_line is cli.one_line


def test_one_line_escapes_only_what_does_not_print():
    assert cli.one_line("plain text: ok (é, 数, →)") == "plain text: ok (é, 数, →)"
    assert cli.one_line("a\r\nb\tc\x00\x7f\u2028") == "a\\r\\nb\\tc\\x00\\x7f\\u2028"
    assert cli.one_line("\ud800") == "\\ud800"


def test_description_is_the_whole_first_paragraph():
    doc = "First sentence wraps\n    onto a second line.\n\n    Details that --help leaves out.\n"
    assert cli.description(doc) == "First sentence wraps onto a second line."
    from experiments.compare import build_parser

    summary = build_parser().description
    assert summary.endswith("per metric.") and "\n" not in summary
