"""TAD-PPO vs MAPPO on the TAD paper's didactic games (tad_ppo.md §6.1 Fig. 2-3, App. E Fig. 14).

The paper does not give its settings for these games; ours are below (``GAMES``), the same for both
learners on each game: no GRU (the games are fully observed), advantages left in reward units, and an
entropy bonus large enough to keep exploring until the sequential policy has seen its optimum (annealed
linearly to zero on the ten matrices and the hallway so that the greedy policies sharpen). With MAPPO's
defaults (normalised advantages, entropy 0.01) both learners settle on local optima within a few updates.
Seeds are ``split(PRNGKey(1), seeds)``; tests/algos/test_tad_ppo_learning.py asserts the paper's claims with
these settings.

    python experiments/tad_didactic.py [--games matrix_qtran matrix_tad10 hallway] [--algos tad_ppo mappo] [--seeds 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import jmarl

DIDACTIC = dict(recurrent=False, hidden_dim=32, norm_adv=False)
GAMES = {
    # Fig. 3: [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]; 6,400 episodes per seed.
    "matrix_qtran": dict(total_steps=32 * 200, num_envs=32, num_steps=1, eval_every=200, eval_episodes=4,
                         ent_coef=0.5),
    # Fig. 2: the sum over ten matrices of the greedy joint payoff (optimum 100); 96,000 episodes per seed,
    # the entropy annealed over the first 3/4; the decentralised head distils the greedy sequential chain
    # (Algorithm 4's deterministic policy), which keeps the agents on one optimum where a matrix has several.
    "matrix_tad10": dict(total_steps=64 * 1500, num_envs=64, num_steps=1, eval_every=1500, eval_episodes=8,
                         ent_coef=8.0, ent_coef_final=0.0, ent_anneal_frac=0.75, distill_target="greedy"),
    # Fig. 14: both agents must reach the far goal together (return 5); the near goal pays 4. 30,720 steps.
    "hallway": dict(total_steps=16 * 32 * 60, num_envs=16, num_steps=32, eval_every=60, eval_episodes=4,
                    ent_coef=2.0, ent_coef_final=0.0),
}
ALGOS = ("tad_ppo", "mappo")


def final_evals(algo: str, env: str, seeds: int) -> dict[str, np.ndarray]:
    """The last greedy evaluation of each seed, by key (``return``, ``score``, ``..._sequential``)."""
    config = jmarl.make_config(algo, env, **{**DIDACTIC, **GAMES[env]})
    _, metrics = jax.jit(jax.vmap(jmarl.make_train(config)))(jax.random.split(jax.random.PRNGKey(1), seeds))
    return {k[5:]: np.asarray(v[:, -1]) for k, v in metrics.items() if k.startswith("eval/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tad_ppo_didactic.md"))
    args = parser.parse_args()
    lines = [f"# TAD-PPO vs MAPPO on the didactic games ({args.seeds} seeds, final greedy evaluation)", "",
             "Settings: `experiments/tad_didactic.py` (GAMES). `decentralised` is the executed policy (TAD-PPO's "
             "distilled pi_E, MAPPO's own policy); `sequential` is TAD-PPO-T, agents deciding in order. Matrix games "
             "report the score (payoff of the greedy joint action, summed over the game's matrices).", "",
             "| game | algo | env steps per seed | decentralised (per seed) | sequential (per seed) | wall (s) |",
             "|---|---|---:|---|---|---:|"]
    for game in args.games:
        key = "score" if game.startswith("matrix") else "return"
        for algo in args.algos:
            t0 = time.perf_counter()
            evals = final_evals(algo, game, args.seeds)
            wall = time.perf_counter() - t0
            fmt = lambda v: " ".join(f"{x:g}" for x in v)  # noqa: E731
            seq = fmt(evals[key + "_sequential"]) if key + "_sequential" in evals else "-"
            lines.append(f"| {game} | {algo} | {GAMES[game]['total_steps']:,} | {fmt(evals[key])} | {seq} | "
                         f"{wall:.0f} |")
            print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
