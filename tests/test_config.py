"""jmarl/config.py: one validator for every algorithm's fields, and command-line values parsed by type."""

from __future__ import annotations

import dataclasses

import pytest

from jmarl.config import INT32_MAX, CommonConfig, ConfigError, field, parse_value, validate


@dataclasses.dataclass(frozen=True)
class Toy(CommonConfig):
    ratio: float = field(0.5, low=0.0, high=1.0, low_open=True)
    mode: str = field("a", choices=("a", "b"))
    flag: bool = field(False)
    steps: int = field(3, low=1)
    eps_start: float = field(0.9, low=0.0, high=1.0)
    eps_finish: float = field(0.1, low=0.0, high=1.0)


@pytest.mark.parametrize("key, text, expected", [
    ("ratio", "0.25", 0.25), ("steps", "1e3", 1000), ("steps", "7", 7), ("flag", "yes", True),
    ("flag", "0", False), ("mode", "b", "b"),
])
def test_parse_value_by_field_type(key, text, expected):
    value = parse_value(Toy, key, text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("key, text, needle", [
    ("steps", "2.5", "steps must be an int, got '2.5'"), ("ratio", "nan", "ratio must be a float"),
    ("flag", "maybe", "flag must be a bool"), ("ratoi", "1", "unknown hyperparameter 'ratoi' (did you mean ratio?)"),
    ("RATIO", "1", "unknown hyperparameter 'RATIO' (did you mean ratio?)"),  # names are lower-case
    ("algo", "dpo", "algo is not a hyperparameter: the algorithm is chosen by its own option"),
    ("env", "hallway", "env is not a hyperparameter: the environment is chosen by its own option"),
])
def test_parse_value_refuses_with_one_line(key, text, needle):
    with pytest.raises(ConfigError, match="^" + __import__("re").escape(needle)):
        parse_value(Toy, key, text)


@pytest.mark.parametrize("change, needle", [
    ({"ratio": 0.0}, "ratio must be > 0.0; got 0.0"),  # open lower bound
    ({"ratio": 1.5}, "ratio must be <= 1.0; got 1.5"),
    ({"mode": "c"}, "mode must be one of a, b; got 'c'"),
    ({"steps": 0}, "steps must be >= 1; got 0"),
    ({"steps": True}, "steps must be an int, got True"),  # a bool is not an int here
    ({"steps": INT32_MAX + 1}, f"steps must be <= {INT32_MAX}"),
    ({"gamma": float("inf")}, "gamma must be <= 1.0"),
    ({"lr": float("inf")}, "lr must be a finite float"),
    ({"eps_start": 0.1, "eps_finish": 0.2}, "eps_finish (0.2) must be <= eps_start (0.1)"),
])
def test_validate_names_the_field_and_the_allowed_range(change, needle):
    with pytest.raises(ConfigError) as err:
        validate(dataclasses.replace(Toy(), **change))
    assert needle in str(err.value)


def test_validate_accepts_the_edges_and_ints_for_floats():
    cfg = dataclasses.replace(Toy(), ratio=1, steps=1, gamma=1.0, eps_start=0.1, eps_finish=0.1)
    assert validate(cfg) is cfg


def test_the_valid_keys_of_an_unknown_one_are_what_set_accepts():
    """``algo`` and ``env`` are fields, but ``--set`` refuses them: the list leaves them out."""
    with pytest.raises(ConfigError) as err:
        parse_value(Toy, "nope", "1")
    valid = str(err.value).split("valid: ")[1].split(", ")
    assert valid == sorted(f.name for f in dataclasses.fields(Toy) if f.name not in ("algo", "env"))
