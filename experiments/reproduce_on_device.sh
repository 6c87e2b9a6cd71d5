#!/usr/bin/env bash
# The paper reproductions that need an accelerator, run as pieces on a machine lent for a few minutes at a
# time: each call trains as far as its time budget goes, and packs its progress to carry into the next call.
#
#     bash experiments/reproduce_on_device.sh OUTDIR [--tiny]
#
# It moves to the project root itself. The plan, in order (each entry is one experiments/reproduce.py run):
#   1. lan_smax_3m:    LAN, IQL, QMIX, 4 seeds, 2M env steps per seed (the preset's budget)
#   2. lan_smax_2s3z:  LAN, IQL, QMIX, 4 seeds, 2M
#   3. dpo_mpe_spread: DPO, IPPO, 5 seeds, 5M
# A finished entry is skipped; an unfinished one resumes from its latest checkpoint; the call stops when its
# budget is spent. Checkpoints leave the replay buffers out (--no-checkpoint-replay: they are GiBs and could
# not travel), so an off-policy run that spans two calls restarts its buffer, and its report says so.
#
# Needs in the checkout (ignored folders that travel with it):
#   .whl/    the wheels the GPU image lacks (jaxmarl, flashbax, gymnax and their dependencies; see
#            docs/reproducing.md), installed with --no-deps into $SITE
#   .repro/  progress.tgz.* and xla_cache.tgz from the previous call's OUTDIR (absent on the first call;
#            REPRO_IN names another folder)
#
# Environment: PYTHON (python3), SITE (/tmp/site), DEVICE_BUDGET_S (540; --tiny 900): seconds from the start
# within which everything must end, packing included; WHEELS_INSTALL=always|auto|never (always; --tiny: auto);
# REPRO_DIR (runs/device): where the reproductions live while they train; REPRO_PLAN: the presets to run, a
# space-separated subset of the plan (default: all of it, in order); REPRO_TIME_LIMIT_MIN: each reproduction's
# --time-limit in minutes (default: what the budget leaves). Relative paths are from the project root.
#
# OUTDIR gets steps.txt (one line per step), env.txt, install.log, progress.tgz.00, .01, ... (REPRO_DIR without
# the compile cache, in parts of 15 MiB: runs, the latest checkpoint of each unfinished run, the reproduce.py
# logs), xla_cache.tgz (jax's compiled programs, when under 16 MiB) and reports.md (the reproduction.md of
# each entry finished so far): at most 8 files.
# --tiny: the same plan at tiny sizes with 2 seeds, a rehearsal on a CPU, not a measurement.

set -u
# shellcheck source=benchmarks/device_steps.sh
source "$(dirname "$0")/../benchmarks/device_steps.sh" || exit 2
start_device_script "bash experiments/reproduce_on_device.sh OUTDIR [--tiny]" "$@"
if ((TINY)); then BUDGET=${DEVICE_BUDGET_S:-900}; else BUDGET=${DEVICE_BUDGET_S:-540}; fi
TSCALE=1
REPRO_DIR=${REPRO_DIR:-runs/device}
REPRO_IN=${REPRO_IN:-.repro}
PACK_S=30      # kept for packing the progress at the end
CHUNK_S=90     # room past the time limit: the next algorithm's compile (not counted as training) and a chunk
START_S=120    # the least budget worth starting a reproduction with (compiling takes 20-60 s a program)

install_wheels "${WHEELS_INSTALL:-$( ((TINY)) && echo auto || echo always)}" jaxmarl flashbax \
    || note "jaxmarl or flashbax cannot be imported: the SMAX reproductions will fail"
write_env "$TINY"

# ----- the progress of earlier calls --------------------------------------------------------------------

if [[ -d $REPRO_DIR ]]; then
    note "restore         kept $REPRO_DIR (already here; $REPRO_IN not unpacked)"
elif compgen -G "$REPRO_IN/progress.tgz.*" > /dev/null; then
    mkdir -p "$REPRO_DIR" && cat "$REPRO_IN"/progress.tgz.* | tar xzf - -C "$REPRO_DIR"
    rc=$?
    note "restore         rc=$rc   $REPRO_DIR from $REPRO_IN/progress.tgz.*"
    if ((rc != 0)); then  # training from nothing would pack over the progress: stop instead
        note "restore         failed: $REPRO_IN must hold the parts of one call only (replace, not add); nothing trained"
        exit 2
    fi
else
    mkdir -p "$REPRO_DIR"
    note "restore         nothing to restore: a first call"
fi
if [[ -f $REPRO_IN/xla_cache.tgz && ! -d $REPRO_DIR/xla_cache ]]; then
    tar xzf "$REPRO_IN/xla_cache.tgz" -C "$REPRO_DIR" && note "restore         the compile cache from $REPRO_IN/xla_cache.tgz"
fi
REPRO_DIR=$(cd "$REPRO_DIR" && pwd)
unset JAX_COMPILATION_CACHE_DIR  # (jax's own setting would win): the cache that travels is this one
export JMARL_COMPILE_CACHE=$REPRO_DIR/xla_cache
mkdir -p "$REPRO_DIR/logs"

# ----- the plan -----------------------------------------------------------------------------------------

