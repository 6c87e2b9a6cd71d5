"""Train an algorithm on an environment over several seeds (and sweep points) in one compiled program.

    python experiments/run.py --algo dpo --env matrix_dpo4 --seeds 8 --total-steps 20000 \\
        --set epochs=10 --sweep lr=1e-3,3e-4 --out runs/dpo_matrix
    python experiments/run.py --resume runs/dpo_matrix      # continue from the latest checkpoint
    python experiments/run.py --resume runs/dpo_matrix --total-steps 40000   # extend a run's budget
    python experiments/run.py --preset tad_hallway --out runs/tad_hallway   # a paper experiment's settings
    python experiments/run.py --algo qmix --env smax_3m --set batch_size=64 --check   # resolve, print, stop
    python experiments/run.py --config my_run.toml --set lr=3e-4   # a config file of your own; --set wins
    python experiments/run.py --list                                # algorithms, environments, presets
    python experiments/run.py --algo dpo --env hallway --tensorboard --wandb   # also log to TensorBoard / W&B

Invalid input (unknown algorithm, env or hyperparameter, bad value, a budget below one update, an
env the algorithm cannot be built on) exits with code 2 and a one-line message before anything is
compiled. ``--check`` does every check and prints the resolved config, sweep, run options and plan
as JSON without compiling, with the memory plan (state per run, device memory, runs per device at
once) and the run's size (env steps, updates, chunks, runs); its time only where a benchmark measured the
same settings on this kind of device, otherwise it says the time is unknown.

Compiled programs are kept in jax's persistent compilation cache (``$JMARL_COMPILE_CACHE``, else
``$XDG_CACHE_HOME/jmarl/xla`` or ``~/.cache/jmarl/xla``), so the same program loads in seconds the next
time; ``--no-compile-cache`` turns it off. Ctrl-C before the first chunk exits 130 with one line and
leaves no results directory behind that this run created.

Memory: the runs' train state is set against what a device can give before compiling; runs that do
not fit at once train in groups (one line says so), a single run that does not fit exits 2 naming the
settings that shrink it. ``XLA_PYTHON_CLIENT_MEM_FRACTION`` defaults to 0.92 here (jax's own default
is 0.75); a value in the environment is kept. ``JMARL_DEVICE_MEMORY=12GiB`` plans for less.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
import jmarl  # noqa: E402
from experiments import presets  # noqa: E402
from experiments.cli import CPU_DEVICES_HELP, Parser  # noqa: E402
from experiments.config_file import ConfigFile, integer, load_config_file  # noqa: E402
from jmarl.checkpoint import CheckpointError  # noqa: E402
from jmarl.compile_cache import use_compile_cache  # noqa: E402
from jmarl.config import ConfigError, parse_value, suggest, validate  # noqa: E402
from jmarl.devices import initialize_distributed, use_cpu_devices  # noqa: E402
from jmarl.loggers import BACKENDS, missing_backend  # noqa: E402
from jmarl.memory import use_more_device_memory  # noqa: E402
from jmarl.registry import config_class  # noqa: E402
from jmarl.run_dir import read_run, run_options  # noqa: E402
from jmarl.runner import Interrupted, NonFiniteError, TimeLimitReached, execute  # noqa: E402

TIME_LIMIT_EXIT = 75  # EX_TEMPFAIL: stopped at --time-limit, resume later
from jmarl.spec import RunOptions, RunSpec, make_run_spec  # noqa: E402
from jmarl.sweep import parse_sweeps  # noqa: E402

# Options that define a run; --resume takes them from the run's config.json instead (--total-steps, given
# with --resume, extends the run's budget).
RUN_DEFINING = ("algo", "env", "preset", "config", "set", "sweep", "seeds", "seed")
# jax.random.PRNGKey keeps 32 bits of the seed: larger or negative seeds alias smaller ones.


def build_parser() -> Parser:
    p = Parser(prog="run.py", description=__doc__.splitlines()[0])
    p.add_argument("--algo", help=f"one of: {', '.join(jmarl.algorithm_names())}")
    p.add_argument("--preset", default=None, help=f"a paper experiment (env, budget, seeds, hyperparameters; "
                                                  f"--algo picks one of its algorithms): {', '.join(presets.names())}")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="a run described in a TOML file (algo, env, seeds, seed, total_steps, [set], [sweep]); "
                        "options on the command line override it")
    p.add_argument("--env", help="an environment name (see README)")
    p.add_argument("--seeds", type=integer, default=None, help="number of seeds, vmapped in one program (default 1)")
    p.add_argument("--seed", type=integer, default=None, help="base seed (default 0)")
    p.add_argument("--total-steps", type=integer, default=None,
                   help="env steps per seed (1e5 is fine); with --resume, a larger budget extends the run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep a hyperparameter (repeatable; the grid x seeds is one vmapped axis for traced keys)")
    p.add_argument("--out", default=None, help="results directory (config, metrics, summary, plots, checkpoints); "
                   "default runs/<algo>_<env>_<date-time>")
    p.add_argument("--no-save", action="store_true", help="write no results directory (nothing to resume from)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    p.add_argument("--devices", type=integer, default=None, help="use the first K devices (default: all visible)")
    p.add_argument("--cpu-devices", type=integer, default=None, metavar="K", help=CPU_DEVICES_HELP)
    p.add_argument("--vmap-block", type=integer, default=None, metavar="B",
                   help="runs vectorised together on a device, more run in sequence (bounds memory; the same B "
                        "gives bit-identical results on any device count; default: all of a device's runs)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (multi-host; automatic when JAX_COORDINATOR_ADDRESS is set)")
    p.add_argument("--checkpoint-every", type=integer, default=None, metavar="UPDATES",
                   help="updates between checkpoints, rounded up to whole chunks (default: a tenth of the run; "
                        "0: only at the end)")
    p.add_argument("--keep-checkpoints", type=integer, default=None, help="how many recent checkpoints to keep (3)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop after the first chunk ending this long after training starts, a checkpoint saved, and "
                        "exit 75; --resume continues (to split a long run into pieces)")
    p.add_argument("--no-checkpoints", action="store_true", help="write no checkpoints")
    p.add_argument("--checkpoint-replay", action=argparse.BooleanOptionalAction, default=None,
                   help="--no-checkpoint-replay: checkpoints leave out the replay buffer of the off-policy learners "
                        "(the remix/qmix/vdn/wqmix and lan/iql families), much smaller; a run resumed from one starts "
                        "with an empty buffer and new episodes and differs from an uninterrupted run. On-policy "
                        "learners (dpo, ippo, tad_ppo, mappo) keep no buffer: no change. Default: saved (resume is "
                        "exact); --resume keeps the run's setting unless given")
    p.add_argument("--no-plots", action="store_true", help="skip the learning-curve PNGs")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use jax's persistent compilation cache (default: on, in $JMARL_COMPILE_CACHE or "
                        "~/.cache/jmarl/xla)")
    p.add_argument("--check", action="store_true",
                   help="check everything and print the resolved config, sweep, run options, plan and the run's "
                        "size (env steps, updates, chunks, runs; time where measured) as JSON; compile and train "
                        "nothing")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write each chunk's metrics (mean over seeds) as TensorBoard event files under "
                        "DIR/tensorboard/ (pip install 'jmarl[logging]')")
    p.add_argument("--wandb", action="store_true",
                   help="also log each chunk's metrics to Weights & Biases, offline under DIR/wandb/ unless W&B is "
                        "configured (WANDB_MODE, WANDB_API_KEY or wandb login); project $WANDB_PROJECT or jmarl")
    p.add_argument("--list", nargs="?", const="all", choices=LIST_GROUPS, default=None,
                   help="print the algorithms, environments and presets (or one group of them) and exit")
    return p


LIST_GROUPS = ("all", "algos", "envs", "presets")


def list_names(group: str = "all") -> str:
    """``--list``: names and one-line descriptions of the algorithms, environments and presets."""
    from jmarl.registry import ALGORITHMS

    sections = []
    if group in ("all", "algos"):
        sections.append(("algorithms (--algo)", [(name, ALGORITHMS[name][-1]) for name in jmarl.algorithm_names()]))
    if group in ("all", "envs"):
        sections.append(("environments (--env)", [(name, envs.describe(name)) for name in envs.names()]))
    if group in ("all", "presets"):
        rows = []
        for name in presets.names():
            preset = presets.load(name)
            rows.append((name, f"{preset.title} ({preset.env}; {', '.join(preset.algos)})"))
        sections.append(("presets (--preset)", rows))
    lines = []
    for title, rows in sections:
        width = max(len(name) for name, _ in rows)
        lines += [f"{title}:"] + [f"  {name:<{width}}  {text}".rstrip() for name, text in rows] + [""]
    return "\n".join(lines[:-1])


def apply_preset(args: argparse.Namespace) -> dict:
    """Fill --algo, --env and --seeds from ``--preset``; returns the preset's hyperparameters for the algo."""
    if args.preset not in presets.names():  # a name, never a path to some other .toml
        looks_like_file = args.preset.endswith(".toml") or "/" in args.preset or Path(args.preset).is_file()
        hint = f"; a config file of your own goes to --config {args.preset}" if looks_like_file else ""
        raise ConfigError(f"unknown preset {args.preset!r}{suggest(args.preset, presets.names())}; "
                          f"valid: {', '.join(presets.names())}{hint}")
    preset = presets.load(args.preset)
    if args.env is not None and args.env != preset.env:
        raise ConfigError(f"preset {preset.name} runs on {preset.env}; drop --env {args.env}")
    args.algo = args.algo or preset.algos[0]
    preset.configs([args.algo])  # the algorithm belongs to the preset and is available
    args.env = preset.env
    args.seeds = preset.seeds if args.seeds is None else args.seeds
    return preset.overrides(args.algo)


