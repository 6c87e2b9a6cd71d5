# shellcheck shell=bash
# Shared by the prepared device scripts (benchmarks/gpu.sh, experiments/reproduce_on_device.sh): the start
# (arguments, folders), steps under their own timeouts inside one time budget, the wheel install, and the
# machine's description. A script sources it, calls start_device_script, then sets:
#   BUDGET   seconds from the start within which every step must end
#   TSCALE   a factor for every step's timeout (3 for a rehearsal on a CPU, else 1)
# Environment: PYTHON (python3), SITE (/tmp/site: where the wheels are installed).

# start_device_script USAGE "$@": OUTDIR [--tiny] from the arguments (USAGE and exit 2 otherwise); sets TINY,
# OUT (absolute, with an empty steps.txt), PY, SITE and T_START, and moves to the project root.
start_device_script() {
    local usage=$1
    shift
    if [[ $# -lt 1 || $1 == -* ]]; then
        echo "usage: $usage" >&2
        exit 2
    fi
    TINY=0
    # shellcheck disable=SC2034  # read by the calling script
    [[ ${2:-} == --tiny ]] && TINY=1
    mkdir -p "$1" || exit 2
    OUT=$(cd "$1" && pwd)
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
    PY=${PYTHON:-python3}
    SITE=${SITE:-/tmp/site}
    T_START=$(date +%s%N)
    : > "$OUT/steps.txt"
}

now_ms() { echo $(( ($(date +%s%N) - T_START) / 1000000 )); }
secs() { printf '%d.%d' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }  # milliseconds -> seconds, one decimal

note() { echo "$*" | tee -a "$OUT/steps.txt"; }

# budget_left: seconds of the budget left (10 s kept for the kill grace and the summary), at least 0.
budget_left() {
    local left=$(( BUDGET - $(now_ms) / 1000 - 10 ))
    echo $(( left > 0 ? left : 0 ))
}

# fits NEEDS NAME...: true when NEEDS seconds of the budget are left; otherwise a skip line for each NAME.
fits() {
    local needs=$1 name
    shift
    local left
    left=$(budget_left)
    (( left >= needs )) && return 0
    for name in "$@"; do
        note "$(printf '%-16s skipped: %ss of the budget left, needs %ss' "$name" "$left" "$needs")"
    done
    return 1
}

# run_step NAME TIMEOUT_S NEEDS_S CMD...: runs CMD under `timeout` (TIMEOUT_S x TSCALE, cut to the budget
# left), output to OUT/NAME.log, a status line to steps.txt; skipped when less than NEEDS_S is left.
# Returns CMD's exit status (1 when skipped).
run_step() {
    local name=$1 limit=$(($2 * TSCALE)) needs=$3
    shift 3
    fits "$needs" "$name" || return 1
    local left
    left=$(budget_left)
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
    return $rc
}

# importable MODULE...: true when $PY imports every MODULE.
importable() {
    local mods
    mods=$(IFS=,; echo "$*")
    "$PY" -c "import $mods" > /dev/null 2>&1
}

# install_wheels MODE MODULE...: makes MODULE... importable from the wheels in .whl/ (installed with
# --no-deps into $SITE) and exports PYTHONPATH. MODE: always | auto (skip the install when the modules
# import already) | never. .whl/extra/ holds dependencies an image may lack (matplotlib, jaxtyping, six, ...):
# each is installed only when its module is not found, so nothing the image has is shadowed. Returns 0 when
# every MODULE imports afterwards.
install_wheels() {
    local mode=$1 t0 rc missing
    shift
    t0=$(now_ms)
    export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
    if [[ ! -d .whl ]] || ! compgen -G '.whl/*.whl' > /dev/null; then
        if importable "$@"; then
            note "install         skipped: no .whl/ wheels folder; $* import already"
            return 0
        fi
        note "install         skipped: no .whl/ wheels folder, and one of $* is missing"
        return 1
    fi
    if [[ $mode == never ]] || { [[ $mode == auto ]] && importable "$@"; }; then
        importable "$@" && { note "install         skipped (WHEELS_INSTALL=$mode): $* import already"; return 0; }
        note "install         skipped (WHEELS_INSTALL=$mode): one of $* is missing"
        return 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
        > "$OUT/install.log" 2>&1
    rc=$?
    export PYTHONPATH=$SITE:$PWD
    # seaborn (gymnax imports it, only its render code uses it; it would bring pandas) becomes an empty
    # module when absent.
    missing=$("$PY" - <<'PYEOF' 2>> "$OUT/install.log"
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
PYEOF
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
    importable "$@"
}

# write_env TINY: the machine, the commit and the package versions, to OUT/env.txt.
write_env() {
    {
        echo "date: $(date -u +%FT%TZ)  tiny: $1  budget_s: $BUDGET  python: $PY  PYTHONPATH: $PYTHONPATH"
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
}
