"""Compare algorithms on one env: train them (same seeds, same budget) or collect finished runs,
then write one table and one learning-curve plot per metric.

    python experiments/compare.py --env stochastic_game --algos dpo ippo --seeds 5 --total-steps 200000 \\
        --out runs/sg
    python experiments/compare.py --env matrix_tad10 --algos tad_ppo mappo --seeds 5 --total-steps 20000 \\
        --set num_envs=32 --set tad_ppo.distill_coef=2 --out runs/tad10
    python experiments/compare.py --runs runs/sg/dpo runs/sg/ippo --out runs/sg      # collect only
    python experiments/compare.py --preset tad_hallway --out runs/tad_hallway     # a paper experiment

Every algorithm trains the same number of env steps per seed: a budget rounds up to whole updates and
to whole chunks of ``eval_every`` updates, which differ between algorithms, so a ``--total-steps`` (or
preset budget) that would round to different numbers is refused with each algorithm's planned steps and
the smallest budget at or above it that every algorithm trains exactly. Each trained algorithm's
results directory is ``--out/<algo>``, which must be new (or empty). ``--out`` gets ``comparison.md`` and
``comparison.json`` (final greedy evaluation: mean and 95% bootstrap interval across seeds, for the
metrics every run reports) and ``compare_<metric>.png`` (mean and 95% band across seeds against env
steps, with the env's optimum as a dashed line where it is known).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
import jmarl  # noqa: E402
from experiments import presets  # noqa: E402
from experiments.cli import Parser, add_cpu_devices, description  # noqa: E402
from jmarl.checkpoint import CheckpointError  # noqa: E402
from jmarl.compile_cache import use_compile_cache  # noqa: E402
from jmarl.config import ConfigError, parse_value  # noqa: E402
from jmarl.core import plan  # noqa: E402
from jmarl.devices import use_cpu_devices  # noqa: E402
from jmarl.memory import use_more_device_memory  # noqa: E402
from jmarl.registry import config_class, make_algorithm  # noqa: E402
from jmarl.results import read_rows  # noqa: E402
from jmarl.run_dir import read_run  # noqa: E402
from jmarl.runner import Interrupted, NonFiniteError, run  # noqa: E402


def build_parser() -> Parser:
    p = Parser(prog="compare.py", description=description(__doc__))
    p.add_argument("--preset", default=None, help=f"a paper experiment: {', '.join(presets.names())}")
    p.add_argument("--env", help="environment (with --algos)")
    p.add_argument("--algos", nargs="+", default=[], metavar="ALGO", help="algorithms to train")
    p.add_argument("--runs", nargs="+", default=[], metavar="DIR", help="finished results directories to collect")
    p.add_argument("--seeds", type=int, default=None, help="seeds per algorithm (default 5, or the preset's)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--total-steps", type=int, default=None, help="env steps per seed")
    p.add_argument("--set", action="append", default=[], metavar="[ALGO.]KEY=VALUE",
                   help="override a hyperparameter for every algorithm that has it, or for ALGO only")
    p.add_argument("--devices", type=int, default=None, help="use the first K devices (default: all)")
    add_cpu_devices(p)
    p.add_argument("--out", required=True, help="comparison directory")
    return p


def split_overrides(algos: list[str], items: list[str], total_steps: int | None) -> dict[str, dict[str, Any]]:
    """Per-algorithm overrides from ``KEY=VALUE`` (every algorithm that has KEY) and ``ALGO.KEY=VALUE``."""
    out: dict[str, dict[str, Any]] = {a: {} for a in algos}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects [ALGO.]KEY=VALUE, got {item!r}")
        target, value = item.split("=", 1)
        algo, _, key = target.strip().rpartition(".")
        chosen = [algo] if algo else algos
        if algo and algo not in algos:
            raise ConfigError(f"--set {item}: {algo} is not one of the compared algorithms ({', '.join(algos)})")
        having = [a for a in chosen if key in {f.name for f in dataclasses.fields(config_class(a))}]
        if not having:
            parse_value(config_class(chosen[0]), key, value)  # raises: unknown key, with suggestions
        for a in having:
            out[a][key] = parse_value(config_class(a), key, value)
    if total_steps is not None:
        for a in algos:
            out[a]["total_steps"] = total_steps
    return out


def labels_for(configs: list[Any], dirs: list[Path]) -> list[str]:
    """The algorithm's name, or ``name (dir)`` where two runs share one."""
    names = [c.algo for c in configs]
    return [n if names.count(n) == 1 else f"{n} ({d.name})" for n, d in zip(names, dirs, strict=True)]


