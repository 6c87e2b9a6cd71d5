"""LAN vs IQL vs QMIX at equal env steps on SMAX maps (lan.md §5, Fig. 3 / 6): greedy test win rates.

    python experiments/lan_smax.py --maps smax_3m smax_2s3z --seeds 4 --total-steps 2000000 --out runs/lan_smax

Protocol (lan.md §5.1: the settings LAN shares with the QMIX papers are shared here too):
- ``lan`` and ``iql`` run with their defaults (lan.md App. B; IQL = LAN without the centralised value);
- ``qmix`` is the value-decomposition learner of jmarl/algos/remix.py with its own choices (pymarl2's
  hypernetwork mixer, lr 1e-3, TD(lambda) 0.6, target copy every 200 episodes) and the shared ones set as
  LAN's: 8 envs x 25 steps per update, batch 32 episodes, epsilon 1 -> 0.05 over 50k steps, the same
  replay capacity, and as many gradient steps per env step as LAN took on that map: its fixed
  ``train_steps`` per update is LAN's measured mean (so LAN runs first on each map);
- every algorithm sees the same seeds and env steps; evaluation: 32 greedy episodes every 10k env steps.

Writes ``--out/<map>/<algo>/`` (the runner's results directories) and a markdown report (default
experiments/results/lan_smax.md): final win rate and return per algorithm, mean and 95% bootstrap
interval across seeds, the per-seed final win rates, the mean win rate over all evaluations (area under
the curve) and the win-rate curve.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jmarl  # noqa: E402
from jmarl.results import read_rows  # noqa: E402
from jmarl.runner import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_WITH_LAN = ("num_envs", "num_steps", "batch_size", "eps_start", "eps_finish", "eps_anneal_steps", "eval_every")


def lan_gradient_steps_per_update(run_dir: Path) -> float:
    """LAN's mean gradient steps per update over its whole run (from its metrics rows)."""
    rows = read_rows(run_dir / "metrics.jsonl")
    return float(np.mean([r["train/gradient_steps"] for r in rows]))


def configs(env: str, algos: list[str], total_steps: int, overrides: dict, lan_dir: Path) -> dict:
    out = {}
    for algo in algos:
        if algo == "qmix":
            lan = jmarl.make_config("lan", env, total_steps=total_steps, **overrides)
            shared = {k: getattr(lan, k) for k in SHARED_WITH_LAN}
            train_steps = max(1, round(lan_gradient_steps_per_update(lan_dir)))
            out[algo] = jmarl.make_config("qmix", env, total_steps=total_steps, buffer_size=lan.buffer_size,
                                          train_steps=train_steps, **shared)
        else:
            out[algo] = jmarl.make_config(algo, env, total_steps=total_steps, **overrides)
    return out


def curve(rows: list[dict], key: str) -> tuple[list[int], np.ndarray]:
    steps = sorted({r["env_steps"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    table = {(r["env_steps"], r["seed"]): r[key] for r in rows}
    return steps, np.array([[table[(s, k)] for k in seeds] for s in steps])


def report(results: dict, args: argparse.Namespace) -> str:
    lines = ["# LAN vs IQL vs QMIX on SMAX: greedy test win rate at equal env steps", "",
             f"{args.seeds} seeds per algorithm, {args.total_steps:,} env steps per seed, 32 greedy test episodes "
             f"per evaluation (every 10k env steps). Written by `python experiments/lan_smax.py "
             f"{' '.join(sys.argv[1:])}`.", ""]
    for env, per_algo in results.items():
        lines += [f"## {env}", "",
                  "| algo | final win rate | 95% interval | per seed | mean win rate over all evaluations | "
                  "final return | gradient steps per 1k env steps | wall time |",
                  "|---|---:|---|---|---:|---:|---:|---:|"]
        for algo, res in per_algo.items():
            s, rows = res["summary"], res["rows"]
            _, won = curve(rows, "won")
            lo, hi = s["ci95"]["won"]
            per_seed = ", ".join(f"{r['won']:.2f}" for r in s["per_seed"])
            grad = np.mean([r["train/gradient_steps"] for r in rows]) if "train/gradient_steps" in rows[0] \
                else res["config"].train_steps
            per_1k = 1000 * grad / (res["config"].num_envs * res["config"].num_steps)
            lines.append(f"| {algo} | {s['mean']['won']:.3f} | [{lo:.3f}, {hi:.3f}] | {per_seed} | {won.mean():.3f} | "
                         f"{s['mean']['return']:.3f} | {per_1k:.1f} | {res['seconds'] / 60:.0f} min |")
        lines += ["", "Win rate (mean over seeds) at each evaluation:", ""]
        algos = list(per_algo)
        steps, _ = curve(per_algo[algos[0]]["rows"], "won")
        lines += ["| env steps | " + " | ".join(algos) + " |", "|---:|" + "---:|" * len(algos)]
        curves = {a: curve(per_algo[a]["rows"], "won")[1].mean(axis=1) for a in algos}
        for i, st in enumerate(steps):
            lines.append(f"| {st:,} | " + " | ".join(f"{curves[a][i]:.2f}" for a in algos) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", nargs="+", default=["smax_3m", "smax_2s3z"])
    p.add_argument("--algos", nargs="+", default=["lan", "iql", "qmix"], choices=["lan", "lan_mean", "iql", "qmix"])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--total-steps", type=int, default=2_000_000)
    p.add_argument("--buffer-size", type=int, default=None, help="replay capacity in episodes (default: LAN's 5000)")
    p.add_argument("--out", default="runs/lan_smax")
    p.add_argument("--report", default=str(ROOT / "experiments" / "results" / "lan_smax.md"))
    args = p.parse_args()
    algos = ["lan"] + [a for a in args.algos if a != "lan"]  # QMIX's schedule is read from LAN's run
    overrides = {} if args.buffer_size is None else {"buffer_size": args.buffer_size}

    results: dict[str, dict] = {}
    for env in args.maps:
        results[env] = {}
        for algo in algos:
            out = Path(args.out) / env / algo
            config = configs(env, [algo], args.total_steps, overrides, Path(args.out) / env / "lan")[algo]
            t0 = time.perf_counter()
            summary = run(config, args.seeds, out, log=lambda line: print(line, flush=True), checkpoints=False)
            results[env][algo] = {"summary": summary, "rows": read_rows(out / "metrics.jsonl"), "config": config,
                                  "seconds": time.perf_counter() - t0}
            print(f"{env} {algo}: final win rate {summary['mean']['won']:.3f}", flush=True)
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report(results, args))  # after every map, so a long run reports early
    print(Path(args.report).read_text())


if __name__ == "__main__":
    main()
