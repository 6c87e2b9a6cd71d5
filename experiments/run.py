"""Train an algorithm on an environment over several seeds in one compiled program.

    python experiments/run.py --algo dpo --env matrix_dpo4 --seeds 8 --total-steps 20000 \
        --set lr=1e-3 --set epochs=10 --out runs/dpo_matrix

Invalid input (unknown algorithm, env or hyperparameter, bad value) exits with code 2 and a
one-line message before anything is compiled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
import jmarl  # noqa: E402
from jmarl.config import ConfigError, parse_value  # noqa: E402
from jmarl.registry import config_class  # noqa: E402


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> Parser:
    p = Parser(prog="run.py", description=__doc__.splitlines()[0])
    p.add_argument("--algo", required=True, help=f"one of: {', '.join(jmarl.algorithm_names())}")
    p.add_argument("--env", required=True, help="an environment name (see README)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds, vmapped in one program")
    p.add_argument("--seed", type=int, default=0, help="base seed")
    p.add_argument("--total-steps", type=int, default=None, help="env steps per seed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    p.add_argument("--out", default=None, help="results directory (config.json, metrics.jsonl, summary.json)")
    return p


def resolve(args: argparse.Namespace):
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    cls = config_class(args.algo)
    if args.env not in envs.names():
        jmarl.make_config(args.algo, args.env)  # raises with suggestions
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(cls, key.strip(), value)
    if args.total_steps is not None:
        overrides["total_steps"] = args.total_steps
    return jmarl.make_config(args.algo, args.env, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = resolve(args)
    except ConfigError as err:
        parser.error(str(err))
    from jmarl.runner import run

    run(config, args.seeds, args.out, base_seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
