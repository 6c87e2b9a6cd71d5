"""What sequential decisions cost: time per env step of TAD-PPO vs MAPPO at equal settings.

The paper's implementation is 1.91x (3m) and 2.76x (10m_vs_11m) slower than MAPPO (tad_ppo.md Table 4);
ours runs the torso once per agent in parallel and scans over agents only through attention and head.
For each env both learners are compiled first (timed apart), then their pieces are timed in alternation,
``--rounds`` times, keeping each one's best time: ``collect`` (the rollout), ``learn`` (training only: the
epochs on one fixed rollout) and ``update`` (the whole iteration). Ratios are within one run. Both wall
time and the process's CPU time (all threads) are recorded: on a shared machine other people's load
stretches wall time but hardly the CPU time our own work needs, so the CPU-time ratio is the steadier one.

    python benchmarks/tad_ppo_overhead.py [--envs smax_3m smax_10m_vs_11m] [--rounds 3] [--set key=value]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

import jmarl

RESULTS = Path(__file__).parent / "results"
ALGOS = ("tad_ppo", "mappo")
PIECES = ("collect", "learn", "update")
CLOCKS = ("wall", "cpu")


def compiled_pieces(algo_name: str, env: str, overrides: dict) -> tuple[dict, dict, int, dict]:
    """The three jitted pieces of one learner, compiled, with their inputs; returns (fns, args, steps, info)."""
    config = jmarl.make_config(algo_name, env, **overrides)
    algo = jmarl.make_algorithm(config)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    collect = jax.jit(algo.collect)
    t0 = time.perf_counter()
    collect_c = collect.lower(state).compile()
    after, traj = jax.block_until_ready(collect_c(state))
    learn_c = jax.jit(algo.learn).lower(after, state.carries, traj).compile()
    update_c = jax.jit(algo.update).lower(state).compile()
    compile_s = time.perf_counter() - t0
    fns = {"collect": collect_c, "learn": learn_c, "update": update_c}
    args = {"collect": (state,), "learn": (after, state.carries, traj), "update": (state,)}
    info = {"num_envs": config.num_envs, "num_steps": config.num_steps, "epochs": config.epochs,
            "hidden_dim": config.hidden_dim, "compile_s": round(compile_s, 1)}
    return fns, args, algo.steps_per_update, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["smax_3m", "smax_10m_vs_11m"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (int/float)")
    args = parser.parse_args()
    overrides = {k: (float(v) if "." in v or "e" in v else int(v)) for k, v in (s.split("=", 1) for s in args.set)}

    rows = []
    for env in args.envs:
        learners = {name: compiled_pieces(name, env, overrides) for name in ALGOS}
        best = {(name, piece, clock): float("inf") for name in ALGOS for piece in PIECES for clock in CLOCKS}
        for _ in range(args.rounds):
            for piece in PIECES:
                for name in ALGOS:  # alternate, so that machine load hits both alike
                    fns, fargs, _, _ = learners[name]
                    t0, c0 = time.perf_counter(), time.process_time()
                    jax.block_until_ready(fns[piece](*fargs[piece]))
                    spent = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
                    for clock in CLOCKS:
                        best[(name, piece, clock)] = min(best[(name, piece, clock)], spent[clock])
        for name in ALGOS:
            _, _, steps, info = learners[name]
            row = {"env": env, "algo": name, **info}
            for piece in PIECES:
                for clock in CLOCKS:
                    row[f"{piece}_{clock}_us_per_step"] = round(1e6 * best[(name, piece, clock)] / steps, 2)
                    ratio = best[("tad_ppo", piece, clock)] / best[("mappo", piece, clock)]
                    row[f"{piece}_{clock}_ratio_vs_mappo"] = round(ratio, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices()),
            "rounds": args.rounds, "overrides": overrides}
    (RESULTS / "tad_ppo_overhead.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| env | algo | envs x steps | epochs | collect | learn | whole update | TAD-PPO / MAPPO: collect, learn, "
             "update (CPU time) | same, wall time | compile (s) |",
             "|---|---|---|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        ratios = {c: ", ".join(f"{r[f'{p}_{c}_ratio_vs_mappo']:.2f}" for p in PIECES) if r["algo"] == "tad_ppo" else ""
                  for c in CLOCKS}
        lines.append(f"| {r['env']} | {r['algo']} | {r['num_envs']}x{r['num_steps']} | {r['epochs']} | "
                     + " | ".join(f"{r[f'{p}_cpu_us_per_step']:.0f}" for p in PIECES)
                     + f" | {ratios['cpu']} | {ratios['wall']} | {r['compile_s']} |")
    table = "\n".join(lines) + "\n"
    (RESULTS / "tad_ppo_overhead.md").write_text(
        f"CPU time per env step in microseconds (all threads of the process), TAD-PPO vs MAPPO at equal settings "
        f"(1 seed, best of {args.rounds} alternated rounds), jax {jax.__version__}, {jax.default_backend()}.\n\n"
        + table)
    print(table)


if __name__ == "__main__":
    main()