def compare(dirs: list[Path], out: Path, wall: dict[str, float] | None = None) -> str:
    """Write comparison.md / .json / compare_<metric>.png for finished runs; returns the table."""
    from jmarl.plots import plot_curves

    loaded = [read_run(d) for d in dirs]
    configs = [c for c, _ in loaded]
    env_names = sorted({c.env for c in configs})
    if len(env_names) != 1:
        raise ConfigError(f"the runs are on different envs ({', '.join(env_names)}); compare one env at a time")
    for d in dirs:
        if not (d / "summary.json").exists():
            raise ConfigError(f"{d} has no summary.json (unfinished run, or a sweep: pick a point's directory)")
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
    labels = labels_for(configs, dirs)
    keys = [k for k in summaries[0]["mean"] if all(k in s["mean"] for s in summaries)]
    optimum = envs.make(env_names[0]).spec.optimal_return
    seeds = [len(s["per_seed"]) for s in summaries]
    steps = [s["per_seed"][0]["env_steps"] for s in summaries]
    lines = [f"# {', '.join(labels)} on {env_names[0]}", "",
             "Final greedy evaluation: mean and 95% bootstrap interval across seeds.", "",
             "| algo | seeds | env steps | " + " | ".join(keys) + (" | wall time |" if wall else " |"),
             "|---|---:|---:|" + "---|" * len(keys) + ("---:|" if wall else "")]
    for label, s, n, st in zip(labels, summaries, seeds, steps, strict=True):
        cells = [f"{s['mean'][k]:.3f} [{s['ci95'][k][0]:.3f}, {s['ci95'][k][1]:.3f}]" for k in keys]
        tail = f" {wall[label]:.0f} s |" if wall else ""
        lines.append(f"| {label} | {n} | {st:,} | " + " | ".join(cells) + " |" + tail)
    if optimum is not None:
        lines += ["", f"Optimum (exact): {optimum:.3f}."]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(text)
    record = [{"label": label, "dir": str(d), "algo": c.algo, **s} for label, d, c, s in
              zip(labels, dirs, configs, summaries, strict=True)]
    (out / "comparison.json").write_text(json.dumps({"env": env_names[0], "optimum": optimum, "runs": record},
                                                    indent=1))
    series = {label: read_rows(d / "metrics.jsonl") for label, d in zip(labels, dirs, strict=True)}
    for key in keys:
        plot_curves(series, key, out / f"compare_{key}.png", f"{' vs '.join(labels)} on {env_names[0]}",
                    optimum if key == "return" else None)
    return text


def planned_steps(steps_per_update: int, eval_every: int, total_steps: int) -> int:
    """The env steps per seed that a learner of this update size and chunk length trains for a budget of
    ``total_steps`` (:func:`jmarl.core.plan`'s rounding)."""
    config = types.SimpleNamespace(total_steps=total_steps, eval_every=eval_every)
    return plan(types.SimpleNamespace(config=config, steps_per_update=steps_per_update)).total_steps


def equal_budget(sizes: list[tuple[int, int]], start: int) -> int:
    """The smallest budget >= ``start`` that every (steps per update, eval_every) trains exactly."""
    step = math.lcm(*(spu for spu, _ in sizes))
    whole_chunks = math.lcm(*(spu * every for spu, every in sizes))  # its multiples are exact for every learner
    upper = max(whole_chunks, math.ceil(start / whole_chunks) * whole_chunks)
    budget = max(step, math.ceil(start / step) * step)
    while budget < upper and any(planned_steps(spu, every, budget) != budget for spu, every in sizes):
        budget += step
    return budget


