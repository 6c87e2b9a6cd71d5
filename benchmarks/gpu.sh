#!/usr/bin/env bash
# One prepared GPU measurement run: the headline LAN run, then jaxmarl's own baselines (the peer, .peer/)
# beside jmarl at equal work, each step under its own timeout and all of them inside one time budget.
#
#     bash benchmarks/gpu.sh OUTDIR [--tiny]
#
# Run from the project root. Needs in the checkout (ignored folders that travel with it):
#   .peer/        a copy of the peer harness (peer_bench.py and jaxmarl's baseline scripts)
#   .whl/         the wheels the GPU image lacks (jaxmarl, distrax, tfp-nightly, ...), installed with
#                 --no-deps into $SITE; .whl/extra/ holds their dependencies that an image may lack
#                 (matplotlib, jaxtyping, six, ...): each is installed only when the image cannot find it.
# Without .whl/ nothing is installed and the peer steps are skipped.
#
# Environment: PYTHON (python3), SITE (/tmp/site), GPU_BUDGET_S (420; --tiny 3000): seconds from the
# start within which every step must end (a step that no longer fits is skipped, one that fits only in
# part gets the time left as its timeout); WHEELS_INSTALL=always|auto|never (always; --tiny: auto, which
# skips the install when jaxmarl, distrax, flashbax and gymnax already import).
#
# OUTDIR gets env.txt, steps.txt (one line per step: exit status, wall seconds, timeout), <step>.log,
# peer.jsonl and ours.jsonl (one JSON line per measurement), headline_run/ and headline_memory.json.
# --tiny: the same steps at tiny sizes, a rehearsal on a CPU (a few minutes on 2 cores), not a measurement.

set -u

if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: bash benchmarks/gpu.sh OUTDIR [--tiny]" >&2
    exit 2
fi
TINY=0
[[ ${2:-} == --tiny ]] && TINY=1
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
T_START=$(date +%s%N)
# --tiny: timeouts x3 (a 2-core CPU compiles these programs in 30-60 s, like the GPU, but runs them slower)
if ((TINY)); then BUDGET=${GPU_BUDGET_S:-3000} TSCALE=3; else BUDGET=${GPU_BUDGET_S:-420} TSCALE=1; fi
: > "$OUT/steps.txt"

now_ms() { echo $(( ($(date +%s%N) - T_START) / 1000000 )); }
secs() { printf '%d.%d' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }  # milliseconds -> seconds, one decimal

note() { echo "$*" | tee -a "$OUT/steps.txt"; }

# fits NEEDS NAME...: true when NEEDS seconds of the budget are left (10 s kept for the kill grace and the
# summary); otherwise a skip line for each NAME.
fits() {
    local needs=$1 name
    shift
    local left=$(( BUDGET - $(now_ms) / 1000 - 10 ))
    (( left >= needs )) && return 0
    for name in "$@"; do
        note "$(printf '%-16s skipped: %ss of the budget left, needs %ss' "$name" "$((left > 0 ? left : 0))" "$needs")"
    done
    return 1
}

# run_step NAME TIMEOUT_S NEEDS_S CMD...: runs CMD under `timeout` (TIMEOUT_S, cut to the budget left),
# output to OUTDIR/NAME.log, a status line to steps.txt; skipped when less than NEEDS_S of the budget is left.
run_step() {
    local name=$1 limit=$(($2 * TSCALE)) needs=$3
    shift 3
    fits "$needs" "$name" || return
    local left=$(( BUDGET - $(now_ms) / 1000 - 10 ))
    (( limit > left )) && limit=$left
    local t0
    t0=$(now_ms)
    echo "[$(date +%T)] $name (timeout ${limit}s): $*"
    timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local dt=$(( $(now_ms) - t0 ))
    local flag=""
    (( rc == 124 || rc == 137 )) && flag="  TIMED OUT"
    printf '%-16s rc=%-3s wall_s=%-6s timeout_s=%s%s\n' "$name" "$rc" "$(secs "$dt")" "$limit" "$flag" \
        | tee -a "$OUT/steps.txt"
}

