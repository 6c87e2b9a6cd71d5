"""Training throughput side by side with jaxmarl's own baseline scripts (the peer), at equal work, in one run.

The peer is a folder holding jaxmarl's scripts and their harness ``peer_bench.py`` (``--peer``; the
project keeps a copy outside the repository, see docs/benchmarks.md). Its harness supplies
the scripts' own yaml settings and loads a script with its logging stubbed out; this file builds both
training programs, ours at the peer's work settings, and times them the same way in the same process:
compiled apart (``.lower().compile()``), then run in alternation, peer and ours, ``ROUNDS`` times each with
``block_until_ready`` (a change of the machine's load falls on both), best run kept, wall clock and the
process's CPU time, every run reported. Throughputs are env steps per second (one step of
one env copy, all its agents) summed over seeds.

Q-learning: the peer's scripts learn only once flashbax can sample, after BUFFER_BATCH_SIZE updates,
whatever LEARNING_STARTS says, so the peer is timed as the difference between a program of ``warmup +
updates`` updates and one of ``warmup`` updates. Ours first runs a few updates untimed (the buffer then
holds a batch of complete episodes; the benchmark checks that every timed update took its gradient
steps) and is timed on ``updates`` more, by the same compiled program.

XLA's accounting of each compiled program (``hlo_cost.py``: flops, bytes accessed and kernels launched,
loop bodies times their trip counts) is machine-independent evidence of the work each side does: it is
reported per env step (flops, bytes) and per update (kernels, which bound small recurrent networks on a
GPU, where each runs one after another).

JSON (``peer_comparison.json``): ``{"meta": {...}, "cases": [row, ...]}``; a row has ``name, seeds,
updates, date, differences, peer, ours, ratio`` where ``peer`` and ``ours`` hold ``compile_s, run_s,
cpu_s, steps_per_s, cpu_steps_per_s, cost`` and ``ratio`` is ours over the peer (wall, CPU, flops, bytes,
kernels).

    python benchmarks/peer_comparison.py --peer ../shared/peer [--cases ippo_ff_mpe ...] [--seeds 1 4]
    python benchmarks/peer_comparison.py --peer ../shared/peer --quick --out /tmp/peer   # smoke run, tiny sizes
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))  # hlo_cost, run as a script or loaded from a file

import hlo_cost  # noqa: E402

import envs  # noqa: E402
import jmarl  # noqa: E402
from jmarl.program import vmap_runs  # noqa: E402
from jmarl.spec import seed_keys  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PEER_CANDIDATES = (ROOT / ".peer", ROOT.parent / "shared" / "peer")  # where the project keeps its copy
MPE_3 = "mpe_simple_spread_n3"  # jaxmarl's MPE_simple_spread_v3 has 3 agents; our registered name defaults to 5
SPEEDUP_TARGET = 1.5  # at least 1.5x the peer at equal work
# The peer's programs vmapped over several seeds hang on XLA:CPU (jax 0.10: the batched QR of their orthogonal
# initialisers deadlocks the intra-op pool, no thread busy; jmarl's own initialisers avoid QR for this reason),
# so on a CPU only 1 seed is measured unless --seeds asks for more; on a GPU 1 and 32.
GPU_SEEDS = (1, 32)


class PeerMissing(RuntimeError):
    pass


def register_envs() -> None:
    """The 3-agent simple spread under its own name, so that a config can ask for it (runtime only)."""
    if MPE_3 not in envs.names():
        envs.register(MPE_3, "envs.mpe:SimpleSpread", "MPE simple spread with 3 agents (jaxmarl's v3)", num_agents=3)


def find_peer(folder: str | None) -> Path:
    """The peer folder given, else the first of ``PEER_CANDIDATES`` that holds ``peer_bench.py``."""
    candidates = [Path(folder)] if folder else list(PEER_CANDIDATES)
    for path in candidates:
        if (path / "peer_bench.py").is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise PeerMissing(f"the peer's scripts are not there: no peer_bench.py in {looked}; pass --peer FOLDER (a copy "
                      "of jaxmarl's baseline scripts with peer_bench.py, see docs/benchmarks.md)")


def load_peer(folder: Path):
    """Import the peer's harness (it stubs hydra, omegaconf and wandb; the scripts need jaxmarl, distrax,
    flashbax and gymnax importable)."""
    spec = importlib.util.spec_from_file_location("peer_bench", folder / "peer_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.stub_modules()
    return module


# ----- the cases -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    peer_case: str  # a key of peer_bench.CASES
    algo: str
    env: str
    overrides: dict[str, Any]  # ours, to the peer's work settings
    updates: int  # timed updates per program on CPU
    gpu_updates: int  # timed updates per program on a GPU (more: an update takes milliseconds there)
    differences: tuple[str, ...]
    q_learning: bool = False


BOOTSTRAP = ("the critic also evaluates the observation after every step (exact bootstrap where the time limit "
             "truncates an episode; the peer treats the limit as termination): one more critic forward pass per "
             "agent-step in the rollout")
MINIBATCH = ("minibatches split the envs (whole sequences per env) where the peer shuffles agent-sequences: the "
             "same samples per gradient step")
ANNEAL = "constant learning rate vs the peer's linear annealing: no change in work"
ID_INPUT = "agent id appended to the observation (ours, needed with a network shared by the agents): a few inputs"
Q_DIFFS = (
    "ours samples 32 whole episodes padded to the episode limit (smax_3m: 100 steps + the last observation) where "
    "the peer samples 32 stored 128-step rollout segments: about 20% fewer agent-steps per gradient step for us",
    "agent input: observation + previous action + agent id (pymarl2's) where the peer feeds observation + agent id",
    "ours keeps the replay as an episode buffer in the training state; the peer's flashbax buffer holds rollout "
    "segments (5,000 x 128 steps per seed, ours 5,000 episodes)",
)

IPPO_FF_MPE = dict(num_envs=16, num_steps=128, epochs=4, num_minibatches=4, hidden_dim=64, num_layers=2,
                   recurrent=False, share_params=True, layer_norm=False, lr=2.5e-4, max_grad_norm=0.5, clip=0.2,
                   value_clip=0.2, ent_coef=0.01)
IPPO_RNN_SMAX = dict(num_envs=128, num_steps=128, epochs=4, num_minibatches=4, hidden_dim=128, num_layers=3,
                     shared_layers=2, recurrent=True, share_params=True, layer_norm=False, lr=0.004, max_grad_norm=0.25,
                     clip=0.05, value_clip=0.05, ent_coef=0.01)
MAPPO_RNN_SMAX = dict(num_envs=128, num_steps=128, epochs=4, num_minibatches=4, hidden_dim=128, num_layers=2,
                      recurrent=True, layer_norm=False, value_norm=False, huber_delta=0.0, lr=0.002, max_grad_norm=0.25,
                      clip=0.2, value_clip=0.2, ent_coef=0.0)
Q_SMAX = dict(num_envs=16, num_steps=128, train_steps=8, updates_per_episode=0.0, target_update_updates=0,
              batch_size=32, buffer_size=5000, hidden_dim=512, td_lambda=0.0, lr=5e-5, max_grad_norm=10.0)
QMIX_SMAX = dict(Q_SMAX, mixing_embed_dim=64, hypernet_dim=256)
IQL_SMAX = Q_SMAX

CASES = {c.name: c for c in [
    Case("ippo_ff_mpe", "ippo_ff_mpe", "ippo", MPE_3, IPPO_FF_MPE, 32, 128, (
        "ReLU (ours) vs tanh: one elementwise op per unit", ID_INPUT, MINIBATCH, BOOTSTRAP, ANNEAL)),
    Case("ippo_rnn_smax_3m", "ippo_rnn_smax", "ippo", "smax_3m", IPPO_RNN_SMAX, 1, 8, (
        "actor and critic share Dense + GRU and have a Dense 128 each, as the peer's (shared_layers=2)",
        ID_INPUT, MINIBATCH, BOOTSTRAP, ANNEAL)),
    Case("mappo_rnn_smax_3m", "mappo_rnn_smax", "mappo", "smax_3m", MAPPO_RNN_SMAX, 1, 8, (
        "our mappo is TAD-PPO without attention: actor and critic each Dense, GRU, Dense, output; LayerNorm, "
        "ValueNorm and the Huber value loss off to match the peer's plain networks and loss",
        "the actor sees the agent id as well (the peer's actor does not)", MINIBATCH, BOOTSTRAP, ANNEAL)),
    Case("qmix_rnn_smax_3m", "qmix_rnn_smax", "qmix", "smax_3m", QMIX_SMAX, 4, 16, Q_DIFFS + (
        "ours: one-step double-Q targets (td_lambda 0) and the mixer's widths set to the peer's (64, hypernet 256)",
    ), q_learning=True),
    Case("iql_rnn_smax_3m", "iql_rnn_smax", "iql", "smax_3m", IQL_SMAX, 4, 16, Q_DIFFS + (
        "ours is LAN without the centralised value, set to a fixed 8 gradient steps per update "
        "(updates_per_episode 0) and one-step targets",
    ), q_learning=True),
]}

# --quick: the same networks on tiny batches, one update; a smoke run of the pipeline, not a measurement (the
# widths stay: the peer's MAPPO builds its initial carry at width 128 whatever its config says)
QUICK_OURS = dict(num_envs=4, num_steps=8, epochs=1, num_minibatches=2, batch_size=2, buffer_size=8)
QUICK_PEER = {"NUM_ENVS": 4, "NUM_STEPS": 8, "UPDATE_EPOCHS": 1, "NUM_MINIBATCHES": 2, "BUFFER_BATCH_SIZE": 2,
              "BUFFER_SIZE": 64}
ROUNDS = 3  # timed runs of each program, best kept
MAX_FILL_RUNS = 64  # untimed runs that may fill our replay before timing (16 x 128 steps hold ~20 episodes)


# ----- timing ----------------------------------------------------------------------------------------


def compile_timed(fn, *args) -> tuple[Any, float]:
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def run_once(compiled, args: tuple) -> tuple[Any, float, float]:
    """(output, wall seconds, process CPU seconds) of one run."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - t0, time.process_time() - c0


