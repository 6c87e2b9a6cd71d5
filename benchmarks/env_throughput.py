"""Raw environment throughput: env-steps/s of jit(scan(vmap(step))) with random available actions.

For each env family and each number of parallel envs, the program is compiled first (timed apart)
and then run twice; both runs are reported, since these shared machines are noisy. An env-step is
one step of one environment copy (all its agents). Writes benchmarks/results/env_throughput.json and
env_throughput.md (the table docs/benchmarks.md includes); rows are merged: a new row replaces the one of
the same env and number of envs, rows of other envs are kept. Continuous-action envs step with uniform
actions within their bounds.

    python benchmarks/env_throughput.py [--envs hallway smax_3m] [--sizes 1 64 1024] [--steps 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax

import envs
from envs.rollout import make_random_rollout

FAMILIES = [
    "matrix_tad10", "stochastic_game", "hallway", "checkers", "predator_prey", "mpe_simple_spread",
    "mpe_line_control", "mpe_circle_control", "smax_3m", "smax_3s5z", "lbf", "rware", "differential_game",
    "mamujoco_hopper_3x1", "mamujoco_halfcheetah_3x2",
]
RESULTS = Path(__file__).parent / "results"


def count_record(ts, actions, avail):
    # Keep the rollout's output tiny so that we time the env, not the copying of observations.
    return ts.reward.sum()


def measure(name: str, num_envs: int, num_steps: int) -> dict:
    env = envs.make(name)
    rollout = make_random_rollout(env, num_envs, num_steps, record=count_record)
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    compiled = jax.jit(rollout).lower(key).compile()
    compile_s = time.perf_counter() - t0
    runs = []
    for i in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.PRNGKey(i + 1)))
        runs.append(num_envs * num_steps / (time.perf_counter() - t0))
    return {"env": name, "num_envs": num_envs, "num_steps": num_steps, "compile_s": round(compile_s, 2),
            "steps_per_s": [round(r) for r in runs]}


def markdown(rows: list[dict], sizes: list[int]) -> str:
    head = "| env | " + " | ".join(f"{n} envs (steps/s)" for n in sizes) + " | compile (s) |\n"
    head += "|---|" + "---:|" * (len(sizes) + 1) + "\n"
    lines = []
    for name in dict.fromkeys(r["env"] for r in rows):
        cells, compiles = [], []
        for n in sizes:
            r = next((r for r in rows if r["env"] == name and r["num_envs"] == n), None)
            cells.append("-" if r is None else f"{max(r['steps_per_s']):,}")
            if r is not None:
                compiles.append(r["compile_s"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {min(compiles):.1f}-{max(compiles):.1f} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=FAMILIES, choices=envs.names(), metavar="ENV")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 64, 1024])
    parser.add_argument("--steps", type=int, default=128, help="scan length per program")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    rows = []
    for name in args.envs:
        for n in args.sizes:
            # a single env runs so fast that a longer scan is needed for a measurable time
            steps = args.steps * 8 if n == 1 else args.steps
            row = measure(name, n, steps)
            rows.append(row)
            print(f"{name:22s} {n:5d} envs  compile {row['compile_s']:6.2f}s  "
                  f"steps/s {row['steps_per_s'][0]:>10,} {row['steps_per_s'][1]:>10,}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices()),
            "machine": platform.machine(), "processor": platform.processor(), "cpus": jax.device_count()}
    path = out / "env_throughput.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    fresh = {(r["env"], r["num_envs"]) for r in rows}
    rows = [r for r in old if (r["env"], r["num_envs"]) not in fresh] + rows
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = markdown(rows, sorted({r["num_envs"] for r in rows}))
    (out / "env_throughput.md").write_text(
        f"Env-steps/s, best of two runs after compilation (jax {jax.__version__}, {jax.default_backend()}).\n\n"
        + table)
    print(table)


if __name__ == "__main__":
    main()
