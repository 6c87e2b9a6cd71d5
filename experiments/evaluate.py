"""Evaluate a trained run (or an exported policy): greedy decentralised episodes, a table, a GIF.

    python experiments/evaluate.py runs/dpo_matrix --episodes 100
    python experiments/evaluate.py runs/tad_hallway --render --frames        # GIF (+ PNG frames)
    python experiments/evaluate.py runs/tad_hallway --export policies/tad_hallway --seed 2
    python experiments/evaluate.py policies/tad_hallway --episodes 100       # an exported policy

A run directory is read from its latest checkpoint (``--step`` picks another): every run (seed x
sweep point) plays ``--episodes`` greedy episodes with the algorithm's own evaluation, and the table
gives each run's numbers and the mean with a 95% bootstrap interval across seeds. ``evaluation.md``
and ``evaluation.json`` are written next to the checkpoint (or under ``--out``). A damaged checkpoint
exits 2 naming the older complete one to pick with ``--step``; ``--export`` never writes over an
exported policy. Compiled programs go to jax's persistent compilation cache as in run.py
(``--no-compile-cache`` turns it off).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments.cli import Parser, description  # noqa: E402
from jmarl import sweep as sw  # noqa: E402
from jmarl.checkpoint import CheckpointError, DamagedCheckpoint  # noqa: E402
from jmarl.compile_cache import use_compile_cache  # noqa: E402
from jmarl.config import ConfigError, validate  # noqa: E402
from jmarl.memory import use_more_device_memory  # noqa: E402
from jmarl.policy import export_policy, load_policy, require_greedy_policy  # noqa: E402
from jmarl.registry import make_algorithm  # noqa: E402
from jmarl.results import EVAL_KEYS, bootstrap_ci, eval_keys  # noqa: E402
from jmarl.run_dir import load_checkpoint  # noqa: E402

POLICY_FILES = ("policy.json", "params.msgpack")


def build_parser() -> Parser:
    p = Parser(prog="evaluate.py", description=description(__doc__))
    p.add_argument("path", help="a run's results directory (with checkpoints/) or an exported policy directory")
    p.add_argument("--episodes", type=int, default=None, help="greedy episodes per run (default: the config's "
                                                                 "eval_episodes)")
    p.add_argument("--step", type=int, default=None, help="checkpoint to load (default: the latest)")
    p.add_argument("--seed", type=int, default=0, help="which seed to render or export (default 0)")
    p.add_argument("--point", default=None, metavar="KEY=VALUE__...",
                   help="which sweep point to render or export (its directory name; default: the first)")
    p.add_argument("--render", action="store_true", help="draw one greedy episode as a GIF")
    p.add_argument("--frames", action="store_true", help="with --render, also write one PNG per step")
    p.add_argument("--render-key", type=int, default=0, help="PRNG seed of the rendered episode's reset (0)")
    p.add_argument("--export", default=None, metavar="DIR", help="export the chosen run's policy to DIR")
    p.add_argument("--out", default=None, help="where to write evaluation.{md,json} and renders (default: path)")
    p.add_argument("--no-compile-cache", action="store_true", help="do not use jax's persistent compilation cache")
    return p


def check_export(directory: str) -> None:
    """Refuse to write a policy over another one (before anything is loaded)."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--export {directory} is a file; a policy needs a directory")
    found = [name for name in POLICY_FILES if (path / name).exists()]
    if found:
        raise ConfigError(f"--export {directory} already holds a policy ({', '.join(found)}); choose another "
                          f"directory (its files stay as they are)")


def damaged_message(err: DamagedCheckpoint) -> str:
    todo = (f"evaluate the older complete checkpoint with --step {err.older}" if err.older is not None
            else "no older complete checkpoint is left to evaluate")
    return f"checkpoint {err.step} under {err.directory} is damaged (its {err.part} could not be read); {todo}"


