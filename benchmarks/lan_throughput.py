"""LAN training throughput: env steps/s of collect + learn at 1 and N seeds, compile time apart.

LAN's cost per env step depends on the episodes, not only on the settings: it takes 2 gradient steps per
completed episode (none before the buffer holds ``batch_size`` complete episodes). So each configuration
is compiled (timed apart), warmed up until every seed learns, and then ``--updates`` updates are timed
``--rounds`` times (best kept), with the gradient steps they took. Evaluation is left out (the runner
evaluates once per 50 updates by default). Wall time and the process's CPU time (all threads) are both
recorded: on a shared machine other people's load stretches wall time far more than CPU time.

The replay capacity is cut to ``--buffer-size`` episodes (default 64): sampling gathers ``batch_size``
episodes whatever the capacity and writes are in place, so the capacity changes memory, not time, and 32
seeds of the paper's 5000 episodes of smax_3s5z would need about 112 GiB.

    python benchmarks/lan_throughput.py [--env smax_3s5z] [--seeds 1 32] [--updates 4] [--set key=value]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import jmarl
from jmarl.spec import seed_keys

RESULTS = Path(__file__).parent / "results"


def measure(algo_name: str, env: str, seeds: int, updates: int, rounds: int, overrides: dict) -> dict:
    config = jmarl.make_config(algo_name, env, **overrides)
    algo = jmarl.make_algorithm(config)

    def train(state):
        return jax.lax.scan(lambda s, _: algo.update(s), state, None, updates)

    state = jax.block_until_ready(jax.jit(jax.vmap(algo.init))(seed_keys(0, seeds)))
    t0 = time.perf_counter()
    chunk = jax.jit(jax.vmap(train), donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - t0
    warmup = 0
    while int(np.min(jax.device_get(state.buffer.num_complete))) < config.batch_size:
        state, _ = jax.block_until_ready(chunk(state))
        warmup += 1
    best: dict[str, float] = {"wall": float("inf"), "cpu": float("inf")}
    grad_steps = []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        state, metrics = jax.block_until_ready(chunk(state))
        best = {"wall": min(best["wall"], time.perf_counter() - t0), "cpu": min(best["cpu"], time.process_time() - c0)}
        grad_steps.append(float(np.mean(jax.device_get(metrics["gradient_steps"]))))
    steps = seeds * updates * algo.steps_per_update
    per_update = float(np.mean(grad_steps))
    return {"algo": algo_name, "env": env, "seeds": seeds, "num_envs": config.num_envs, "num_steps": algo.num_steps,
            "batch_size": config.batch_size, "buffer_size": config.buffer_size, "updates_timed": updates,
            "warmup_chunks": warmup, "compile_s": round(compile_s, 1),
            "gradient_steps_per_update": round(per_update, 2),
            "gradient_steps_per_1k_env_steps": round(1000 * per_update / algo.steps_per_update, 2),
            "env_steps_per_s_wall": round(steps / best["wall"]), "env_steps_per_s_cpu": round(steps / best["cpu"]),
            "env_steps_per_s_per_seed_wall": round(steps / best["wall"] / seeds, 1),
            # an update's wall time over its gradient steps (collection included): what one step costs a seed
            "ms_per_gradient_step_wall": round(1000 * best["wall"] / updates / max(per_update, 1e-9), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["lan"])
    parser.add_argument("--env", default="smax_3s5z")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--updates", type=int, default=4, help="updates per timed chunk")
    parser.add_argument("--rounds", type=int, default=2, help="timed chunks (the best is kept)")
    parser.add_argument("--buffer-size", type=int, default=64, help="replay capacity in episodes per seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (int/float)")
    parser.add_argument("--out", default="lan_throughput", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    overrides = {k: (float(v) if "." in v or "e" in v else int(v)) for k, v in (s.split("=", 1) for s in args.set)}
    overrides["buffer_size"] = args.buffer_size

    rows = []
    for algo in args.algos:
        for seeds in args.seeds:
            row = measure(algo, args.env, seeds, args.updates, args.rounds, overrides)
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices()),
            "overrides": overrides}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| algo | env | seeds | envs x steps | gradient steps / 1k env steps | env steps/s (wall) | "
             "env steps/s (CPU time) | per seed (wall) | ms per gradient step (wall) | compile (s) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['algo']} | {r['env']} | {r['seeds']} | {r['num_envs']}x{r['num_steps']} | "
                     f"{r['gradient_steps_per_1k_env_steps']} | {r['env_steps_per_s_wall']:,} | "
                     f"{r['env_steps_per_s_cpu']:,} | {r['env_steps_per_s_per_seed_wall']:,} | "
                     f"{r['ms_per_gradient_step_wall']:,} | {r['compile_s']} |")
    table = "\n".join(lines) + "\n"
    (RESULTS / f"{args.out}.md").write_text(
        f"LAN training env-steps/s (collect + learn, no evaluation), batch {rows[0]['batch_size']} episodes, "
        f"buffer {args.buffer_size} episodes per seed, jax {jax.__version__}, {jax.default_backend()} "
        f"({len(jax.devices())} device(s)).\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
