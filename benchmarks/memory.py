"""Peak memory of a training run of L env steps against one of 10 L, the config otherwise the same.

Why: the runner calls one compiled chunk (``eval_every`` updates + an evaluation) again and again and
keeps what grows with training length (metric rows, checkpoints) on the host and on disk, so a run ten
times longer should need no more memory. Each run goes through ``jmarl.runner.run`` (the real path:
metrics files written, no plots, no checkpoints) in a fresh Python process, which reports

- ``rss_imported_mib``: resident memory after the imports;
- ``peak_compiled_mib``: peak resident memory (``ru_maxrss``) after compiling the program (the same
  cached program the runner then uses);
- ``peak_trained_mib``: peak resident memory after training, the number the claim is about;
- ``rss_trained_mib``: resident memory after training;
- ``metrics_bytes``: bytes of the metrics one compiled chunk returns (from its output shapes), which
  must not depend on L; ``state_bytes``: the train state the chunk carries (replay buffer included).

The claim checked: the 10x longer run's peak is within 10% of the short one's.

    python benchmarks/memory.py [--cases dpo_mpe_simple_spread lan_checkers] [--scale 10] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CLAIM = 0.10  # the long run's peak may exceed the short run's by at most this fraction

# name -> (algo, env, overrides, short run's env steps). The short run already has several chunks, so both
# lengths run the same compiled chunk and differ only in how often it is called.
CASES: dict[str, tuple[str, str, dict, int]] = {
    # DPO on MPE simple spread (N=5): 2 updates x 8 envs x 64 steps = 1,024 env steps per chunk.
    "dpo_mpe_simple_spread": ("dpo", "mpe_simple_spread",
                              {"eval_every": 2, "num_envs": 8, "num_steps": 64, "eval_episodes": 8}, 4 * 1_024),
    # LAN on checkers with a replay buffer of 300 episodes: 4 updates x 8 envs x 25 steps = 800 env steps per
    # chunk, gradient steps on batches of 16 episodes.
    "lan_checkers": ("lan", "checkers", {"eval_every": 4, "buffer_size": 300, "batch_size": 16,
                                         "eval_episodes": 8}, 4 * 800),
}


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def current_rss_kib() -> int:
    """Resident memory now (Linux: VmRSS in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def child(algo: str, env: str, overrides: dict, total_steps: int) -> dict:
    """One training run in this (fresh) process; returns its memory numbers."""
    import jax

    import jmarl
    from jmarl.memory import tree_bytes
    from jmarl.program import compile_program
    from jmarl.runner import run
    from jmarl.spec import program_spec

    config = jmarl.make_config(algo, env, total_steps=total_steps, **overrides)
    imported = current_rss_kib()
    t0 = time.perf_counter()
    # The runner asks for exactly this program (one seed, no sweep, all devices): the cache hands it over.
    prog = compile_program(program_spec(config, (), 1, len(jax.devices()), None))
    compile_s = time.perf_counter() - t0
    peak_compiled = peak_rss_kib()
    state_info, metrics_info = prog.chunk.out_info
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run(config, seeds=1, out_dir=out, log=lambda line: None, plots=False, checkpoints=False)
        train_s = time.perf_counter() - t0
        rows = sum(1 for _ in (Path(out) / "metrics.jsonl").open())
    return {
        "algo": algo, "env": env, "overrides": overrides, "total_steps": total_steps,
        "env_steps": prog.plan.total_steps, "chunks": prog.plan.num_chunks,
        "updates_per_chunk": prog.plan.updates_per_chunk, "metrics_rows": rows,
        "metrics_bytes": tree_bytes(metrics_info), "state_bytes": tree_bytes(state_info),
        "rss_imported_mib": mib(imported), "peak_compiled_mib": mib(peak_compiled),
        "peak_trained_mib": mib(peak_rss_kib()), "rss_trained_mib": mib(current_rss_kib()),
        "compile_s": round(compile_s, 1), "train_s": round(train_s, 1),
    }


def measure(algo: str, env: str, overrides: dict, total_steps: int) -> dict:
    """Run ``child`` in a fresh interpreter so that no earlier run's memory counts."""
    spec = json.dumps([algo, env, overrides, total_steps])
    proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{algo} on {env} ({total_steps} steps) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def compare(case: str, scale: int, repeats: int, log=print) -> dict:
    algo, env, overrides, short = CASES[case]
    runs = {"short": [], "long": []}
    for r in range(repeats):
        for label, steps in (("short", short), ("long", short * scale)):
            row = measure(algo, env, overrides, steps)
            runs[label].append(row)
            log(f"{case} {label} #{r + 1}: {row['chunks']} chunks, peak {row['peak_trained_mib']} MiB "
                f"(after compile {row['peak_compiled_mib']}), metrics {row['metrics_bytes']} B, {row['train_s']} s")
    peak = {k: max(r["peak_trained_mib"] for r in v) for k, v in runs.items()}
    growth = peak["long"] / peak["short"] - 1.0
    return {
        "case": case, "algo": algo, "env": env, "overrides": overrides, "scale": scale,
        "short": runs["short"], "long": runs["long"],
        "peak_short_mib": peak["short"], "peak_long_mib": peak["long"], "peak_growth": round(growth, 4),
        "metrics_bytes_equal": len({r["metrics_bytes"] for v in runs.values() for r in v}) == 1,
        "within_claim": growth <= CLAIM,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Peak memory: a run of L env steps vs 10 L",
        "",
        "Each run is `jmarl.runner.run` (1 seed, metrics files written, no plots, no checkpoints) in a fresh",
        "process; peak = `ru_maxrss` after training, *after compile* = `ru_maxrss` once the program is compiled.",
        f"The claim: the long run's peak is within {CLAIM:.0%} of the short run's. `python benchmarks/memory.py`",
        "",
        "| case | run | env steps | chunks | metrics per chunk (B) | train state (MiB) | after imports (MiB) "
        "| peak after compile (MiB) | peak after training (MiB) | RSS after training (MiB) | train (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for label in ("short", "long"):
            for r in row[label]:
                lines.append(
                    f"| {row['case']} | {label} | {r['env_steps']:,} | {r['chunks']} | {r['metrics_bytes']:,} | "
                    f"{r['state_bytes'] / 2**20:.1f} | {r['rss_imported_mib']} | {r['peak_compiled_mib']} | "
                    f"{r['peak_trained_mib']} | {r['rss_trained_mib']} | {r['train_s']} |")
    lines += ["", "| case | peak short (MiB) | peak long (MiB) | growth | within 10% | metrics size independent of L |",
              "|---|---:|---:|---:|---|---|"]
    for row in rows:
        lines.append(f"| {row['case']} | {row['peak_short_mib']} | {row['peak_long_mib']} | "
                     f"{row['peak_growth']:+.1%} | {'yes' if row['within_claim'] else 'NO'} | "
                     f"{'yes' if row['metrics_bytes_equal'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--scale", type=int, default=10, help="the long run is this many times the short one")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per length")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(*json.loads(args.child))), flush=True)
        return
    if args.scale < 2 or args.repeats < 1:
        parser.error("--scale must be >= 2 and --repeats >= 1")
    rows = [compare(case, args.scale, args.repeats) for case in args.cases]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "memory.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