@dataclasses.dataclass
class Timed:
    """A compiled program, its argument, and the wall and CPU seconds of each timed run."""

    compiled: Any
    args: tuple
    compile_s: float
    walls: list[float] = dataclasses.field(default_factory=list)
    cpus: list[float] = dataclasses.field(default_factory=list)

    def run(self) -> Any:
        out, wall, cpu = run_once(self.compiled, self.args)
        self.walls.append(wall)
        self.cpus.append(cpu)
        return out


def side(steps: int, compile_s: float, walls: list[float], cpus: list[float], cost: hlo_cost.HloCost,
         updates: int) -> dict[str, Any]:
    """One program's numbers: env steps per second (best run), and XLA's work per env step and per update."""
    return {"compile_s": round(compile_s, 2), "run_s": [round(w, 3) for w in walls],
            "cpu_s": [round(c, 3) for c in cpus],
            "steps_per_s": round(steps / min(walls), 1), "cpu_steps_per_s": round(steps / min(cpus), 1),
            "cost": {"flops_per_step": cost.flops / steps, "bytes_per_step": cost.bytes / steps,
                     "kernels_per_update": cost.kernels / updates, "while_loops": cost.while_loops,
                     "unknown_trip_counts": cost.unknown_trip_counts}}


def peer_programs(pb, case: Case, seeds: int, updates: int, quick: bool, modules: dict) -> tuple[list[Timed], dict]:
    """The peer's compiled program(s): one of ``updates`` updates; for Q-learning also the warm-up alone,
    whose time and work are subtracted (see the module docstring)."""
    spec = pb.CASES[case.peer_case]
    if spec["script"] not in modules:
        modules[spec["script"]] = pb.load(spec["script"])
    mod = modules[spec["script"]]
    cfg = copy.deepcopy(spec["cfg"])
    cfg["MAP_NAME"] = case.env.removeprefix("smax_") if case.env.startswith("smax_") else "3m"
    if quick:
        cfg.update({k: v for k, v in QUICK_PEER.items() if k in cfg})
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    warmup = cfg["BUFFER_BATCH_SIZE"] + 1 if case.q_learning else 0

    def program(n_updates: int) -> Timed:
        c = copy.deepcopy(cfg)
        c["TOTAL_TIMESTEPS"] = n_updates * c["NUM_ENVS"] * c["NUM_STEPS"]
        if case.q_learning:
            c["LEARNING_STARTS"] = 0
            env, _ = mod.env_from_config(copy.deepcopy(c))
            train = mod.make_train(c, env)
        else:
            train = mod.make_train(c)
        return _timed(jax.vmap(train), keys)

    programs = [program(warmup + updates)] + ([program(warmup)] if warmup else [])
    return programs, {"warmup_updates": warmup, "num_envs": cfg["NUM_ENVS"], "num_steps": cfg["NUM_STEPS"],
                      "steps": seeds * updates * cfg["NUM_ENVS"] * cfg["NUM_STEPS"]}