# shellcheck disable=SC2034  # SMAX and MPE are read through the plan's third field (declare -n)
if ((TINY)); then
    # small chunks (LAN's 400 env steps, DPO's 320), three and two of them
    SMAX=(--seeds 2 --total-steps 1200 --set buffer_size=64 --set batch_size=8 --set eval_episodes=4
          --set eval_every=2)
    MPE=(--seeds 2 --total-steps 640 --set num_envs=4 --set num_steps=16 --set eval_episodes=4 --set eval_every=5)
else
    SMAX=(--seeds 4)
    MPE=()
fi
PLAN=("lan_smax_3m|lan iql qmix|SMAX" "lan_smax_2s3z|lan iql qmix|SMAX" "dpo_mpe_spread|dpo ippo|MPE")

: > "$OUT/reports.md"
for entry in "${PLAN[@]}"; do
    IFS='|' read -r preset algos sizes <<< "$entry"
    [[ -n ${REPRO_PLAN:-} && " $REPRO_PLAN " != *" $preset "* ]] && continue
    declare -n extra=$sizes
    dir=$REPRO_DIR/$preset
    if [[ -f $dir/reproduction.md ]]; then
        note "$(printf '%-16s finished earlier' "$preset")"
        cat "$dir/reproduction.md" >> "$OUT/reports.md"
        continue
    fi
    left=$(( $(budget_left) - PACK_S ))
    if (( left < START_S )); then
        note "$(printf '%-16s not started: %ss left before packing, needs %ss' "$preset" "$left" "$START_S")"
        continue
    fi
    minutes=${REPRO_TIME_LIMIT_MIN:-$(awk -v s=$(( left - CHUNK_S )) 'BEGIN { printf "%.2f", s / 60 }')}
    # shellcheck disable=SC2086
    run_step "$preset" "$left" "$START_S" "$PY" experiments/reproduce.py --preset "$preset" --algos $algos \
        "${extra[@]}" --no-checkpoint-replay --time-limit "$minutes" --out "$dir"
    rc=$?
    cat "$OUT/$preset.log" >> "$REPRO_DIR/logs/$preset.log" && rm "$OUT/$preset.log"
    tail -n 4 "$REPRO_DIR/logs/$preset.log"
    if ((rc == 0)); then
        cat "$dir/reproduction.md" >> "$OUT/reports.md"
    elif ((rc == 75 || rc == 124 || rc == 137)); then
        break  # the budget is spent: the next call continues from the checkpoint
    fi
done

# ----- pack the progress for the next call --------------------------------------------------------------
# What a run needs to continue: its latest checkpoint only, and none once it has trained its planned steps.
# The archive is cut into parts of 15 MiB (a file coming back may hold 16).

t0=$(now_ms)
rm -f "$OUT"/progress.tgz.*
"$PY" - "$REPRO_DIR" > "$OUT/pack.list" <<'EOF'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for path in sorted(root.rglob("*")):
    rel = path.relative_to(root)
    if rel.parts[0] == "xla_cache" or not path.is_file():
        continue
    if "checkpoints" in rel.parts:
        run = root.joinpath(*rel.parts[:rel.parts.index("checkpoints")])
        steps = [int(d.name) for d in (run / "checkpoints").iterdir() if d.name.isdigit()]
        config, summary = run / "config.json", run / "summary.json"
        finished = config.exists() and summary.exists() and {
            s["env_steps"] for s in json.loads(summary.read_text())["per_seed"]} == {
            json.loads(config.read_text()).get("planned_env_steps")}
        step = rel.parts[rel.parts.index("checkpoints") + 1]
        if finished or (step.isdigit() and int(step) != max(steps)):
            continue
    print(rel)
EOF
tar czf - -C "$REPRO_DIR" -T "$OUT/pack.list" | split -b 15m -d - "$OUT/progress.tgz."
rc=$?
rm "$OUT/pack.list"
if [[ -d $REPRO_DIR/xla_cache ]]; then
    tar czf "$OUT/xla_cache.tgz" -C "$REPRO_DIR" xla_cache
    if (( $(stat -c %s "$OUT/xla_cache.tgz") > 16 * 1024 * 1024 )); then
        rm "$OUT/xla_cache.tgz" && note "xla_cache.tgz   over 16 MiB: left out (the next call compiles again)"
    fi
fi
printf '%-16s rc=%-3s wall_s=%-6s %s\n' pack "$rc" "$(secs $(( $(now_ms) - t0 )))" \
    "$(cd "$OUT" && stat -c '%n %s bytes' progress.tgz.* | paste -sd ' ')" | tee -a "$OUT/steps.txt"

# ----- summary ------------------------------------------------------------------------------------------

echo
echo "== $OUT/steps.txt (total $(secs "$(now_ms)") s of a ${BUDGET} s budget)"
cat "$OUT/steps.txt"
"$PY" - "$REPRO_DIR" <<'EOF'
import json, pathlib, sys
for preset in sorted(p for p in pathlib.Path(sys.argv[1]).iterdir() if (p / "pieces.json").exists()):
    done = "reproduction.md written" if (preset / "reproduction.md").exists() else "to continue"
    reached = []
    for algo in sorted(d for d in preset.iterdir() if (d / "metrics.jsonl").exists()):
        lines = (algo / "metrics.jsonl").read_text().splitlines()
        reached.append(f"{algo.name} {json.loads(lines[-1])['env_steps'] if lines else 0:,}")
    print(f"{preset.name} ({done}): env steps per seed: {', '.join(reached) or 'none yet'}")
EOF
exit 0
