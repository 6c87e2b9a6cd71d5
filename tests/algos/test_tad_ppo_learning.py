"""TAD-PPO against MAPPO on the paper's didactic games (tad_ppo.md §6.1 Fig. 2-3, App. E Fig. 14).

The settings (ours: the paper gives none for these games) live in experiments/tad_didactic.py, which
also writes the per-seed numbers quoted in docs/reproducing.md.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
from tad_didactic import final_evals  # noqa: E402


def test_qtran_tad_finds_the_8_and_mappo_stays_in_the_zero_block():
    """Fig. 3: [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]; 6400 episodes per seed."""
    tad = final_evals("tad_ppo", "matrix_qtran", 4)
    mappo = final_evals("mappo", "matrix_qtran", 4)
    np.testing.assert_array_equal(tad["return_sequential"], 8.0)
    np.testing.assert_array_equal(tad["return"], 8.0)  # the distilled decentralised policy
    np.testing.assert_array_equal(mappo["return"], 0.0)


@pytest.mark.slow
def test_tad10_tad_scores_100_and_mappo_does_not():
    """Fig. 2: the sum over the ten matrices of the greedy joint payoff, 100 on at least 9 of 10 seeds."""
    tad = final_evals("tad_ppo", "matrix_tad10", 10)
    mappo = final_evals("mappo", "matrix_tad10", 10)
    assert np.isclose(tad["score"], 100.0).sum() >= 9, tad["score"]
    assert np.isclose(tad["score_sequential"], 100.0).sum() >= 9, tad["score_sequential"]
    assert (mappo["score"] < 99.0).all(), mappo["score"]


@pytest.mark.slow
def test_hallway_tad_returns_5_and_mappo_4():
    """Fig. 14: both agents must reach the far goal together (return 5); the near goal pays 4."""
    tad = final_evals("tad_ppo", "hallway", 4)
    mappo = final_evals("mappo", "hallway", 4)
    np.testing.assert_array_equal(tad["return_sequential"], 5.0)
    np.testing.assert_array_equal(tad["return"], 5.0)
    np.testing.assert_array_equal(mappo["return"], 4.0)
