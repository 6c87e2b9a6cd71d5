"""Train several algorithms on one env (same seeds, same budget) and write a comparison table.

    python experiments/compare_algos.py --env stochastic_game --algos dpo ippo ippo_kl --seeds 5 \
        --total-steps 200000 --out runs/compare_sg

Each algorithm's results directory (config.json, metrics.jsonl, summary.json) lands under
``--out/<algo>``; the table (final greedy evaluation, mean and 95% bootstrap interval across seeds,
and the env's optimum where known) is written to ``--out/comparison.md`` and, with ``--table``,
to that path too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
import jmarl  # noqa: E402
from jmarl.runner import run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, choices=envs.names(), metavar="ENV")
    p.add_argument("--algos", nargs="+", required=True, choices=jmarl.algorithm_names(), metavar="ALGO")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--total-steps", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--table", default=None, help="also write the markdown table here")
    args = p.parse_args()

    spec = envs.make(args.env).spec
    lines = [f"Final greedy evaluation on `{args.env}` after {args.total_steps:,} env steps per seed, "
             f"{args.seeds} seeds (mean and 95% bootstrap interval across seeds).", ""]
    header = "| algo | return | 95% interval |" + (" win rate |" if spec.has_won else "") + " wall time |"
    lines += [header, "|---|---:|---|" + ("---:|" if spec.has_won else "") + "---:|"]
    for algo in args.algos:
        config = jmarl.make_config(algo, args.env, total_steps=args.total_steps)
        t0 = time.perf_counter()
        summary = run(config, args.seeds, Path(args.out) / algo)
        lo, hi = summary["ci95"]["return"]
        won = f" {summary['mean']['won']:.2f} |" if spec.has_won else ""
        lines.append(f"| {algo} | {summary['mean']['return']:.3f} | [{lo:.3f}, {hi:.3f}] |{won} "
                     f"{time.perf_counter() - t0:.0f} s |")
    if spec.optimal_return is not None:
        lines += ["", f"Optimum (exact): {spec.optimal_return:.3f}."]
    text = "\n".join(lines) + "\n"
    (Path(args.out) / "comparison.md").write_text(text)
    if args.table:
        Path(args.table).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