def resolve(args: argparse.Namespace):
    """(config, sweep, run options) from the command line; raises ConfigError on a bad name or value (the
    run as a whole is checked once, by ``make_run_spec``)."""
    if args.resume is not None:
        raise ConfigError(f"--resume needs a run's results directory, got {args.resume!r}")
    if args.preset is not None and args.config is not None:
        raise ConfigError("--preset and --config both describe the run; use one (a config file may copy a "
                          "preset's [set] table)")
    file = apply_config_file(args) if args.config is not None else None
    base = apply_preset(args) if args.preset is not None else {}
    if args.algo is None:
        raise ConfigError("the following arguments are required: --algo (or --preset NAME, --config FILE, or "
                          "--resume DIR)")
    if args.env is None:
        raise ConfigError("the following arguments are required: --env (or --preset NAME, --config FILE, or "
                          "--resume DIR)")
    seeds = 1 if args.seeds is None else args.seeds
    if args.no_save and args.out is not None:
        raise ConfigError("--no-save writes no results directory, --out names one: drop one of them")
    _check_out(args.out)
    cls = config_class(args.algo)
    if args.env not in envs.names():
        jmarl.make_config(args.algo, args.env)  # raises with suggestions
    if file is not None:
        base = file.overrides(cls, args)
        args.sweep = file.sweeps(args) + args.sweep
    overrides = dict(base)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in ("algo", "env"):
            raise ConfigError(f"{key} is not a hyperparameter; choose it with --{key}")
        overrides[key] = parse_value(cls, key, value)
    if args.total_steps is not None:
        if file is not None:
            overrides.pop("total_steps", None)  # the command line overrides the file's budget
        if any(item.split("=", 1)[0].strip() == "total_steps" for item in args.set):
            raise ConfigError("total_steps given to both --set and --total-steps; use one")
        overrides["total_steps"] = args.total_steps
    config = jmarl.make_config(args.algo, args.env, **overrides)
    sweep = parse_sweeps(args.algo, args.sweep)
    for key in set(sweep) & set(base):
        overrides.pop(key)  # a sweep replaces the preset's value
    both = sorted(set(sweep) & set(overrides))
    if both:
        raise ConfigError(f"{', '.join(both)} given to both --set and --sweep; use one")
    return config, sweep, RunOptions(seeds=seeds, base_seed=args.seed or 0, **_cli_options(args))