def _timed(fn, *args) -> Timed:
    compiled, compile_s = compile_timed(fn, *args)
    return Timed(compiled, args, compile_s)


def peer_side(programs: list[Timed], info: dict, updates: int) -> dict[str, Any]:
    full = programs[0]
    cost = hlo_cost.compiled_cost(full.compiled)
    walls, cpus = full.walls, full.cpus
    if len(programs) > 1:  # the cost of `updates` updates that all learn
        base = programs[1]
        walls = [w - min(base.walls) for w in walls]
        cpus = [c - min(base.cpus) for c in cpus]
        base_cost = hlo_cost.compiled_cost(base.compiled)
        cost = dataclasses.replace(cost, flops=cost.flops - base_cost.flops, bytes=cost.bytes - base_cost.bytes,
                                   kernels=cost.kernels - base_cost.kernels)
    row = side(info["steps"], full.compile_s, walls, cpus, cost, updates)
    row.update(warmup_updates=info["warmup_updates"], num_envs=info["num_envs"], num_steps=info["num_steps"])
    return row


def training_program(algo: Any, updates: int):
    """``updates`` collect-and-learn iterations, mapped over seeds as the runner maps its runs (a vmap; one
    seed unbatched), no evaluation (like the peer's loop)."""

    def run(state):
        state, metrics = jax.lax.scan(lambda s, _: algo.update(s), state, None, updates)
        return state, jax.tree.map(jnp.mean, metrics)

    return vmap_runs(run)