# ----- wheels -------------------------------------------------------------------------------------------

PEER_OK=1
importable() { "$PY" -c 'import jaxmarl, distrax, flashbax, gymnax' > /dev/null 2>&1; }
MODE=${WHEELS_INSTALL:-$( ((TINY)) && echo auto || echo always)}
t0=$(now_ms)
if [[ ! -d .whl ]] || ! compgen -G '.whl/*.whl' > /dev/null; then
    export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
    if importable; then
        note "install         skipped: no .whl/ wheels folder; jaxmarl, distrax, flashbax, gymnax import already"
    else
        PEER_OK=0
        note "install         skipped: no .whl/ wheels folder: the peer steps are skipped (jmarl's SMAX needs jaxmarl too)"
    fi
elif [[ $MODE == never ]] || { [[ $MODE == auto ]] && PYTHONPATH=$PWD importable; }; then
    export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
    if importable; then
        note "install         skipped (WHEELS_INSTALL=$MODE): $PY imports jaxmarl, distrax, flashbax, gymnax already"
    else
        PEER_OK=0
        note "install         skipped (WHEELS_INSTALL=$MODE): jaxmarl, distrax, flashbax or gymnax missing: the peer steps are skipped"
    fi
else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
        > "$OUT/install.log" 2>&1
    rc=$?
    export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
    # Dependencies of those wheels that the image may lack: install a wheel only when its module is not
    # found (so nothing the image has is shadowed). seaborn (gymnax imports it, only its render code uses
    # it; it would bring pandas) becomes an empty module when absent.
    missing=$("$PY" - <<'EOF' 2>> "$OUT/install.log"
import importlib.util, pathlib
modules = {"jaxtyping": "jaxtyping", "wadler_lindig": "wadler_lindig", "six": "six", "attrs": "attr",
           "wrapt": "wrapt", "cloudpickle": "cloudpickle", "matplotlib": "matplotlib", "contourpy": "contourpy",
           "cycler": "cycler", "fonttools": "fontTools", "kiwisolver": "kiwisolver", "packaging": "packaging",
           "pillow": "PIL", "pyparsing": "pyparsing", "python_dateutil": "dateutil",
           "safetensors": "safetensors"}
for wheel in sorted(pathlib.Path(".whl/extra").glob("*.whl")):
    dist = wheel.name.split("-")[0].lower()
    if dist in modules and importlib.util.find_spec(modules[dist]) is None:
        print(wheel)
EOF
)
    if [[ -n $missing ]]; then
        # shellcheck disable=SC2086
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" $missing \
            >> "$OUT/install.log" 2>&1 || rc=$?
    fi
    if ! "$PY" -c 'import seaborn' > /dev/null 2>&1; then
        mkdir -p "$SITE/seaborn" && echo '"""Empty stand-in: only render code uses seaborn."""' > "$SITE/seaborn/__init__.py"
        missing="$missing seaborn(stub)"
    fi
    printf '%-16s rc=%-3s wall_s=%-6s extra:%s\n' install "$rc" "$(secs $(( $(now_ms) - t0 )))" \
        "$(echo " ${missing:-none}" | sed 's#\.whl/extra/##g; s#-[^ ]*\.whl##g' | tr '\n' ' ')" | tee -a "$OUT/steps.txt"
    importable || PEER_OK=0
fi
[[ -f .peer/peer_bench.py ]] || { PEER_OK=0; note "peer            skipped: no .peer/peer_bench.py"; }

# ----- environment --------------------------------------------------------------------------------------

