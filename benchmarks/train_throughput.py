"""Training throughput: env-steps/s of whole training chunks (collect + learn + evaluate), 1 and N seeds.

Each configuration is compiled first (timed apart), then one chunk is run twice; the better run is
reported. The raw env throughput of the same env at the same batch (num_envs x seeds parallel
copies, random actions) is measured in the same process, so the ratio training / raw is a
within-run comparison that machine noise affects less than absolute numbers.

Off-policy learners (remix, qmix, ...) skip their gradient steps until the replay buffer holds a batch of
complete episodes; before timing, their collection alone runs until every seed's buffer does, so every
timed update includes its gradient steps. Their rows also give gradient steps per second.

Rows are merged into the results files: a row replaces the previous one of the same algo, env, seeds
and overrides; rows of other configurations are kept.

    python benchmarks/train_throughput.py [--algos dpo ippo] [--envs mpe_simple_spread smax_3m] [--seeds 1 32]
    python benchmarks/train_throughput.py --algos remix qmix --envs predator_prey_p0 smax_3m --updates 1 \
        --set buffer_size=136
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
from jmarl.config import parse_value
from jmarl.core import make_chunk
from jmarl.registry import config_class
from jmarl.spec import seed_keys

RESULTS = Path(__file__).parent / "results"


def best_rate(fn, arg, steps: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        arg = jax.block_until_ready(fn(arg))
        rates.append(steps / (time.perf_counter() - t0))
    return max(rates), rates


def fill_replay(algo, state):
    """Collect (no learning) until every seed's buffer holds ``batch_size`` complete episodes; a transition
    replay (IDDPG) runs whole updates until learning has started (``learning_starts``, the batch)."""
    if not hasattr(state.buffer, "num_complete"):
        update = jax.jit(jax.vmap(algo.update), donate_argnums=0)
        while int(state.env_steps.min()) < max(algo.config.batch_size, algo.config.learning_starts):
            state, _ = update(state)
        return state
    collect = jax.jit(jax.vmap(algo.collect), donate_argnums=0)
    while int(state.buffer.num_complete.min()) < algo.config.batch_size:
        state, _ = collect(state)
    return state


def grad_steps_per_update(algo) -> int:
    """Gradient steps one update takes: the off-policy core's ``train_steps``, or IDDPG's ratio to env steps."""
    config = algo.config
    if hasattr(config, "train_steps"):
        return config.train_steps
    return round(config.train_ratio * algo.steps_per_update)


def learn_label(config) -> str:
    if hasattr(config, "epochs"):
        return f"{config.epochs} epochs"
    if hasattr(config, "train_steps"):
        return f"{config.train_steps} x {config.batch_size} episodes"
    return f"{config.train_ratio:g} x {config.batch_size} transitions per env step"


def measure_training(algo_name: str, env: str, seeds: int, updates: int, **overrides) -> dict:
    config = jmarl.make_config(algo_name, env, eval_every=updates, **overrides)
    algo = jmarl.make_algorithm(config)
    state = jax.jit(jax.vmap(algo.init))(seed_keys(0, seeds))
    t0 = time.perf_counter()
    # The state is donated, as the runner does: without it every call copies the state (replay buffers
    # included) to keep its input alive, a cost training never pays.
    chunk = jax.jit(jax.vmap(make_chunk(algo, updates)), donate_argnums=0).lower(state).compile()
    compile_s = time.perf_counter() - t0
    off_policy = hasattr(state, "buffer")
    if off_policy:
        state = fill_replay(algo, state)
    steps = seeds * updates * algo.steps_per_update
    best, rates = best_rate(lambda s: chunk(s)[0], state, steps)
    row = {"algo": algo_name, "env": env, "seeds": seeds, "num_envs": config.num_envs,
           "num_steps": getattr(algo, "num_steps", config.num_steps), "learn": learn_label(config),
           "updates": updates, "compile_s": round(compile_s, 1), "train_steps_per_s": round(best),
           "runs": [round(r) for r in rates]}
    if off_policy:
        row["grad_steps_per_s"] = round(best / algo.steps_per_update * grad_steps_per_update(algo), 3)
        row["buffer_size"] = config.buffer_size
    return row


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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, typed by the config's field (int, float, bool, str)")
    args = parser.parse_args()
    raw_sets = [s.split("=", 1) for s in args.set]

    new_rows = []
    for env in args.envs:
        for algo in args.algos:
            overrides = {k: parse_value(config_class(algo), k, v) for k, v in raw_sets}
            for seeds in args.seeds:
                row = measure_training(algo, env, seeds, args.updates, **overrides)
                raw = measure_raw(env, row["num_envs"] * seeds, row["num_steps"])
                row["raw_env_steps_per_s"] = round(raw)
                row["train_over_raw"] = round(row["train_steps_per_s"] / raw, 3)
                row["overrides"] = overrides
                new_rows.append(row)
                print(json.dumps(row), flush=True)
                table = write_results(new_rows)  # after every row: an interrupted sweep keeps what it measured
    print(table)


def write_results(new_rows: list[dict]) -> str:
    """Merge ``new_rows`` into benchmarks/results/train_throughput.{json,md}; returns the markdown table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices())}
    rows = merge_rows(RESULTS / "train_throughput.json", new_rows)
    (RESULTS / "train_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| algo | env | seeds | envs x steps | learn per update | train steps/s | grad steps/s | raw steps/s "
             "| train / raw | compile (s) | overrides |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        learn = r.get("learn", f"{r.get('epochs')} epochs")
        grad = f"{r['grad_steps_per_s']:.2f}" if "grad_steps_per_s" in r else ""
        extra = " ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items())
        lines.append(f"| {r['algo']} | {r['env']} | {r['seeds']} | {r['num_envs']}x{r['num_steps']} | {learn} | "
                     f"{r['train_steps_per_s']:,} | {grad} | {r['raw_env_steps_per_s']:,} | {r['train_over_raw']:.3f} "
                     f"| {r['compile_s']} | {extra} |")
    table = "\n".join(lines) + "\n"
    (RESULTS / "train_throughput.md").write_text(
        f"Training env-steps/s (whole chunks: collect + learn + eval), jax {jax.__version__}, "
        f"{jax.default_backend()}.\n\n" + table)
    return table


def merge_rows(path: Path, new_rows: list[dict]) -> list[dict]:
    """Earlier rows of other (algo, env, seeds, overrides) configurations, then the new rows."""
    key = lambda r: (r["algo"], r["env"], r["seeds"], json.dumps(r.get("overrides", {}), sort_keys=True))  # noqa: E731
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    fresh = {key(r) for r in new_rows}
    return [r for r in old if key(r) not in fresh] + new_rows


if __name__ == "__main__":
    main()