def our_program(case: Case, seeds: int, updates: int, quick: bool) -> tuple[Timed, dict]:
    """Our compiled program at the peer's settings and its starting state (for Q-learning, after untimed runs
    of the same program that leave every seed's buffer holding a batch of complete episodes)."""
    overrides = dict(case.overrides)
    if quick:
        config_fields = {f.name for f in dataclasses.fields(jmarl.make_config(case.algo, case.env))}
        overrides.update({k: v for k, v in QUICK_OURS.items() if k in config_fields})
    config = jmarl.make_config(case.algo, case.env, **overrides)
    algo = jmarl.make_algorithm(config)
    state = jax.jit(jax.vmap(algo.init))(seed_keys(0, seeds))
    timed = _timed(training_program(algo, updates), state)
    if case.q_learning:
        for _ in range(MAX_FILL_RUNS):
            if int(state.buffer.num_complete.min()) >= config.batch_size:
                break
            state, _ = jax.block_until_ready(timed.compiled(state))
        timed.args = (state,)
    return timed, {"overrides": overrides, "num_envs": config.num_envs,
                   "num_steps": algo.steps_per_update // config.num_envs,
                   "steps": seeds * updates * algo.steps_per_update, "min_grad_steps": updates * config.train_steps
                   if case.q_learning else 0}


