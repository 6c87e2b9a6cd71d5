"""`make demo`: random-policy rollouts on a few environments, with their episode statistics.

Shows the environment suite working end to end (jit + vmap + scan) before any learning; it also
prints each env's known optimum so the gap a learner must close is visible.
"""

from __future__ import annotations

import time

import jax

import envs
from envs.rollout import make_random_rollout, summarise_episodes

DEMO_ENVS = ["matrix_tad10", "hallway", "checkers", "predator_prey_p2", "mpe_simple_spread", "smax_3m"]


def main() -> None:
    print(f"jmarl demo: random available actions, 64 parallel envs (jax {jax.__version__}, "
          f"{jax.default_backend()})\n")
    print(f"{'env':20s} {'agents':>6s} {'episodes':>8s} {'return':>9s} {'length':>7s} {'won':>5s} "
          f"{'optimum':>8s} {'time':>6s}")
    for name in DEMO_ENVS:
        env = envs.make(name)
        t0 = time.perf_counter()
        steps = 2 * env.spec.episode_limit + 1
        out = jax.jit(make_random_rollout(env, 64, steps))(jax.random.PRNGKey(0))
        stats = summarise_episodes(out)
        spec = env.spec
        optimum = "-" if spec.optimal_return is None else f"{spec.optimal_return:.2f}"
        won = f"{stats['won']:.2f}" if spec.has_won else "-"
        print(f"{name:20s} {spec.num_agents:6d} {stats['episodes']:8d} {stats['return']:9.2f} "
              f"{stats['length']:7.1f} {won:>5s} {optimum:>8s} {time.perf_counter() - t0:5.1f}s")


if __name__ == "__main__":
    main()