def apply_config_file(args: argparse.Namespace) -> ConfigFile:
    """Fill --algo, --env, --seeds, --seed from ``--config FILE`` where the command line left them out."""
    file = load_config_file(args.config)
    args.algo = args.algo or file.algo
    args.env = args.env or file.env
    args.seeds = file.seeds if args.seeds is None else args.seeds
    args.seed = file.seed if args.seed is None else args.seed
    return file


def _check_out(out: str | None) -> None:
    if out is None:
        return
    if not out.strip():
        raise ConfigError("--out needs a directory name, got an empty one")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out} is a file; results need a directory")


def _cli_options(args: argparse.Namespace) -> dict:
    """RunOptions fields the command line set (None: keep the default, or the resumed run's value)."""
    values = dict(devices=args.devices, vmap_block=args.vmap_block, checkpoint_every=args.checkpoint_every,
                  keep_checkpoints=args.keep_checkpoints, checkpoints=False if args.no_checkpoints else None,
                  checkpoint_replay=args.checkpoint_replay,
                  plots=False if args.no_plots else None,
                  time_limit_s=None if args.time_limit is None else args.time_limit * 60,
                  loggers=tuple(name for name in BACKENDS if getattr(args, name)) or None)
    return {k: v for k, v in values.items() if v is not None}


