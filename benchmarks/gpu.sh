#!/usr/bin/env bash
# One prepared GPU measurement run: the headline LAN run, then jaxmarl's own baselines (the peer, .peer/)
# beside jmarl at equal work, each step under its own timeout and all of them inside one time budget.
#
#     bash benchmarks/gpu.sh OUTDIR [--tiny]
#
# It moves to the project root itself. Needs in the checkout (ignored folders that travel with it):
#   .peer/        a copy of the peer harness (peer_bench.py and jaxmarl's baseline scripts)
#   .whl/         the wheels the GPU image lacks (jaxmarl, distrax, tfp-nightly, ...), installed with
#                 --no-deps into $SITE; .whl/extra/ holds their dependencies that an image may lack
#                 (matplotlib, jaxtyping, six, ...): each is installed only when the image cannot find it.
# Without .whl/ nothing is installed and the peer steps are skipped.
#
# Environment: PYTHON (python3), SITE (/tmp/site), GPU_BUDGET_S (480; --tiny 3000): seconds from the
# start within which every step must end (a step that no longer fits is skipped, one that fits only in
# part gets the time left as its timeout); WHEELS_INSTALL=always|auto|never (always; --tiny: auto, which
# skips the install when jaxmarl, distrax, flashbax and gymnax already import).
#
# OUTDIR gets env.txt, steps.txt (one line per step: exit status, wall seconds, timeout), <step>.log,
# cmp_<case>_<seeds>/peer_comparison.{json,md} (the side-by-side measurements), headline_run/ and
# headline_memory.json.
# --tiny: the same steps at tiny sizes, a rehearsal on a CPU (a few minutes on 2 cores), not a measurement.

set -u
# shellcheck source=benchmarks/device_steps.sh
source "$(dirname "$0")/device_steps.sh" || exit 2
start_device_script "bash benchmarks/gpu.sh OUTDIR [--tiny]" "$@"
# --tiny: timeouts x3 (a 2-core CPU compiles these programs in 30-60 s, like the GPU, but runs them slower)
if ((TINY)); then BUDGET=${GPU_BUDGET_S:-3000} TSCALE=3; else BUDGET=${GPU_BUDGET_S:-480} TSCALE=1; fi

# ----- wheels and environment ---------------------------------------------------------------------------

PEER_OK=1
install_wheels "${WHEELS_INSTALL:-$( ((TINY)) && echo auto || echo always)}" jaxmarl distrax flashbax gymnax \
    || { PEER_OK=0; note "peer            skipped: jaxmarl, distrax, flashbax or gymnax missing (jmarl's SMAX needs jaxmarl too)"; }
[[ -f .peer/peer_bench.py ]] || { PEER_OK=0; note "peer            skipped: no .peer/peer_bench.py"; }
write_env "$TINY"

# ----- the steps ----------------------------------------------------------------------------------------
# Timeouts (s) are for the H200, where compiling takes about 20-60 s a program. Each comparison step is one
# run of benchmarks/peer_comparison.py: the peer's script and ours at equal work, one after the other in one
# process, into OUTDIR/cmp_<case>_<seeds>/. NEEDS: the least budget worth starting a step with. The steps
# run in order of importance; those that no longer fit are skipped with a line saying so.

if ((TINY)); then
    HEADLINE=(--algo lan --env smax_3m --seeds 2 --total-steps 400 --set buffer_size=64 --set batch_size=8
              --set eval_episodes=4 --set eval_every=2)
    CMP=(--quick) SEEDS_MANY=2
else
    # 3 chunks of 50 updates x 200 env steps; no checkpoints: with the replay buffers they would be over
    # 100 GiB (the disk has 64) and come back in OUTDIR
    HEADLINE=(--algo lan --env smax_3s5z --seeds 32 --total-steps 30000)
    CMP=() SEEDS_MANY=32
fi