def check_budgets(configs: dict[str, Any]) -> int:
    """The env steps per seed every algorithm trains; ConfigError when their budgets round differently."""
    learners = {a: make_algorithm(c) for a, c in configs.items()}
    planned = {a: plan(learner).total_steps for a, learner in learners.items()}
    if len(set(planned.values())) == 1:
        return next(iter(planned.values()))
    budgets = sorted({c.total_steps for c in configs.values()})
    sizes = [(learner.steps_per_update, learner.config.eval_every) for learner in learners.values()]
    equal = equal_budget(sizes, budgets[-1])
    asked = (f"the budget of {budgets[0]:,} env steps" if len(budgets) == 1
             else f"the budgets ({', '.join(f'{a} {c.total_steps:,}' for a, c in configs.items())})")

    def each(values: dict[str, int]) -> str:
        return ", ".join(f"{a} {v:,}" for a, v in values.items())

    raise ConfigError(
        f"{asked} rounds to different numbers of env steps per seed: {each(planned)} (a budget rounds up to whole "
        f"updates, of {each({a: x.steps_per_update for a, x in learners.items()})} env steps, and to whole chunks "
        f"of eval_every updates, {each({a: x.config.eval_every for a, x in learners.items()})}); "
        f"--total-steps {equal} trains every algorithm exactly that many")


def check_out(out: Path, algos: list[str]) -> None:
    """Each algorithm trains afresh into ``out/<algo>``: refuse one that already exists (before anything trains)."""
    taken = [str(out / a) for a in algos if (out / a).exists() and (not (out / a).is_dir() or any((out / a).iterdir()))]
    if taken:
        raise ConfigError(f"--out {out} already holds {', '.join(taken)}; compare.py trains every algorithm afresh: "
                          f"choose another --out, or collect finished runs with --runs DIR [DIR ...]")


def train_all(env: str, algos: list[str], overrides: dict[str, dict], seeds: int, base_seed: int, out: Path,
              devices: int | None) -> tuple[list[Path], dict[str, float]]:
    """Train each algorithm (same seeds and budget) into ``out/<algo>``; returns dirs and wall times."""
    configs = {a: jmarl.make_config(a, env, **overrides[a]) for a in algos}  # every config checked first
    dirs, wall = [], {}
    for algo, config in configs.items():
        t0 = time.perf_counter()
        run(config, seeds, out / algo, base_seed, devices=devices)
        wall[algo] = time.perf_counter() - t0
        dirs.append(out / algo)
    return dirs, wall


def resolve(args: argparse.Namespace) -> tuple[str, list[str], int, dict[str, dict[str, Any]]]:
    """(env, algorithms, seeds, per-algorithm overrides): a preset's, then the command line's on top."""
    base: dict[str, dict[str, Any]] = {}
    env, algos, seeds = args.env, list(args.algos), args.seeds
    if args.preset:
        preset = presets.load(args.preset)
        if env is not None and env != preset.env:
            raise ConfigError(f"preset {preset.name} runs on {preset.env}; drop --env {env}")
        env, algos = preset.env, algos or list(preset.algos)
        preset.configs(algos)  # the algorithms belong to the preset and are available
        base = {a: preset.overrides(a) for a in algos}
        seeds = preset.seeds if seeds is None else seeds
    if env is None:
        raise ConfigError("--algos needs --env")
    seeds = 5 if seeds is None else seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    for algo in algos:
        jmarl.make_config(algo, env)  # unknown names raise with suggestions
    cli = split_overrides(algos, args.set, args.total_steps)
    overrides = {a: {**base.get(a, {}), **cli[a]} for a in algos}
    for algo in algos:
        jmarl.make_config(algo, env, **overrides[algo])  # every config checked before anything trains
    return env, algos, seeds, overrides


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    use_more_device_memory()
    if argv is None:  # as a script: the persistent compilation cache, as run.py (calls from code leave jax alone)
        use_compile_cache()
    try:
        if args.cpu_devices is not None:
            use_cpu_devices(args.cpu_devices)
        out = Path(args.out)
        if bool(args.algos or args.preset) == bool(args.runs):
            raise ConfigError("give either --algos (with --env) or --preset to train, or --runs to collect")
        if args.runs:
            print(compare([Path(d) for d in args.runs], out))
            return 0
        env, algos, seeds, overrides = resolve(args)
        check_out(out, algos)
        check_budgets({a: jmarl.make_config(a, env, **overrides[a]) for a in algos})
        dirs, wall = train_all(env, algos, overrides, seeds, args.seed, out, args.devices)
        print(compare(dirs, out, dict(zip(labels_for([read_run(d)[0] for d in dirs], dirs),
                                          wall.values(), strict=True))))
    except (ConfigError, CheckpointError) as err:
        parser.error(str(err))
    except NonFiniteError as err:  # training diverged: exit 3, as run.py
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 3
    except Interrupted as err:  # SIGINT / SIGTERM after a chunk: 128 + the signal's number
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 128 + err.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