{
    echo "date: $(date -u +%FT%TZ)  tiny: $TINY  budget_s: $BUDGET  python: $PY  PYTHONPATH: $PYTHONPATH"
    git log -1 --format='commit: %H %s' 2>/dev/null
    git status --short 2>/dev/null | sed 's/^/changed: /'
    command -v nvidia-smi > /dev/null && timeout 30 nvidia-smi
    timeout 90 "$PY" -c 'import jax; print(jax.devices(), jax.__version__)' 2>&1
    timeout 60 "$PY" -c '
import importlib.metadata as m
for p in ("jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "numpy", "jaxmarl", "distrax", "flashbax",
          "gymnax", "tfp-nightly", "matplotlib", "jaxtyping"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "absent")' 2>&1
} > "$OUT/env.txt" 2>&1
echo "env.txt: $(grep -m1 '^\[.*Device' "$OUT/env.txt" | head -c 200)"

# ----- our side of the comparison: the learner at the peer's settings -----------------------------------
# The settings are benchmarks/peer_comparison.py's (MAPPO_GRU_SMAX, IPPO_GRU_SMAX; there for QMIX), the
# program its training_program (a scan of collect-and-learn updates vmapped over seeds, no evaluation,
# like the peer's loop), compiled apart and run twice like peer_bench.py. (benchmarks/train_throughput.py
# cannot set the boolean switches through --set, and times evaluation and the raw env besides.)

cat > "$OUT/ours_bench.py" <<'EOF'
"""jmarl at the peer's settings: compile apart, run twice, one JSON line (written by benchmarks/gpu.sh)."""
import argparse
import json
import sys
import time

sys.path.insert(0, "benchmarks")
import jax  # noqa: E402
import peer_comparison as pc  # noqa: E402

import jmarl  # noqa: E402
from jmarl.runner import seed_keys  # noqa: E402

# peer: baselines/QLearning/config/alg/ql_rnn_smax.yaml (16 x 128, 8 gradient steps of 32 sequences,
# agent GRU 512, mixer embedding 64, hypernet 256); our buffer holds 64 episodes (its size does not change
# the work per update)
QMIX = dict(num_envs=16, num_steps=128, train_steps=8, batch_size=32, hidden_dim=512, mixing_embed_dim=64,
            hypernet_dim=256, buffer_size=64)
CASES = {"mappo": pc.MAPPO_GRU_SMAX, "ippo": pc.IPPO_GRU_SMAX, "qmix": QMIX}
TINY = {"mappo": pc.QUICK, "ippo": pc.QUICK,
        "qmix": dict(num_envs=2, num_steps=16, train_steps=1, batch_size=4, buffer_size=8, hidden_dim=32)}

p = argparse.ArgumentParser()
p.add_argument("algo", choices=list(CASES))
p.add_argument("--env", default="smax_3m")
p.add_argument("--seeds", type=int, default=1)
p.add_argument("--updates", type=int, default=4)
p.add_argument("--tiny", action="store_true")
p.add_argument("--out", default="")
a = p.parse_args()

overrides = {**CASES[a.algo], **(TINY[a.algo] if a.tiny else {})}
config = jmarl.make_config(a.algo, a.env, **overrides)
algo = jmarl.make_algorithm(config)
state = jax.block_until_ready(jax.jit(jax.vmap(algo.init))(seed_keys(0, a.seeds)))
program, compile_s = pc.compile_timed(pc.training_program(algo, a.updates), state)
fill_runs = 0
if hasattr(state, "buffer"):  # off-policy: every timed update learns (the peer_bench warm-up, our way)
    while int(state.buffer.num_complete.min()) < config.batch_size:
        state, _ = jax.block_until_ready(program(state))
        fill_runs += 1
runs = []
for _ in range(2):
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(program(state))
    runs.append(time.perf_counter() - t0)
