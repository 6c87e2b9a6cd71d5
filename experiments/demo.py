"""`make demo`: the environment suite under a random policy, then a short DPO training.

Part 1 rolls out random available actions on a few environments (jit + vmap + scan) and prints
their episode statistics next to each env's known optimum. Part 2 trains DPO on DPO's fourth
matrix game for a few seconds and prints the greedy return it reaches against random play.
"""

from __future__ import annotations

import time

import jax

import envs
import jmarl
from envs.rollout import make_random_rollout, summarise_episodes
from jmarl.runner import run

DEMO_ENVS = ["matrix_tad10", "hallway", "checkers", "predator_prey_p2", "mpe_simple_spread", "smax_3m"]


def random_rollouts() -> None:
    print(f"Random available actions, 64 parallel envs (jax {jax.__version__}, {jax.default_backend()})\n")
    print(f"{'env':20s} {'agents':>6s} {'episodes':>8s} {'return':>9s} {'length':>7s} {'won':>5s} "
          f"{'optimum':>8s} {'time':>6s}")
    for name in DEMO_ENVS:
        env = envs.make(name)
        t0 = time.perf_counter()
        steps = 2 * env.spec.episode_limit + 1
        stats = summarise_episodes(jax.jit(make_random_rollout(env, 64, steps))(jax.random.PRNGKey(0)))
        spec = env.spec
        optimum = "-" if spec.optimal_return is None else f"{spec.optimal_return:.2f}"
        won = f"{stats['won']:.2f}" if spec.has_won else "-"
        print(f"{name:20s} {spec.num_agents:6d} {stats['episodes']:8d} {stats['return']:9.2f} "
              f"{stats['length']:7.1f} {won:>5s} {optimum:>8s} {time.perf_counter() - t0:5.1f}s")


def short_training() -> None:
    print("\nDPO on matrix_dpo4 (payoff 20/0/0/10; random play earns 7.5, the optimum is 20), 4 seeds:")
    config = jmarl.make_config("dpo", "matrix_dpo4", total_steps=4096, num_envs=32, num_steps=8, eval_every=4,
                               hidden_dim=32, epochs=5)
    run(config, seeds=4)


def main() -> None:
    random_rollouts()
    short_training()


if __name__ == "__main__":
    main()
