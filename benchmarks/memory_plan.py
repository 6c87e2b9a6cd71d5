"""What one run needs per seed, and how many seeds a GPU holds at once, for the main algorithms and envs.

The train state of one run is measured from its shapes (``jax.eval_shape`` of the learner's init: replay
buffer, parameters, optimiser state, env states), nothing compiled; the replay's bytes per episode come
from ``jmarl.replay.bytes_per_episode``, with the bytes it took before actions were stored as int8
(int32 then). "Seeds at once" is the memory plan's own arithmetic (``jmarl.memory.plan``) for the state
alone on two GPUs as the command-line tools see them (``XLA_PYTHON_CLIENT_MEM_FRACTION`` 0.92 of the
card): an 80 GiB A100/H100 and a 141 GiB H200; the compiled program's temporaries (activations of the
gradient steps) come on top and the runner checks them after compiling.

    python benchmarks/memory_plan.py            # writes benchmarks/results/memory_plan.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

import envs
import jmarl
from jmarl import memory, replay
from jmarl.spec import abstract_state

RESULTS = Path(__file__).parent / "results"
GPUS = {"80 GiB (A100/H100)": 80 * 2**30, "141 GiB (H200)": 141 * 2**30}
FRACTION = float(memory.CLI_FRACTION)
SEEDS = 32

# (algo, env, overrides): the headline command and the papers' main settings
CASES = [
    ("lan", "smax_3m", {}), ("lan", "smax_2s3z", {}), ("lan", "smax_3s5z", {}),
    ("lan", "smax_3s5z", {"buffer_dtype": "bfloat16"}),
    ("iql", "smax_3m", {}), ("qmix", "smax_3m", {}), ("remix", "predator_prey_p2", {}),
    ("qmix", "predator_prey_p2", {}),
    ("dpo", "mpe_simple_spread", {}), ("mappo", "smax_3m", {}), ("tad_ppo", "hallway", {}),
]


def row(algo: str, env: str, overrides: dict) -> dict:
    config = jmarl.make_config(algo, env, **overrides)
    state = abstract_state(config, (), 1)
    per_run = memory.tree_bytes(state)
    out = {"algo": algo, "env": env, "overrides": overrides, "state_bytes": per_run,
           "state_gib": round(per_run / 2**30, 3)}
    if hasattr(config, "buffer_size"):
        spec = envs.make(env).spec
        after = replay.bytes_per_episode(spec, config.buffer_dtype)
        action = replay.action_dtype(spec.num_actions)(0).itemsize
        before = after + spec.episode_limit * spec.num_agents * (4 - action)
        out.update(buffer_size=config.buffer_size, buffer_dtype=config.buffer_dtype,
                   episode_bytes_before=before, episode_bytes=after,
                   replay_bytes=memory.tree_bytes(state.buffer))
    for name, card in GPUS.items():
        mp = memory.plan(config, per_run, SEEDS, 1, None, (int(card * FRACTION), name), host=2**50)
        out[name] = {"at_once": mp.group, "groups": mp.groups}
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Memory per run, and seeds a GPU holds at once",
        "",
        "Train state of one run from its shapes (`jax.eval_shape`, nothing compiled); replay bytes per episode",
        "before (int32 actions) and now (int8); seeds of a 32-seed run a GPU holds at once by the memory plan",
        f"(state only, {FRACTION:.0%} of the card, 90% of that for state), and the groups a chunk takes.",
        "`python benchmarks/memory_plan.py`",
        "",
        "| algo | env | settings | state per run (GiB) | replay episode bytes, before -> now | "
        + " | ".join(f"32 seeds on {name}: at once x groups" for name in GPUS) + " |",
        "|---|---|---|---:|---:|" + "---:|" * len(GPUS),
    ]
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "defaults"
        if "buffer_size" in r:
            settings += f"; buffer {r['buffer_size']:,} {r['buffer_dtype']}"
            episode = f"{r['episode_bytes_before']:,} -> {r['episode_bytes']:,}"
        else:
            episode = "no replay"
        cells = [f"{r[name]['at_once']} x {r[name]['groups']}" for name in GPUS]
        lines.append(f"| {r['algo']} | {r['env']} | {settings} | {r['state_gib']:.3f} | {episode} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    rows = [row(*case) for case in CASES]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory_plan.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "memory_plan.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