steps = a.updates * algo.steps_per_update
row = {"case": f"{a.algo}_{a.env}", "algo": a.algo, "env": a.env, "seeds": a.seeds, "updates": a.updates,
       "num_envs": config.num_envs, "num_steps": getattr(algo, "num_steps", config.num_steps),
       "env_steps_per_run": steps, "fill_runs": fill_runs, "compile_s": round(compile_s, 2),
       "run_s": [round(r, 3) for r in runs], "steps_per_s": round(steps * a.seeds / min(runs), 1),
       "overrides": overrides, "tiny": a.tiny, "device": str(jax.devices()[0]), "jax": jax.__version__}
print(json.dumps(row), flush=True)
if a.out:
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")
EOF

# The peer at tiny sizes (--tiny only): peer_bench.py's own main() with its cases' settings shrunk.
# A full run calls .peer/peer_bench.py as it is, at the peer's own settings.
cat > "$OUT/peer_tiny.py" <<'EOF'
import sys
sys.path.insert(0, ".peer")
import peer_bench as pb
# (the MAPPO script's GRU width is fixed at 128 in places: the on-policy networks keep their size)
small = {"NUM_STEPS": 16, "UPDATE_EPOCHS": 1, "HIDDEN_SIZE": 32, "NUM_EPOCHS": 1, "BUFFER_BATCH_SIZE": 4, "MIXER_EMBEDDING_DIM": 8, "MIXER_HYPERNET_HIDDEN_DIM": 16}
for case in pb.CASES.values():
    case["cfg"].update({k: v for k, v in small.items() if k in case["cfg"]})
sys.argv = ["peer_bench.py"] + sys.argv[1:]
pb.main()
EOF

peer() {  # peer NAME TIMEOUT NEEDS CASE ARGS...
    local name=$1 limit=$2 needs=$3
    shift 3
    if ((!PEER_OK)); then note "$(printf '%-16s skipped: the peer needs jaxmarl, distrax, flashbax, gymnax' "$name")"; return; fi
    if ((TINY)); then
        run_step "$name" "$limit" "$needs" "$PY" "$OUT/peer_tiny.py" "$@" --out "$OUT/peer.jsonl"
    else
        run_step "$name" "$limit" "$needs" "$PY" .peer/peer_bench.py "$@" --out "$OUT/peer.jsonl"
    fi
}

ours() {  # ours NAME TIMEOUT NEEDS ALGO ARGS...
    local name=$1 limit=$2 needs=$3
    shift 3
    local tiny=()
    ((TINY)) && tiny=(--tiny)
    run_step "$name" "$limit" "$needs" "$PY" "$OUT/ours_bench.py" "$@" "${tiny[@]}" --out "$OUT/ours.jsonl"
}

# ----- the steps ----------------------------------------------------------------------------------------
# Timeouts (s) are for the H200, where compiling takes about 30-60 s a program; updates are kept small (one
# 1-seed MAPPO update is 16,384 env steps, about 0.3 s there). NEEDS: the least budget worth starting with.

if ((TINY)); then
    HEADLINE=(--algo lan --env smax_3m --seeds 2 --total-steps 400 --set buffer_size=64 --set batch_size=8
              --set eval_episodes=4 --set eval_every=2)
    # (the peer's MAPPO vmapped over 2 seeds stalls on jax 0.10.2's CPU backend: the program never
    # completes, no thread busy; it ran on jax 0.11.2: its multi-seed step runs 1 seed here)
    U1=1 U32=1 UQ=1 PEER_ENVS=(--envs 4) PEER_QENVS=(--envs 2) SEEDS32=2 PEER_SEEDS32=1
else
    # 3 chunks of 50 updates x 200 env steps; no checkpoints: with the replay buffers they would be over
    # 100 GiB (the disk has 64) and come back in OUTDIR
    HEADLINE=(--algo lan --env smax_3s5z --seeds 32 --total-steps 30000)
    U1=10 U32=4 UQ=16 PEER_ENVS=() PEER_QENVS=() SEEDS32=32 PEER_SEEDS32=32
fi