def our_side(timed: Timed, info: dict, last: Any, updates: int, case: Case) -> dict[str, Any]:
    if case.q_learning:  # every timed update learned (each run starts from the same state)
        learned = int(last[0].grad_steps.min()) - int(timed.args[0].grad_steps.min())
        assert learned >= info["min_grad_steps"], f"{case.name}: {learned} gradient steps in {updates} updates"
    row = side(info["steps"], timed.compile_s, timed.walls, timed.cpus, hlo_cost.compiled_cost(timed.compiled),
               updates)
    row.update(overrides=info["overrides"], num_envs=info["num_envs"], num_steps=info["num_steps"])
    return row


def ratio(ours: dict, peer: dict) -> dict[str, float]:
    """Ours over the peer: throughput (higher is faster) and XLA's work (lower is less)."""
    oc, pc = ours["cost"], peer["cost"]
    div = lambda a, b: round(a / b, 3) if b else float("nan")  # noqa: E731
    return {"steps_per_s": div(ours["steps_per_s"], peer["steps_per_s"]),
            "cpu_steps_per_s": div(ours["cpu_steps_per_s"], peer["cpu_steps_per_s"]),
            "flops_per_step": div(oc["flops_per_step"], pc["flops_per_step"]),
            "bytes_per_step": div(oc["bytes_per_step"], pc["bytes_per_step"]),
            "kernels_per_update": div(oc["kernels_per_update"], pc["kernels_per_update"])}


def measure(pb, case: Case, seeds: int, quick: bool, modules: dict) -> dict[str, Any]:
    """Both sides compiled first, then timed in alternation (peer, ours, peer, ours, ...), so that a change
    of the machine's load during the measurement falls on both."""
    updates = 1 if quick else case.gpu_updates if jax.default_backend() != "cpu" else case.updates
    peer_progs, peer_info = peer_programs(pb, case, seeds, updates, quick, modules)
    ours, our_info = our_program(case, seeds, updates, quick)
    last = None
    for _ in range(ROUNDS):
        for program in peer_progs:
            program.run()
        last = ours.run()
    peer = peer_side(peer_progs, peer_info, updates)
    mine = our_side(ours, our_info, last, updates, case)
    r = ratio(mine, peer)
    return {"name": case.name, "seeds": seeds, "updates": updates, "quick": quick,
            "differences": list(case.differences), "peer": peer, "ours": mine, "ratio": r,
            "target": SPEEDUP_TARGET, "target_met": bool(r["steps_per_s"] >= SPEEDUP_TARGET)}


# ----- report ----------------------------------------------------------------------------------------


