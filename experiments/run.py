"""Train an algorithm on an environment over several seeds (and sweep points) in one compiled program.

    python experiments/run.py --algo dpo --env matrix_dpo4 --seeds 8 --total-steps 20000 \\
        --set epochs=10 --sweep lr=1e-3,3e-4 --out runs/dpo_matrix
    python experiments/run.py --resume runs/dpo_matrix      # continue from the latest checkpoint
    python experiments/run.py --resume runs/dpo_matrix --total-steps 40000   # extend a run's budget
    python experiments/run.py --preset tad_hallway --out runs/tad_hallway   # a paper experiment's settings
    python experiments/run.py --algo qmix --env smax_3m --set batch_size=64 --check   # resolve, print, stop

Invalid input (unknown algorithm, env or hyperparameter, bad value, a budget below one update, an
env the algorithm cannot be built on) exits with code 2 and a one-line message before anything is
compiled. ``--check`` does every check and prints the resolved config, sweep, run options and plan
as JSON without compiling, with the memory plan (state per run, device memory, runs per device at
once).

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
from experiments.cli import Parser  # noqa: E402
from jmarl.checkpoint import CheckpointError  # noqa: E402
from jmarl.config import ConfigError, parse_value, suggest, validate  # noqa: E402
from jmarl.devices import initialize_distributed  # noqa: E402
from jmarl.memory import use_more_device_memory  # noqa: E402
from jmarl.registry import config_class  # noqa: E402
from jmarl.run_dir import read_run, run_options  # noqa: E402
from jmarl.runner import Interrupted, NonFiniteError, execute, use_compile_cache  # noqa: E402
from jmarl.spec import RunOptions, RunSpec, make_run_spec  # noqa: E402
from jmarl.sweep import parse_sweeps  # noqa: E402

# Options that define a run; --resume takes them from the run's config.json instead (--total-steps, given
# with --resume, extends the run's budget).
RUN_DEFINING = ("algo", "env", "preset", "set", "sweep", "seeds", "seed")
# jax.random.PRNGKey keeps 32 bits of the seed: larger or negative seeds alias smaller ones.


def build_parser() -> Parser:
    p = Parser(prog="run.py", description=__doc__.splitlines()[0])
    p.add_argument("--algo", help=f"one of: {', '.join(jmarl.algorithm_names())}")
    p.add_argument("--preset", default=None, help=f"a paper experiment (env, budget, seeds, hyperparameters; "
                                                  f"--algo picks one of its algorithms): {', '.join(presets.names())}")
    p.add_argument("--env", help="an environment name (see README)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds, vmapped in one program (default 1)")
    p.add_argument("--seed", type=int, default=None, help="base seed (default 0)")
    p.add_argument("--total-steps", type=int, default=None,
                   help="env steps per seed; with --resume, a larger budget extends the run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep a hyperparameter (repeatable; the grid x seeds is one vmapped axis for traced keys)")
    p.add_argument("--out", default=None, help="results directory (config, metrics, summary, plots, checkpoints); "
                   "default runs/<algo>_<env>_<date-time>")
    p.add_argument("--no-save", action="store_true", help="write no results directory (nothing to resume from)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    p.add_argument("--devices", type=int, default=None, help="use the first K devices (default: all visible)")
    p.add_argument("--vmap-block", type=int, default=None, metavar="B",
                   help="runs vectorised together on a device, more run in sequence (bounds memory; the same B "
                        "gives bit-identical results on any device count; default: all of a device's runs)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (multi-host; automatic when JAX_COORDINATOR_ADDRESS is set)")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="UPDATES",
                   help="updates between checkpoints, rounded up to whole chunks (default: a tenth of the run; "
                        "0: only at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=None, help="how many recent checkpoints to keep (3)")
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
                   help="check everything and print the resolved config, sweep, run options and plan as JSON; "
                        "compile and train nothing")
    return p


def apply_preset(args: argparse.Namespace) -> dict:
    """Fill --algo, --env and --seeds from ``--preset``; returns the preset's hyperparameters for the algo."""
    if args.preset not in presets.names():  # a name, never a path to some other .toml
        raise ConfigError(f"unknown preset {args.preset!r}{suggest(args.preset, presets.names())}; "
                          f"valid: {', '.join(presets.names())}")
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
    base = apply_preset(args) if args.preset is not None else {}
    if args.algo is None:
        raise ConfigError("the following arguments are required: --algo (or --preset NAME, or --resume DIR)")
    if args.env is None:
        raise ConfigError("the following arguments are required: --env (or --preset NAME, or --resume DIR)")
    seeds = 1 if args.seeds is None else args.seeds
    if args.no_save and args.out is not None:
        raise ConfigError("--no-save writes no results directory, --out names one: drop one of them")
    _check_out(args.out)
    cls = config_class(args.algo)
    if args.env not in envs.names():
        jmarl.make_config(args.algo, args.env)  # raises with suggestions
    overrides = dict(base)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in ("algo", "env"):
            raise ConfigError(f"{key} is not a hyperparameter; choose it with --{key}")
        overrides[key] = parse_value(cls, key, value)
    if args.total_steps is not None:
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
                  plots=False if args.no_plots else None)
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
        print(f"results: {args.out}", flush=True)
    return make_run_spec(config, sweep, opts, args.resume or args.out, resume=args.resume is not None)


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
        "memory": [{"line": m.line(), "per_run_gib": m.per_run / 2**30, "runs_per_device": m.per_device,
                    "group_gib": m.group_bytes / 2**30, "available_gib": m.available / 2**30,
                    "available_from": m.source, "runs_per_device_at_once": m.group, "groups": m.groups,
                    "vmap_block": m.block, "warning": m.warning} for m in (ps.memory for ps in spec.programs)],
    }


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
    use_more_device_memory()
    spec = None
    try:
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
