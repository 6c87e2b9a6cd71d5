"""ReMIX vs QMIX vs OW-QMIX on predator-prey with miscoordination punishment (remix.md §5.1, Fig. 1).

    python experiments/remix_predator_prey.py --total-steps 160000 --seeds 4

Every algorithm gets the same seeds, budget and settings (the paper's, except where a flag says
otherwise). Results directories land under ``--out/<env>/<algo>``; the markdown report (settings,
final greedy return with a 95% bootstrap interval across seeds, the mean over all evaluation points as
a learning-speed summary, and the learning curves) is rewritten after every run, so an interrupted
experiment keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import jmarl  # noqa: E402
from jmarl.results import bootstrap_ci  # noqa: E402
from jmarl.runner import run  # noqa: E402

ROOT = Path(__file__).resolve().parent


def curves(run_dir: Path) -> dict[int, list[float]]:
    """env_steps -> greedy returns of every seed at that evaluation."""
    out: dict[int, list[float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["env_steps"], []).append(row["return"])
    return out


def report(args, overrides: dict, results: dict) -> str:
    lines = [
        "# ReMIX vs QMIX vs OW-QMIX on predator-prey (remix.md Fig. 1)", "",
        f"{args.seeds} seeds per algorithm (same seeds for all), {args.total_steps:,} env steps per seed, greedy "
        f"evaluation over {args.eval_episodes} episodes every {args.eval_every} updates "
        f"({args.eval_every * 8 * 200:,} env steps). Settings are the paper's (App. D: TD(lambda) 0.6, lr 1e-3, "
        "target copy every 200 episodes, epsilon 0.995 -> 0.05 over 100k steps, 8 parallel envs, one gradient "
        "step per 8 episodes of 200 steps, w_min 0.1, alpha 0.1) except: "
        + ", ".join(f"`{k}={v}`" for k, v in overrides.items()) + ".", "",
        f"Command: `python experiments/remix_predator_prey.py {' '.join(sys.argv[1:])}`", "",
    ]
    for env, per_algo in results.items():
        lines += [f"## {env}", "", "| algo | final return | 95% interval | mean over evaluations | 95% interval "
                  "| wall time |", "|---|---:|---|---:|---|---:|"]
        for algo, r in per_algo.items():
            (lo, hi), (alo, ahi) = r["ci"], r["auc_ci"]
            lines.append(f"| {algo} | {r['final']:.2f} | [{lo:.2f}, {hi:.2f}] | {r['auc']:.2f} "
                         f"| [{alo:.2f}, {ahi:.2f}] | {r['wall']:.0f} s |")
        steps = sorted(next(iter(per_algo.values()))["curve"])
        lines += ["", "Learning curves (mean greedy return across seeds):", "",
                  "| env steps | " + " | ".join(per_algo) + " |", "|---:|" + "---:|" * len(per_algo)]
        for s in steps:
            cells = [f"{np.mean(r['curve'][s]):.2f}" if s in r["curve"] else "" for r in per_algo.values()]
            lines.append(f"| {s:,} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=["predator_prey_p0", "predator_prey_p2"])
    p.add_argument("--algos", nargs="+", default=["remix", "qmix", "ow_qmix"], choices=jmarl.algorithm_names())
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--total-steps", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=128, help="episodes per gradient step (paper: 128)")
    p.add_argument("--buffer-size", type=int, default=10_000, help="replay episodes per seed (paper: 10000)")
    p.add_argument("--eval-every", type=int, default=5, help="updates between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, default=32)
    p.add_argument("--out", default="runs/remix_predator_prey")
    p.add_argument("--table", default=str(ROOT / "results" / "remix_predator_prey.md"))
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="updates between checkpoints of the full state (replay included: about 0.4 GB per seed "
                        "with 1000 episodes); default: none")
    args = p.parse_args()

    overrides = {"batch_size": args.batch_size, "buffer_size": args.buffer_size}
    overrides = {k: v for k, v in overrides.items() if v != {"batch_size": 128, "buffer_size": 10_000}[k]}
    results: dict[str, dict[str, dict]] = {}
    for env in args.envs:
        for algo in args.algos:
            config = jmarl.make_config(algo, env, total_steps=args.total_steps, eval_every=args.eval_every,
                                       eval_episodes=args.eval_episodes, **overrides)
            run_dir = Path(args.out) / env / algo
            t0 = time.perf_counter()
            ckpt = {"checkpoints": False} if args.checkpoint_every is None else {
                "checkpoint_every": args.checkpoint_every}
            summary = run(config, args.seeds, run_dir, **ckpt)
            curve = curves(run_dir)
            per_seed_auc = np.array([np.mean([v[i] for v in curve.values()]) for i in range(args.seeds)])
            results.setdefault(env, {})[algo] = {
                "final": summary["mean"]["return"], "ci": summary["ci95"]["return"], "curve": curve,
                "auc": float(per_seed_auc.mean()), "auc_ci": bootstrap_ci(per_seed_auc),
                "wall": time.perf_counter() - t0,
            }
            text = report(args, overrides, results)
            Path(args.table).parent.mkdir(parents=True, exist_ok=True)
            Path(args.table).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