def markdown(rows: list[dict], meta: dict) -> str:
    quick = " --quick (a smoke run on tiny sizes, not a measurement)" if meta["quick"] else ""
    out = ["# Training throughput side by side with jaxmarl's baseline scripts\n",
           f"{meta['device']}, jax {meta['jax']}, {meta['cpus']} CPU cores, {meta['date']}; "
           f"written by benchmarks/peer_comparison.py{quick}. Peer: {meta['peer']}.\n",
           f"Env steps per second summed over seeds, best of {ROUNDS} runs of each compiled program (every run in "
           "the JSON), the peer's and ours run in alternation in one process. `CPU` divides by the process's CPU "
           "time instead of wall time. XLA columns are from the compiled programs (benchmarks/hlo_cost.py: loop "
           "bodies times their trip counts): GFLOP per 1,000 env steps, MB accessed per env step, kernels launched "
           "per update; `ours / peer` below 1 means less work. The Q-learning rows time updates that all learn "
           "(see the module docstring).\n",
           "| case | seeds | peer steps/s | ours steps/s | ours / peer | ours / peer (CPU) | compile s peer / ours "
           "| GFLOP per 1k steps peer / ours | MB per step peer / ours | kernels per update peer / ours | "
           f"{SPEEDUP_TARGET}x | date |",
           "|---|---:|---:|---:|---:|---:|---|---|---|---|---|---|"]
    for r in rows:
        p, o, q = r["peer"], r["ours"], r["ratio"]
        pc, oc = p["cost"], o["cost"]
        out.append(
            f"| {r['name']} | {r['seeds']} | {p['steps_per_s']:,.0f} | {o['steps_per_s']:,.0f} | "
            f"**{q['steps_per_s']:.2f}** | {q['cpu_steps_per_s']:.2f} | {p['compile_s']:.0f} / {o['compile_s']:.0f} | "
            f"{pc['flops_per_step'] / 1e6:,.1f} / {oc['flops_per_step'] / 1e6:,.1f} | "
            f"{pc['bytes_per_step'] / 1e6:,.2f} / {oc['bytes_per_step'] / 1e6:,.2f} | "
            f"{pc['kernels_per_update']:,.0f} / {oc['kernels_per_update']:,.0f} | "
            f"{'met' if r['target_met'] else 'not met'} | {r.get('date', meta['date'])} |")
    out.append("\n## Work settings and what still differs\n")
    seen = set()
    for r in rows:
        if r["name"] in seen:
            continue
        seen.add(r["name"])
        o = r["ours"]
        sets = ", ".join(f"{k}={v}" for k, v in o["overrides"].items())
        out.append(f"- **{r['name']}**: {o['num_envs']} envs x {o['num_steps']} steps per update; ours with `{sets}`.")
        out += [f"  - {d}" for d in r["differences"]]
    return "\n".join(out) + "\n"


def previous_rows(path: Path, meta: dict) -> list[dict]:
    """The rows of an earlier results file measured on the same kind of machine (``--update`` keeps those
    not measured again)."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    same = all(old["meta"].get(k) == meta[k] for k in ("backend", "device", "cpus", "quick"))
    return [r for r in old["cases"] if r["name"] in CASES] if same else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", default=None, help="folder with jaxmarl's scripts and peer_bench.py "
                                                f"(default: the first of {', '.join(map(str, PEER_CANDIDATES))})")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seed counts to measure (default: 1 on a CPU, 1 and 32 on a GPU)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one update: a smoke run, not a measurement")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--update", action="store_true", help="keep the rows of the results file in --out that this "
                                                        "run does not measure again (same kind of machine)")
    a = p.parse_args(argv)
    try:
        folder = find_peer(a.peer)
    except PeerMissing as e:
        print(f"peer_comparison.py: {e}", file=sys.stderr)
        return 2
    pb = load_peer(folder)
    register_envs()
    gpu = jax.default_backend() != "cpu"
    rows, modules = [], {}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "peer_comparison_quick" if a.quick else "peer_comparison"
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "cpus": os.cpu_count(), "date": datetime.date.today().isoformat(), "quick": a.quick,
            "peer": "jaxmarl's baseline scripts at their own yaml settings (peer_bench.py)"}
    kept = previous_rows(out / f"{stem}.json", meta) if a.update else []
    for name in a.cases:
        case = CASES[name]
        for seeds in a.seeds or (GPU_SEEDS if gpu and not a.quick else (1,)):
            row = measure(pb, case, seeds, a.quick, modules)
            row["date"] = meta["date"]
            rows.append(row)
            print(json.dumps({"name": name, "seeds": seeds, "peer": row["peer"]["steps_per_s"],
                              "ours": row["ours"]["steps_per_s"], "ratio": row["ratio"]}), flush=True)
            new = {(r["name"], r["seeds"]) for r in rows}
            merged = sorted([r for r in kept if (r["name"], r["seeds"]) not in new] + rows,
                            key=lambda r: (list(CASES).index(r["name"]), r["seeds"]))
            (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "cases": merged}, indent=1) + "\n")
            (out / f"{stem}.md").write_text(markdown(merged, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
