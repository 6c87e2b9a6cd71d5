"""A paper's claims as data, judged against finished runs: reproduced, refuted, or undecided at a budget.

A preset lists its paper's claims as ``[[claim]]`` tables (experiments/presets/README.md). Each names what
the paper says, what it shows (its numbers, or a qualitative statement when it plots without numbers), a
``kind`` and the algorithms and metric it is about:

- ``above``: ``algo``'s ``statistic`` is above ``other``'s. Reproduced when the 95% bootstrap intervals
  across seeds do not overlap in that order; refuted when they do not overlap the other way at the full
  budget; otherwise undecided.
- ``reaches``: ``algo``'s ``statistic`` is at least ``value`` on at least a ``seeds`` fraction of its seeds.
  Reproduced when it is; refuted when it is not at the full budget; otherwise undecided.
- ``below``: ``algo``'s ``statistic`` stays below ``value`` on at least a ``seeds`` fraction of its seeds
  (a local optimum the paper says a baseline gets stuck in). Refuted when it does not at any budget (the
  baseline got there); reproduced when it does at the full budget; undecided (it holds so far) below it.

``statistic`` is ``final`` (each seed's last greedy evaluation) or ``mean`` (each seed's mean over all its
evaluations: the area under the curve, for claims about learning speed).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np

from jmarl.config import ConfigError
from jmarl.results import bootstrap_ci

KINDS = ("above", "reaches", "below")
STATISTICS = ("final", "mean")
VALUE_TOLERANCE = 1e-6  # "reaches 100" counts a float32 99.99999


@dataclasses.dataclass(frozen=True)
class Claim:
    says: str  # the claim, in a line
    paper: str  # what the paper shows: its numbers or a qualitative statement, with the figure
    kind: str
    algo: str
    metric: str = "return"
    statistic: str = "final"
    other: str | None = None  # above: the algorithm below
    value: float | None = None  # reaches / below: the threshold
    seeds: float = 0.5  # reaches / below: the fraction of seeds that must satisfy it


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # reproduced | refuted | undecided
    ours: str  # our numbers, in a cell
    why: str


def parse_claims(items: list[dict[str, Any]], algos: tuple[str, ...], where: str) -> tuple[Claim, ...]:
    """Claims from a preset's ``[[claim]]`` tables; anything malformed raises ConfigError naming ``where``."""
    names = {f.name for f in dataclasses.fields(Claim)}
    claims = []
    for i, item in enumerate(items, start=1):
        at = f"{where} claim {i}"
        unknown = sorted(set(item) - names)
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(names))}")
        missing = [k for k in ("says", "paper", "kind", "algo") if k not in item]
        if missing:
            raise ConfigError(f"{at} lacks {', '.join(missing)}")
        claim = Claim(**item)
        if claim.kind not in KINDS:
            raise ConfigError(f"{at}: kind must be one of {', '.join(KINDS)}, got {claim.kind!r}")
        if claim.statistic not in STATISTICS:
            raise ConfigError(f"{at}: statistic must be one of {', '.join(STATISTICS)}, got {claim.statistic!r}")
        involved = [claim.algo] + ([claim.other] if claim.other else [])
        stray = [a for a in involved if a not in algos]
        if stray:
            raise ConfigError(f"{at} is about {stray[0]}, which the preset does not run ({', '.join(algos)})")
        if claim.kind == "above" and claim.other is None:
            raise ConfigError(f"{at}: an 'above' claim needs other = the algorithm below")
        if claim.kind != "above" and claim.value is None:
            raise ConfigError(f"{at}: a '{claim.kind}' claim needs value = the threshold")
        if not 0 < claim.seeds <= 1:
            raise ConfigError(f"{at}: seeds is a fraction in (0, 1], got {claim.seeds}")
        claims.append(claim)
    return tuple(claims)


def per_seed(rows: list[dict[str, Any]], metric: str, statistic: str) -> np.ndarray:
    """Each seed's ``final`` (last evaluation) or ``mean`` (over its evaluations) of ``metric``, by seed."""
    by_seed: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        if metric in row:
            by_seed[row["seed"]].append((row["env_steps"], row[metric]))
    if not by_seed:
        raise ConfigError(f"no evaluation reports {metric!r}")
    out = []
    for seed in sorted(by_seed):
        points = sorted(by_seed[seed])
        out.append(points[-1][1] if statistic == "final" else float(np.mean([v for _, v in points])))
    return np.asarray(out, dtype=np.float64)


def _interval(values: np.ndarray) -> str:
    lo, hi = bootstrap_ci(values)
    return f"{values.mean():.2f} [{lo:.2f}, {hi:.2f}]"


def judge(claim: Claim, values: dict[str, np.ndarray], fraction: float) -> Verdict:
    """The verdict on ``claim`` from each algorithm's per-seed statistic, at ``fraction`` of the full budget."""
    full = fraction >= 1.0
    mine = values[claim.algo]
    if claim.kind == "above":
        theirs = values[claim.other]
        (lo_a, hi_a), (lo_b, hi_b) = bootstrap_ci(mine), bootstrap_ci(theirs)
        ours = f"{claim.algo} {_interval(mine)} vs {claim.other} {_interval(theirs)}"
        if lo_a > hi_b:
            return Verdict(claim, "reproduced", ours, "the 95% intervals do not overlap, in the claimed order")
        if lo_b > hi_a:
            if full:
                return Verdict(claim, "refuted", ours, "the 95% intervals do not overlap, in the opposite order")
            return Verdict(claim, "undecided", ours, "the opposite order holds at this budget, below the paper's")
        return Verdict(claim, "undecided", ours, "the 95% intervals overlap")
    hit = mine >= claim.value - VALUE_TOLERANCE
    share = hit.mean() if claim.kind == "reaches" else 1.0 - hit.mean()
    count = int(round(share * len(mine)))
    word = "at least" if claim.kind == "reaches" else "below"
    ours = f"{claim.algo}: {word} {claim.value:g} on {count}/{len(mine)} seeds (mean {mine.mean():.2f})"
    holds = share >= claim.seeds - 1e-12
    need = f"{claim.seeds:.0%} of the seeds needed"
    if claim.kind == "reaches":
        if holds:
            return Verdict(claim, "reproduced", ours, need)
        return Verdict(claim, "refuted" if full else "undecided", ours,
                       need + ("" if full else "; the budget is below the paper's"))
    if not holds:
        return Verdict(claim, "refuted", ours, need + f"; {claim.algo} got past {claim.value:g}")
    return Verdict(claim, "reproduced" if full else "undecided", ours,
                   need + ("" if full else "; it holds so far, below the paper's budget"))
