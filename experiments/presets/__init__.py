"""Paper experiments as data: ``<name>.toml`` in this directory, one per preset (README.md lists them).

A preset fixes the env, the algorithms compared, seeds, the env-step budget and hyperparameters:
``[set]`` applies to every algorithm whose config has the key, ``[algo.<name>]`` to one algorithm;
``[[claim]]`` tables state the paper's claims (experiments/claims.py), which experiments/reproduce.py judges.
Presets are validated when used (``configs``), so a preset may name an algorithm that is not
registered yet; it then fails with a message naming it.

    python experiments/run.py --preset tad_hallway [--algo mappo] [--seeds 3] [--out runs/tad_hallway]
    python experiments/compare.py --preset dpo_stochastic_game --out runs/dpo_sg
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from pathlib import Path
from typing import Any

from experiments.claims import Claim, parse_claims
from jmarl.config import ConfigError

DIRECTORY = Path(__file__).resolve().parent
REQUIRED = ("title", "paper", "figure", "env", "algos", "seeds", "total_steps")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    title: str
    paper: str
    figure: str
    env: str
    algos: tuple[str, ...]
    seeds: int
    total_steps: int
    common: dict[str, Any]
    per_algo: dict[str, dict[str, Any]]
    notes: str = ""
    claims: tuple[Claim, ...] = ()  # the paper's claims, judged by experiments/reproduce.py

    def overrides(self, algo: str) -> dict[str, Any]:
        """The preset's hyperparameters for ``algo`` (common keys its config has, then its own)."""
        from jmarl.registry import config_class

        fields = {f.name for f in dataclasses.fields(config_class(algo))}
        return {"total_steps": self.total_steps, **{k: v for k, v in self.common.items() if k in fields},
                **self.per_algo.get(algo, {})}

    def configs(self, algos: tuple[str, ...] | list[str] | None = None, **extra: Any) -> dict[str, Any]:
        """Validated configs of ``algos`` (all of the preset's by default); ``extra`` overrides on top."""
        import jmarl

        chosen = tuple(algos) if algos else self.algos
        unknown = [a for a in chosen if a not in self.algos]
        if unknown:
            raise ConfigError(f"preset {self.name} runs {', '.join(self.algos)}; not {', '.join(unknown)}")
        missing = [a for a in chosen if a not in jmarl.algorithm_names()]
        if missing:
            raise ConfigError(f"preset {self.name} needs {', '.join(missing)}, which is not available in this "
                              f"version (available: {', '.join(jmarl.algorithm_names())})")
        return {a: jmarl.make_config(a, self.env, **{**self.overrides(a), **extra}) for a in chosen}


def names() -> list[str]:
    return sorted(p.stem for p in DIRECTORY.glob("*.toml"))


def load(name: str) -> Preset:
    """Parse ``<name>.toml``; an unknown name or a malformed file raises ConfigError."""
    path = DIRECTORY / f"{name}.toml"
    if not path.exists():
        close = difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint}; valid: {', '.join(names())}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path.name} is not valid TOML: {err}") from None
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"{path.name} lacks {', '.join(missing)}")
    algo_tables = data.get("algo", {})
    stray = sorted(set(algo_tables) - set(data["algos"]))
    if stray:
        raise ConfigError(f"{path.name} sets [algo.{stray[0]}] but does not run it")
    claims = parse_claims(data.get("claim", []), tuple(data["algos"]), path.name)
    return Preset(name, data["title"], data["paper"], data["figure"], data["env"], tuple(data["algos"]),
                  int(data["seeds"]), int(data["total_steps"]), dict(data.get("set", {})),
                  {k: dict(v) for k, v in algo_tables.items()}, data.get("notes", ""), claims)


_README_HEAD = """# Presets: the papers' experiments as data

Each `<name>.toml` fixes an experiment's env, the algorithms it compares, seeds, the env-step budget
and hyperparameters (`[set]`: every algorithm that has the key; `[algo.<name>]`: one algorithm), and
the paper's claims about it (`[[claim]]`). Command-line options override a preset (`--seeds`,
`--total-steps`, `--set`, `--sweep`). This file is written by `python -m experiments.presets` from the
presets themselves.

```bash
python experiments/reproduce.py --preset tad_hallway --out runs/tad_hallway     # train all, judge the claims
python experiments/compare.py --preset tad_hallway --out runs/tad_hallway_cmp   # train all, compare only
python experiments/run.py --preset tad_hallway --algo mappo --out runs/mappo_hw  # one of them
```

| preset | paper figure | env | algorithms | seeds | env steps per seed |
|---|---|---|---|---:|---:|
"""

_README_CLAIMS = """
## Claims

A `[[claim]]` table states one claim of the paper about the preset's experiment, for
`experiments/reproduce.py` to judge against the runs (`experiments/claims.py`):

```toml
[[claim]]
says = "ReMIX ends above QMIX"                  # the claim, in a line
paper = "Fig. 1d: ReMIX above every baseline"   # what the paper shows: its numbers, or in words
kind = "above"          # above | reaches | below
algo = "remix"
other = "qmix"          # above: the algorithm below
metric = "return"       # an evaluation metric (return, won, score, ...)
statistic = "final"     # final (last evaluation) | mean (over all evaluations: learning speed)
# value = 100           # reaches / below: the threshold
# seeds = 0.5           # reaches / below: the fraction of seeds that must satisfy it
```

- `above`: reproduced when the 95% bootstrap intervals across seeds do not overlap in the claimed
  order; refuted when they do not overlap the other way at the full budget; otherwise undecided.
- `reaches`: reproduced when at least `seeds` of the seeds reach `value`; refuted when not at the full
  budget; otherwise undecided.
- `below` (a baseline stuck in a local optimum): refuted as soon as more seeds than allowed get to
  `value`; reproduced when they do not at the full budget; undecided (holds so far) below it.

The claims of each preset:

"""


def readme() -> str:
    """README.md of this directory, from the presets: the table, the claims and each preset's notes."""
    loaded = [load(n) for n in names()]
    rows = [f"| `{p.name}` | {p.paper}: {p.figure} | `{p.env}` | {', '.join(p.algos)} | {p.seeds} | "
            f"{p.total_steps:,} |" for p in loaded]
    claims = []
    for p in loaded:
        for c in p.claims:
            threshold = f", {c.value:g} on {c.seeds:.0%} of seeds" if c.value is not None else ""
            who = f"`{c.algo}`" + (f" over `{c.other}`" if c.other else "")
            claims.append(f"- `{p.name}`: {c.says} ({c.kind}, {who}, {c.statistic} {c.metric}{threshold}). "
                          f"Paper: {c.paper}.")
    notes = [f"- `{p.name}`: {' '.join(p.notes.split())}" for p in loaded]
    return (_README_HEAD + "\n".join(rows) + "\n" + _README_CLAIMS + "\n".join(claims)
            + "\n\nNotes per preset (also in each file's `notes`):\n\n" + "\n".join(notes) + "\n")