# a. the headline run (the runner writes its memory report where JMARL_MEMORY_REPORT says)
run_step headline 200 60 env JMARL_MEMORY_REPORT="$OUT/headline_memory.json" \
    "$PY" experiments/run.py "${HEADLINE[@]}" --no-plots --no-checkpoints --out "$OUT/headline_run"

# a2. the headline run as an 80 GiB card would plan it (JMARL_DEVICE_MEMORY: 0.92 x 80 GiB): groups through
# host memory, 1 chunk
if ((TINY)); then
    LIMIT=$("$PY" -c 'import jmarl; from jmarl.program import abstract_state; from jmarl.memory import tree_bytes
c = jmarl.make_config("lan", "smax_3m", buffer_size=2000, batch_size=8, eval_episodes=4, eval_every=2)
print(int(1.5 * tree_bytes(abstract_state(c, (), 1))))' 2>/dev/null)
    GROUPED=("${HEADLINE[@]}" --set buffer_size=2000)  # state, not temporaries, is most of a run
else
    LIMIT=73.6GiB
    GROUPED=(--algo lan --env smax_3s5z --seeds 32 --total-steps 10000)
fi
run_step grouped 180 120 env JMARL_DEVICE_MEMORY="$LIMIT" JMARL_MEMORY_REPORT="$OUT/grouped_memory.json" \
    "$PY" experiments/run.py "${GROUPED[@]}" --no-plots --no-checkpoints --out "$OUT/grouped_run"

# b. the peer and jmarl side by side, 1 seed, smax_3m; a pair starts only when both of its steps fit
if fits 100 peer_mappo_1 ours_mappo_1; then
    peer peer_mappo_1 100 45 mappo_rnn_smax --map 3m --updates "$U1" --seeds 1 "${PEER_ENVS[@]}"
    ours ours_mappo_1 100 45 mappo --updates "$U1" --seeds 1
fi
if fits 100 peer_ippo_1 ours_ippo_1; then
    peer peer_ippo_1 100 45 ippo_rnn_smax --map 3m --updates "$U1" --seeds 1 "${PEER_ENVS[@]}"
    ours ours_ippo_1 100 45 ippo --updates "$U1" --seeds 1
fi
# the peer compiles two programs here (33 + UQ updates and 33, see peer_bench.py)
if fits 150 peer_qmix_1 ours_qmix_1; then
    peer peer_qmix_1 150 90 qmix_rnn_smax --map 3m --updates "$UQ" --seeds 1 "${PEER_QENVS[@]}"
    ours ours_qmix_1 110 50 qmix --updates "$UQ" --seeds 1
fi

# c. while the budget lasts: MAPPO at 32 seeds
if fits 110 peer_mappo_32 ours_mappo_32; then
    peer peer_mappo_32 100 50 mappo_rnn_smax --map 3m --updates "$U32" --seeds "$PEER_SEEDS32" "${PEER_ENVS[@]}"
    ours ours_mappo_32 100 50 mappo --updates "$U32" --seeds "$SEEDS32"
fi

# ----- summary ------------------------------------------------------------------------------------------

echo
echo "== $OUT/steps.txt (total $(secs "$(now_ms)") s of a ${BUDGET} s budget)"
cat "$OUT/steps.txt"
for f in peer ours; do
    [[ -f $OUT/$f.jsonl ]] || continue
    echo "== $f.jsonl: case seeds updates compile_s run_s steps_per_s"
    "$PY" -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["case"], r["seeds"], r["updates"], r["compile_s"], r["run_s"], r["steps_per_s"])' "$OUT/$f.jsonl"
done
[[ -f $OUT/headline_memory.json ]] && echo "== headline_memory.json: $("$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r.get("line"), "| device:", json.dumps(r.get("device"))[:300])' "$OUT/headline_memory.json" 2>&1)"
grep -h -i -m3 'resource_exhausted\|out of memory' "$OUT"/*.log 2> /dev/null
exit 0