# a. the headline run (the runner writes its memory report where JMARL_MEMORY_REPORT says)
run_step headline 150 60 env JMARL_MEMORY_REPORT="$OUT/headline_memory.json" \
    "$PY" experiments/run.py "${HEADLINE[@]}" --no-plots --no-checkpoints --out "$OUT/headline_run"

compare() {  # compare CASE SEEDS TIMEOUT NEEDS
    local case=$1 seeds=$2 limit=$3 needs=$4
    if ((TINY && seeds > 1)); then  # (XLA:CPU hangs on the peer's programs vmapped over seeds)
        note "$(printf '%-24s skipped in --tiny: the peer'"'"'s multi-seed programs hang on a CPU' "cmp_${case}_$seeds")"
        return
    fi
    if ((!PEER_OK)); then
        note "$(printf '%-24s skipped: the peer needs .peer/ and jaxmarl, distrax, flashbax, gymnax' "cmp_${case}_$seeds")"
        return
    fi
    run_step "cmp_${case}_$seeds" "$limit" "$needs" "$PY" benchmarks/peer_comparison.py --peer .peer --cases "$case" \
        --seeds "$seeds" "${CMP[@]}" --out "$OUT/cmp_${case}_$seeds"
}

# b. the peer and jmarl side by side (the Q-learning steps compile three programs: the peer's two, ours)
compare mappo_rnn_smax_3m 1 90 40
compare ippo_rnn_smax_3m 1 90 40
compare qmix_rnn_smax_3m 1 150 80
compare mappo_rnn_smax_3m "$SEEDS_MANY" 100 45
compare ippo_ff_mpe 1 70 30
compare iql_rnn_smax_3m 1 150 80
compare ippo_rnn_smax_3m "$SEEDS_MANY" 100 45

# c. while the budget lasts: the headline run as an 80 GiB card would plan it (JMARL_DEVICE_MEMORY: 0.92 x
# 80 GiB): groups through host memory, 1 chunk
if ((TINY)); then
    LIMIT=$("$PY" -c 'import jmarl; from jmarl.spec import abstract_state; from jmarl.memory import tree_bytes
c = jmarl.make_config("lan", "smax_3m", buffer_size=2000, batch_size=8, eval_episodes=4, eval_every=2)
print(int(1.5 * tree_bytes(abstract_state(c, (), 1))))' 2>/dev/null)
    GROUPED=("${HEADLINE[@]}" --set buffer_size=2000)  # state, not temporaries, is most of a run
else
    LIMIT=73.6GiB
    GROUPED=(--algo lan --env smax_3s5z --seeds 32 --total-steps 10000)
fi
run_step grouped 180 120 env JMARL_DEVICE_MEMORY="$LIMIT" JMARL_MEMORY_REPORT="$OUT/grouped_memory.json" \
    "$PY" experiments/run.py "${GROUPED[@]}" --no-plots --no-checkpoints --out "$OUT/grouped_run"

# ----- summary ------------------------------------------------------------------------------------------

echo
echo "== $OUT/steps.txt (total $(secs "$(now_ms)") s of a ${BUDGET} s budget)"
cat "$OUT/steps.txt"
for f in "$OUT"/cmp_*/peer_comparison*.json; do
    [[ -f $f ]] || continue
    "$PY" -c '
import json, sys
for r in json.load(open(sys.argv[1]))["cases"]:
    peer, ours = r["peer"]["steps_per_s"], r["ours"]["steps_per_s"]
    print(r["name"], "seeds", r["seeds"], "| peer", round(peer), "| ours", round(ours), "env steps/s | ours / peer",
          json.dumps(r["ratio"]))' "$f"
done
[[ -f $OUT/headline_memory.json ]] && echo "== headline_memory.json: $("$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r.get("line"), "| device:", json.dumps(r.get("device"))[:300])' "$OUT/headline_memory.json" 2>&1)"
grep -h -i -m3 'resource_exhausted\|out of memory' "$OUT"/*.log 2> /dev/null
exit 0
