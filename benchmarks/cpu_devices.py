"""Training speed on a CPU with the runs on one jax device against the runs split over K (``--cpu-devices``).

jax runs one CPU device's program on about one core, so several seeds vmapped on the one default device
leave the other cores mostly idle. Each case trains the same runs through ``experiments/run.py`` once per
device count, alternating the counts ``--repeats`` times (the machine's load moves between them), and keeps
each count's best training rate: env steps per second over all runs, compile excluded (the rate the
progress line prints at the end). Compile time is reported apart: one compilation per device, side by side.

    python benchmarks/cpu_devices.py                                  # the default cases, 1 vs all cores
    python benchmarks/cpu_devices.py --cases lan:checkers:4 --counts 1 2 --repeats 1   # cases: CASES below
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# algo:env:seeds -> the overrides and budget of a short run whose chunks are mostly learning
CASES = {
    "lan:checkers:4": ["--set", "eval_every=10", "--total-steps", "10000"],
    "dpo:stochastic_game:4": ["--set", "eval_every=2", "--total-steps", "8192"],
}
RATE = re.compile(r"\| ([\d,]+) steps/s \|")
COMPILED = re.compile(r"^compiled in ([\d.]+)s", re.M)


def measure(case: str, count: int) -> dict:
    """One run.py training of ``case`` on ``count`` CPU devices: its final rate and its compile time."""
    algo, env, seeds = case.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "--algo", algo, "--env", env, "--seeds", seeds,
               *CASES[case], "--cpu-devices", str(count), "--no-checkpoints", "--no-plots",
               "--no-compile-cache", "--out", str(Path(tmp) / "run")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if proc.returncode != 0:
        raise SystemExit(f"{case} on {count} device(s) failed: {proc.stderr.strip().splitlines()[-1:]}")
    rates = RATE.findall(proc.stdout)
    return {"steps_per_s": float(rates[-1].replace(",", "")), "compile_s": float(COMPILED.search(proc.stdout)[1])}


def main() -> None:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="ALGO:ENV:SEEDS")
    p.add_argument("--counts", nargs="+", type=int, default=[1, cores], metavar="K")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    import jax  # only for the version: the measurements run in their own processes

    rows = []
    for case in args.cases:
        tries: dict[int, list[dict]] = {k: [] for k in args.counts}
        for _ in range(args.repeats):
            for k in args.counts:
                tries[k].append(measure(case, k))
                print(case, k, tries[k][-1], flush=True)
        best = {k: max(t["steps_per_s"] for t in tries[k]) for k in args.counts}
        base = best[args.counts[0]]
        for k in args.counts:
            rows.append({"case": case, "cpu_devices": k, "steps_per_s": best[k],
                         "all_tries": [t["steps_per_s"] for t in tries[k]],
                         "compile_s": min(t["compile_s"] for t in tries[k]), "speedup": best[k] / base})
    record = {"jax": jax.__version__, "cores": cores, "machine": platform.processor() or platform.machine(),
              "repeats": args.repeats, "overrides": {c: CASES[c] for c in args.cases}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_devices.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"Training env steps/s (all runs, compile excluded) with the runs on K CPU devices, jax "
             f"{record['jax']}, {cores} cores; best of {args.repeats} alternating tries per K.", "",
             "| algo:env:seeds | K | steps/s | tries | speedup vs K = " + str(args.counts[0]) + " | compile (s) |",
             "|---|---:|---:|---|---:|---:|"]
    lines += [f"| {r['case']} | {r['cpu_devices']} | {r['steps_per_s']:,.0f} | "
              f"{', '.join(f'{x:,.0f}' for x in r['all_tries'])} | {r['speedup']:.2f}x | {r['compile_s']:.1f} |"
              for r in rows]
    (RESULTS / "cpu_devices.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
