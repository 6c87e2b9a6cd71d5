"""Reproduce a paper experiment: train every algorithm of a preset (same seeds, same budget, each
algorithm's seeds vmapped in one program), then judge the paper's claims against the runs.

    python experiments/reproduce.py --preset remix_predator_prey_p2 --out runs/repro_p2
    python experiments/reproduce.py --preset dpo_stochastic_game --fraction 0.1 --time-limit 20 --out runs/sg

The budget is the preset's (the paper's, or ours where the paper states none) unless ``--fraction`` or
``--total-steps`` asks for less; the report gives the budget trained as a fraction of the full one.

Pieces: rerunning the same command continues where the last one stopped. A finished algorithm is kept,
an unfinished one resumes from its latest checkpoint, and a larger budget extends finished runs (the
earlier budget's rows are kept). ``--time-limit MINUTES`` stops after the first chunk past that time
(checkpoint saved, exit 75), so a long reproduction runs as pieces of a few minutes each on a machine
lent for a short while; ``--no-checkpoint-replay`` keeps the off-policy learners' replay buffers out of
the checkpoints where they would not travel (a resumed run then restarts its buffer and differs from an
unbroken one; the report says so). Every piece is logged in ``pieces.json``.

``--out`` gets ``<algo>/`` (each a results directory), ``comparison.md`` / ``.json`` / ``compare_*.png``
(experiments/compare.py) and ``reproduction.md`` / ``.json``: the budget, the seeds, the commands, and for
each of the paper's claims what the paper shows, our numbers, and whether the claim is reproduced,
refuted or undecided at this budget (experiments/claims.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import presets  # noqa: E402
from experiments.claims import Verdict, judge, per_seed  # noqa: E402
from experiments.cli import Parser, add_cpu_devices, description  # noqa: E402
from experiments.compare import check_budgets, compare, resolve  # noqa: E402
from jmarl.checkpoint import CheckpointError  # noqa: E402
from jmarl.compile_cache import use_compile_cache  # noqa: E402
from jmarl.config import ConfigError  # noqa: E402
from jmarl.devices import use_cpu_devices  # noqa: E402
from jmarl.memory import use_more_device_memory  # noqa: E402
from jmarl.registry import make_config  # noqa: E402
from jmarl.results import read_rows  # noqa: E402
from jmarl.run_dir import read_run  # noqa: E402
from jmarl.runner import Interrupted, NonFiniteError, TimeLimitReached, run  # noqa: E402
from jmarl.spec import has_complete_checkpoint  # noqa: E402

TIME_LIMIT_EXIT = 75  # as experiments/run.py: stopped at --time-limit, rerun to continue


def build_parser() -> Parser:
    p = Parser(prog="reproduce.py", description=description(__doc__))
    p.add_argument("--preset", required=True, help=f"the paper experiment: {', '.join(presets.names())}")
    p.add_argument("--out", required=True, help="reproduction directory (rerun with the same one to continue)")
    p.add_argument("--algos", nargs="+", default=[], metavar="ALGO", help="a subset of the preset's algorithms")
    p.add_argument("--seeds", type=int, default=None, help="seeds per algorithm (default: the preset's)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--total-steps", type=int, default=None, help="env steps per seed (default: the preset's)")
    budget.add_argument("--fraction", type=float, default=None,
                        help="this fraction of the preset's budget, rounded to a budget every algorithm trains exactly")
    p.add_argument("--set", action="append", default=[], metavar="[ALGO.]KEY=VALUE",
                   help="override a hyperparameter for every algorithm that has it, or for ALGO only")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop after the first chunk past this many minutes of training, checkpoint saved (exit 75)")
    p.add_argument("--no-checkpoint-replay", action="store_true",
                   help="leave the off-policy replay buffers out of the checkpoints")
    p.add_argument("--devices", type=int, default=None, help="use the first K devices (default: all)")
    add_cpu_devices(p)
    return p


def budget_for(args: argparse.Namespace, preset: presets.Preset) -> int | None:
    """--total-steps, or --fraction of the preset's budget (None: the preset's own)."""
    if args.fraction is None:
        return args.total_steps
    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1], got {args.fraction}")
    return max(1, math.ceil(args.fraction * preset.total_steps))


def state_of(directory: Path, planned: int) -> str:
    """``new``, ``finished`` (a summary at ``planned`` env steps), ``resumable`` (a checkpoint), or ``stray``."""
    if not directory.exists() or not any(directory.iterdir()):
        return "new"
    summary = directory / "summary.json"
    if summary.exists():
        steps = {s["env_steps"] for s in json.loads(summary.read_text())["per_seed"]}
        if steps == {planned}:
            return "finished"
    return "resumable" if has_complete_checkpoint(directory) else "stray"


def train(configs: dict[str, Any], seeds: int, out: Path, args: argparse.Namespace, deadline: float | None,
          planned: int, wall: dict[str, float]) -> None:
    """Train or resume each algorithm into ``out/<algo>``, adding this piece's wall time per algorithm to
    ``wall``. Raises TimeLimitReached when ``deadline`` passes."""
    for algo, config in configs.items():
        directory = out / algo
        state = state_of(directory, planned)
        if state == "finished":
            continue
        if state == "stray":
            raise ConfigError(f"{directory} holds results with no checkpoint to continue from; move it aside "
                              f"or choose another --out")
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            if wall:  # a piece always trains at least one chunk, so that every piece makes progress
                raise TimeLimitReached(f"the time limit passed before {algo} started", 0)
            remaining = 1e-9
        t0 = time.perf_counter()
        try:
            run(config, seeds, directory, resume=state == "resumable", devices=args.devices,
                checkpoint_replay=not args.no_checkpoint_replay, time_limit_s=remaining)
        finally:
            wall[algo] = time.perf_counter() - t0


def log_piece(out: Path, wall: dict[str, float], argv: list[str], finished: bool) -> list[dict[str, Any]]:
    """Append this invocation to ``pieces.json``; returns every piece so far."""
    path = out / "pieces.json"
    pieces = json.loads(path.read_text()) if path.exists() else []
    pieces.append({"ended": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                   "command": "python experiments/reproduce.py " + " ".join(argv), "wall_s": {
                       k: round(v, 1) for k, v in wall.items()}, "finished": finished})
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pieces, indent=1) + "\n")
    return pieces


def report(preset: presets.Preset, out: Path, algos: list[str], pieces: list[dict[str, Any]]) -> str:
    """Write reproduction.md / .json from the finished runs in ``out``; returns the markdown."""
    dirs = [out / a for a in algos]
    compare(dirs, out)
    runs = {a: read_run(d) for a, d in zip(algos, dirs, strict=True)}
    rows = {a: read_rows(d / "metrics.jsonl") for a, d in zip(algos, dirs, strict=True)}
    config, meta = runs[algos[0]]
    steps, seeds = meta["planned_env_steps"], meta["seeds"]
    fraction = steps / preset.total_steps
    replay_dropped = any(not m.get("checkpoint_replay", True) for _, m in runs.values())
    verdicts = []
    for claim in preset.claims:
        involved = [a for a in (claim.algo, claim.other) if a]
        if not all(a in algos for a in involved):
            continue
        try:
            values = {a: per_seed(rows[a], claim.metric, claim.statistic) for a in involved}
        except ConfigError:  # a learner that does not report the claim's metric
            missing = [a for a in involved if not any(claim.metric in r for r in rows[a])]
            verdicts.append(Verdict(claim, "undecided", "", f"{', '.join(missing)} reports no {claim.metric!r}"))
            continue
        verdicts.append(judge(claim, values, fraction))
    wall = {a: sum(p["wall_s"][a] for p in pieces if a in p["wall_s"]) for a in algos}
    timed = ", ".join(f"{a} {w / 60:.1f} min" if any(a in p["wall_s"] for p in pieces) else f"{a} not logged"
                      for a, w in wall.items())
    lines = [f"# {preset.title}", "", f"{preset.paper}, {preset.figure}.", "",
             f"- Budget: {steps:,} env steps per seed, {fraction:.1%} of the preset's {preset.total_steps:,}.",
             f"- Seeds: {seeds} per algorithm (the same seeds for each), vmapped in one program per algorithm.",
             f"- Env: `{config.env}`; algorithms: {', '.join(f'`{a}`' for a in algos)}.",
             f"- Training wall time (all pieces): {timed}; {len(pieces)} piece(s).",
             "- Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(p["command"] for p in pieces)) + "."]
    if replay_dropped:
        lines.append("- Checkpoints left the replay buffers out: each resumed piece restarted its buffer, so these "
                     "runs differ from unbroken ones.")
    lines += ["", "| claim | the paper | ours | verdict | why |", "|---|---|---|---|---|"]
    lines += [f"| {v.claim.says} ({v.claim.statistic} {v.claim.metric}) | {v.claim.paper} | {v.ours} | "
              f"**{v.verdict}** | {v.why} |" for v in verdicts]
    if not verdicts:
        lines.append("| (the preset states no claim about these algorithms) | | | | |")
    lines += ["", "The final evaluation of every algorithm is in comparison.md, the curves in compare_*.png.", ""]
    text = "\n".join(lines)
    (out / "reproduction.md").write_text(text)
    record = {"preset": preset.name, "env_steps": steps, "full_budget": preset.total_steps, "fraction": fraction,
              "seeds": seeds, "algos": algos, "pieces": pieces,
              "claims": [{"says": v.claim.says, "paper": v.claim.paper, "kind": v.claim.kind,
                          "statistic": v.claim.statistic, "metric": v.claim.metric, "ours": v.ours,
                          "verdict": v.verdict, "why": v.why} for v in verdicts]}
    (out / "reproduction.json").write_text(json.dumps(record, indent=1) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    use_more_device_memory()
    if argv is None:
        use_compile_cache()
    argv = sys.argv[1:] if argv is None else argv
    wall: dict[str, float] = {}
    out = Path(args.out)
    try:
        if args.cpu_devices is not None:
            use_cpu_devices(args.cpu_devices)
        preset = presets.load(args.preset)
        if args.time_limit is not None and not args.time_limit > 0:
            raise ConfigError(f"--time-limit must be > 0 minutes, got {args.time_limit}")
        ns = argparse.Namespace(preset=args.preset, env=None, algos=args.algos, seeds=args.seeds, set=args.set,
                                total_steps=budget_for(args, preset))
        env, algos, seeds, overrides = resolve(ns)
        configs = {a: make_config(a, env, **overrides[a]) for a in algos}
        planned = check_budgets(configs)
        deadline = None if args.time_limit is None else time.monotonic() + 60 * args.time_limit
        try:
            train(configs, seeds, out, args, deadline, planned, wall)
        except (TimeLimitReached, Interrupted):
            log_piece(out, wall, argv, False)
            raise
        pieces = log_piece(out, wall, argv, True)
        print(report(preset, out, algos, pieces))
    except (ConfigError, CheckpointError) as err:
        parser.error(str(err))
    except NonFiniteError as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 3
    except TimeLimitReached:
        print(f"{parser.prog}: stopped at the time limit, checkpoints saved; rerun the same command to continue",
              file=sys.stderr)
        return TIME_LIMIT_EXIT
    except Interrupted as err:  # finished algorithms and checkpoints stay: the same command continues
        what = ("before the algorithm's first chunk" if err.env_steps is None
                else f"at env steps {err.env_steps:,} per run, checkpoints saved")
        print(f"{parser.prog}: interrupted {what}; rerun the same command to continue", file=sys.stderr)
        return 128 + err.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