def resolve_resume(args: argparse.Namespace):
    """(config, run options) from a results directory's config.json; ``--total-steps`` sets a new budget (the
    spec refuses one below the run's)."""
    given = [f"--{name.replace('_', '-')}" for name in RUN_DEFINING if getattr(args, name) not in (None, [])]
    if given:
        raise ConfigError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
    config, meta = read_run(args.resume)
    if args.total_steps is not None:
        config = validate(dataclasses.replace(config, total_steps=args.total_steps))
    sweep = {k: tuple(v) for k, v in meta.get("sweep", {}).items()}
    return config, sweep, run_options(meta, **_cli_options(args))


def make_spec(args: argparse.Namespace) -> RunSpec:
    """The run the command line asks for, every check made (ConfigError otherwise)."""
    config, sweep, opts = resolve_resume(args) if args.resume else resolve(args)
    if args.resume is None and args.out is None and not args.no_save and not args.check:
        args.out = default_out(config)
    spec = make_run_spec(config, sweep, opts, args.resume or args.out, resume=args.resume is not None)
    if spec.out is not None and not args.check:
        print(f"results: {spec.out}", flush=True)
    return spec


def check_report(spec: RunSpec) -> dict:
    """``--check``: the resolved run, its programs and their memory plans."""
    return {
        "config": dataclasses.asdict(spec.config),
        "sweep": {"traced": {k: list(v) for k, v in spec.traced.items()},
                  "sequential": {k: list(v) for k, v in spec.sequential.items()}},
        "run_options": dataclasses.asdict(spec.options),
        "runs_per_program": spec.runs,
        "programs": [{"point": ps.point, "steps_per_update": ps.plan.steps_per_update,
                      "updates_per_chunk": ps.plan.updates_per_chunk, "num_chunks": ps.plan.num_chunks,
                      "total_updates": ps.plan.total_updates, "planned_env_steps": ps.plan.total_steps}
                     for ps in spec.programs],
        "size": run_size(spec),
        "time": time_estimate(spec),
        "memory": [{"line": m.line(), "per_run_gib": m.per_run / 2**30, "runs_per_device": m.per_device,
                    "group_gib": m.group_bytes / 2**30, "available_gib": m.available / 2**30,
                    "available_from": m.source, "runs_per_device_at_once": m.group, "groups": m.groups,
                    "vmap_block": m.block, "warning": m.warning} for m in (ps.memory for ps in spec.programs)],
    }


def run_size(spec: RunSpec) -> dict:
    """What the run will do, known without compiling: programs, runs, env steps and updates."""
    per_run = sum(ps.plan.total_steps for ps in spec.programs)
    return {"programs": len(spec.programs), "runs_per_program": spec.runs, "runs": spec.runs * len(spec.programs),
            "planned_env_steps_per_run": per_run // len(spec.programs),
            "planned_env_steps_all_runs": per_run * spec.runs,
            "updates_per_run": spec.programs[0].plan.total_updates,
            "chunks_per_program": spec.programs[0].plan.num_chunks,
            "compilations": len(spec.programs)}


THROUGHPUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "train_throughput.json"


