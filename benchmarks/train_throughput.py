"""Training throughput: env-steps/s of whole training chunks (collect + learn + evaluate), 1 and N seeds.

Each configuration is compiled first (timed apart), then one chunk is run twice; the better run is
reported. The raw env throughput of the same env at the same batch (num_envs x seeds parallel
copies, random actions) is measured in the same process, so the ratio training / raw is a
within-run comparison that machine noise affects less than absolute numbers.

    python benchmarks/train_throughput.py [--algos dpo ippo] [--envs mpe_simple_spread smax_3m] [--seeds 1 32]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

import envs
import jmarl
from envs.rollout import make_random_rollout
from jmarl.core import make_chunk
from jmarl.runner import seed_keys

RESULTS = Path(__file__).parent / "results"


def best_rate(fn, arg, steps: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        arg = jax.block_until_ready(fn(arg))
        rates.append(steps / (time.perf_counter() - t0))
    return max(rates), rates


def measure_training(algo_name: str, env: str, seeds: int, updates: int, **overrides) -> dict:
    config = jmarl.make_config(algo_name, env, eval_every=updates, **overrides)
    algo = jmarl.make_algorithm(config)
    state = jax.jit(jax.vmap(algo.init))(seed_keys(0, seeds))
    t0 = time.perf_counter()
    chunk = jax.jit(jax.vmap(make_chunk(algo, updates))).lower(state).compile()
    compile_s = time.perf_counter() - t0
    steps = seeds * updates * algo.steps_per_update
    best, rates = best_rate(lambda s: chunk(s)[0], state, steps)
    return {"algo": algo_name, "env": env, "seeds": seeds, "num_envs": config.num_envs, "num_steps": config.num_steps,
            "epochs": config.epochs, "updates": updates, "compile_s": round(compile_s, 1),
            "train_steps_per_s": round(best), "runs": [round(r) for r in rates]}


def measure_raw(env_name: str, batch: int, num_steps: int) -> float:
    rollout = jax.jit(make_random_rollout(envs.make(env_name), batch, num_steps, record=lambda ts, a, m: ts.reward))
    jax.block_until_ready(rollout(jax.random.PRNGKey(0)))  # compile
    rates = []
    for i in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(rollout(jax.random.PRNGKey(i + 1)))
        rates.append(batch * num_steps / (time.perf_counter() - t0))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["dpo", "ippo"])
    parser.add_argument("--envs", nargs="+", default=["mpe_simple_spread", "smax_3m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--updates", type=int, default=2, help="updates per timed chunk")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (int/float)")
    args = parser.parse_args()
    overrides = {k: (float(v) if "." in v or "e" in v else int(v)) for k, v in (s.split("=", 1) for s in args.set)}

    rows = []
    for env in args.envs:
        for algo in args.algos:
            for seeds in args.seeds:
                row = measure_training(algo, env, seeds, args.updates, **overrides)
                raw = measure_raw(env, row["num_envs"] * seeds, row["num_steps"])
                row["raw_env_steps_per_s"] = round(raw)
                row["train_over_raw"] = round(row["train_steps_per_s"] / raw, 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices())}
    (RESULTS / "train_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| algo | env | seeds | envs x steps | epochs | train steps/s | raw steps/s | train / raw | compile (s) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['algo']} | {r['env']} | {r['seeds']} | {r['num_envs']}x{r['num_steps']} | {r['epochs']} | "
                     f"{r['train_steps_per_s']:,} | {r['raw_env_steps_per_s']:,} | {r['train_over_raw']:.2f} | "
                     f"{r['compile_s']} |")
    table = "\n".join(lines) + "\n"
    (RESULTS / "train_throughput.md").write_text(
        f"Training env-steps/s (whole chunks: collect + learn + eval), jax {jax.__version__}, "
        f"{jax.default_backend()}.\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