def evaluate_runs(config, state, traced: dict, seeds: int, episodes: int) -> list[dict]:
    """Every run's greedy evaluation over ``episodes`` episodes (the learner's own ``evaluate``)."""
    algo = make_algorithm(validate(dataclasses.replace(config, eval_episodes=episodes)))
    points = sw.grid(traced)
    hparams = sw.hparam_arrays(config, points, seeds)
    metrics = jax.device_get(jax.jit(jax.vmap(lambda s, h: sw.bind(algo, h).evaluate(s)))(state, hparams))
    rows = []
    for r in range(len(points) * seeds):
        row = {"point": sw.point_name(points[r // seeds]), "seed": r % seeds}
        ordered = eval_keys({k: None for k in metrics}, EVAL_KEYS)
        row.update({k: float(metrics[k][r]) for k in ordered})
        rows.append(row)
    return rows


def table(rows: list[dict], title: str) -> str:
    keys = [k for k in rows[0] if k not in ("point", "seed")]
    lines = [f"# {title}", "", "| point | seed | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    lines += [f"| {r['point'] or '-'} | {r['seed']} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |"
              for r in rows]
    for point in dict.fromkeys(r["point"] for r in rows):
        group = [r for r in rows if r["point"] == point]
        cells = []
        for k in keys:
            lo, hi = bootstrap_ci(np.array([r[k] for r in group]))
            cells.append(f"{np.mean([r[k] for r in group]):.4g} [{lo:.4g}, {hi:.4g}]")
        lines.append(f"| {point or '-'} | mean (95% CI) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pick_run(meta: dict, traced: dict, seed: int, point: str | None) -> int:
    points = [sw.point_name(p) for p in sw.grid(traced)]
    if point is not None and point not in points:
        raise ConfigError(f"--point {point!r} is not a sweep point of this run; valid: {', '.join(points)}")
    if not 0 <= seed < meta["seeds"]:
        raise ConfigError(f"--seed must be in [0, {meta['seeds'] - 1}], got {seed}")
    return (points.index(point) if point is not None else 0) * meta["seeds"] + seed


def main(argv: list[str] | None = None, *, compile_cache: bool | None = None) -> int:
    """The command line; ``compile_cache`` as in ``experiments/run.py`` (default: only when run as a script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    use_more_device_memory()
    try:
        if (argv is None if compile_cache is None else compile_cache) and not args.no_compile_cache:
            use_compile_cache()
        if args.episodes is not None and args.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
        if args.export:
            check_export(args.export)
        path = Path(args.path)
        out = Path(args.out) if args.out else path
        if (path / "policy.json").exists():
            policy = load_policy(path)
            episodes = args.episodes or policy.config.eval_episodes
            result = policy.evaluate(episodes, jax.random.PRNGKey(args.render_key))
            print(f"{policy.config.algo} on {policy.config.env} (exported policy, {episodes} episodes): "
                  + "  ".join(f"{k} {result[k]:.4f}" for k in eval_keys(result, EVAL_KEYS)))
            if args.render:
                from jmarl.render import render

                _, paths = render(policy.algo, policy.params, jax.random.PRNGKey(args.render_key), out, "episode",
                                  args.frames)
                print(f"wrote {paths[0]}")
            return 0

        config, state, meta, record = load_checkpoint(path, args.step, replay=False)  # evaluation needs no buffer
        traced = {k: tuple(v) for k, v in meta.get("sweep", {}).items()}
        r = pick_run(meta, traced, args.seed, args.point)
        if args.export or args.render:
            require_greedy_policy(make_algorithm(config))  # a policy that cannot be loaded back: refuse, write nothing
        episodes = args.episodes or config.eval_episodes
        rows = evaluate_runs(config, state, traced, meta["seeds"], episodes)
        title = (f"{config.algo} on {config.env}: greedy decentralised evaluation, {episodes} episodes per run, "
                 f"checkpoint {record['chunks_done']} ({record['env_steps']:,} env steps per run)")
        text = table(rows, title)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.md").write_text(text)
        (out / "evaluation.json").write_text(json.dumps({"episodes": episodes, "checkpoint": record,
                                                         "runs": rows}, indent=1))
        print(text)
        params = jax.tree.map(lambda x: x[r], state.params)
        point = sw.grid(traced)[r // meta["seeds"]]
        run_config = dataclasses.replace(config, **point)
        if args.export:
            export_policy(args.export, run_config, params,
                          {"run_dir": str(path), "seed": args.seed, "point": point, "checkpoint": record})
            print(f"exported seed {args.seed} to {args.export}")
        if args.render:
            from jmarl.render import render

            run_algo = make_algorithm(run_config)
            require_greedy_policy(run_algo)
            name = f"episode_seed{args.seed}" + (f"_{args.point}" if args.point else "")
            _, paths = render(run_algo, params, jax.random.PRNGKey(args.render_key), out, name, args.frames)
            print(f"wrote {paths[0]}" + (f" and {len(paths) - 1} frames" if len(paths) > 1 else ""))
    except DamagedCheckpoint as err:
        parser.error(damaged_message(err))
    except (ConfigError, CheckpointError) as err:
        parser.error(str(err))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