def time_estimate(spec: RunSpec, results: Path = THROUGHPUT) -> dict:
    """A time only where it was measured: a row of ``benchmarks/results/train_throughput.json`` taken on this
    kind of device with the same algorithm, env, number of runs and settings (all but the budget). Otherwise
    the time is unknown (compiling alone takes from seconds, with the persistent cache, to minutes)."""
    unknown = {"estimate_s": None,
               "why": "unknown: no training throughput was measured for these settings on this kind of device "
                      "(benchmarks/results/train_throughput.json); compiling takes seconds to minutes (seconds when "
                      "the persistent compilation cache holds the program); the progress line gives an ETA after the "
                      "first chunk"}
    try:
        data = json.loads(results.read_text())
        import jax

        device = jax.devices()[0]
        meta, rows = data["meta"], data["rows"]
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return unknown
    if meta.get("backend") != device.platform or (device.platform != "cpu"
                                                   and device.device_kind not in str(meta.get("devices", ""))):
        return unknown
    config = spec.config
    for row in rows:
        if (row.get("algo"), row.get("env"), row.get("seeds")) != (config.algo, config.env, spec.runs):
            continue
        settings = {k: row[k] for k in ("num_envs", "num_steps") if k in row and hasattr(config, k)}
        try:
            measured = jmarl.make_config(config.algo, config.env, total_steps=config.total_steps,
                                         eval_every=config.eval_every, **{**settings, **row.get("overrides", {})})
        except (ConfigError, TypeError):
            continue
        if measured != config or spec.sequential or spec.options.devices not in (None, 1) or row.get(
                "train_steps_per_s", 0) <= 0:
            continue
        train_s = run_size(spec)["planned_env_steps_all_runs"] / row["train_steps_per_s"]
        return {"estimate_s": round(train_s + row.get("compile_s", 0.0), 1), "train_s": round(train_s, 1),
                "compile_s": row.get("compile_s"),
                "why": f"measured: {row['train_steps_per_s']:,} env steps/s of {spec.runs} run(s) of the same "
                       f"settings on {meta.get('backend')} (jax {meta.get('jax')}, "
                       f"benchmarks/results/train_throughput.json, an evaluation every {row.get('updates')} "
                       f"update(s), this run every {config.eval_every}); another machine of that kind can differ"}
    return unknown


def default_out(config) -> str:
    """A fresh results directory per run, so a run without --out is still saved and resumable."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{config.algo}_{config.env}_{stamp}"
    suffix = 1
    while out.exists():
        suffix += 1
        out = Path("runs") / f"{config.algo}_{config.env}_{stamp}_{suffix}"
    return str(out)


def main(argv: list[str] | None = None, *, compile_cache: bool | None = None) -> int:
    """The command line. ``compile_cache`` (default: only when ``argv`` is None, i.e. run as a script) turns on
    jax's persistent compilation cache unless ``--no-compile-cache``; calls from code leave jax's settings alone."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list is not None:
        print(list_names(args.list))
        return 0
    for name in BACKENDS:
        if getattr(args, name) and (line := missing_backend(name)):
            parser.error(line)
    use_more_device_memory()
    spec = None
    try:
        if args.cpu_devices is not None:
            use_cpu_devices(args.cpu_devices)
        if (argv is None if compile_cache is None else compile_cache) and not args.no_compile_cache and not args.check:
            use_compile_cache()
        if not args.check:
            initialize_distributed(args.distributed)
        spec = make_spec(args)
        if args.check:
            print(json.dumps(check_report(spec), indent=1))
            return 0
        execute(spec)
    except (ConfigError, CheckpointError) as err:
        parser.error(str(err))
    except NonFiniteError as err:  # training diverged: exit 3
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 3
    except TimeLimitReached as err:  # stopped as asked, to be resumed: EX_TEMPFAIL
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return TIME_LIMIT_EXIT
    except Interrupted as err:  # SIGINT / SIGTERM: 128 + the signal's number, as a shell reports it
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:  # before the run started, or a second Ctrl-C while a checkpoint was written
        # a checkpoint write cut short fails in Orbax's background thread as the process exits: it is skipped
        # on resume (the line says so), so its error log would only repeat that as tracebacks
        logging.getLogger("absl").setLevel(logging.CRITICAL)
        print(f"{parser.prog}: {_aborted(spec)}", file=sys.stderr)
        return 130
    return 0


def _aborted(spec: RunSpec | None) -> str:
    if spec is None:
        return "interrupted before the run started; nothing was saved"
    if spec.out is not None and spec.options.checkpoints:
        return (f"aborted; a checkpoint cut short is skipped: resume from the last complete one with: "
                f"python experiments/run.py --resume {spec.out}")
    return "aborted; nothing was saved to resume from"


if __name__ == "__main__":
    sys.exit(main())
