"""DPO's theory on the paper's 2x2 matrix games (dpo.md Theorem 3.3, eq. 17, App. C, Table 3, Fig. 11).

NumPy/SciPy only: this checks the paper's claims, not jmarl's networks. Two agents, two actions;
agent 1 plays action 0 with probability p, agent 2 with probability q; the payoff (a, b, c, d) is
r(0,0), r(0,1), r(1,0), r(1,1) (Table 3). A game is one step, so J(pi) = E_pi[r],
A_old(a1, a2) = r(a1, a2) - J(pi_old), and agent i's advantage is A_i(a_i) = E_{a_-i ~ pi_old}[A_old].

The constant hat M. Theorem 3.3 prints hat M = sqrt((N-1)/N * 2 r_max / (1 - gamma)), but its proof,
(14) -> (16), gives tilde M * sqrt((N-1)/N) with tilde M = 2M = 2 r_max / (1 - gamma): the square root
is misplaced in the statement (it would make hat M the square root of a reward). For a one-step game
gamma -> 0, so M = r_max, which bounds |A_old| here since every payoff is >= 0. ``m_hat_proof`` is that
constant, ``m_hat_printed`` the printed one. With the proof's constant the bound (12) holds, but the
iteration (17) never moves (Pinsker: the sqrt(KL) penalty outweighs any gain; see the test). App. C
describes improvement and policies converging to (sub-)optima, which needs a smaller constant than the
paper states or gives; the iteration is therefore also run with the printed constant and with small
ones (0.5, 0.1), where the bound (12) is not guaranteed (it fails for the printed one, see the test),
so monotonic improvement there is an observation, not a consequence of the theorem. C = 10 as in the paper.
"""

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

GAMES = {1: (5.0, 7.0, 6.0, 4.0), 2: (1.0, 3.0, 5.0, 4.0), 3: (7.0, 1.0, 1.0, 3.0), 4: (20.0, 0.0, 0.0, 10.0)}
N, C = 2, 10.0
EPS = 1e-9
ITERS = 300
STARTS = [(0.5, 0.5)] + [tuple(x) for x in np.random.default_rng(0).uniform(0.05, 0.95, size=(3, 2))]


def m_hat_proof(payoff):
    r_max = max(abs(x) for x in payoff)
    return math.sqrt((N - 1) / N) * 2.0 * r_max


def m_hat_printed(payoff):
    r_max = max(abs(x) for x in payoff)
    return math.sqrt((N - 1) / N * 2.0 * r_max)


def value(p, q, payoff):
    a, b, c, d = payoff
    return p * q * a + p * (1 - q) * b + (1 - p) * q * c + (1 - p) * (1 - q) * d


def kl(x, y):
    """KL(Bernoulli(x) || Bernoulli(y)); works on arrays of y."""
    return x * np.log(x / y) + (1 - x) * np.log((1 - x) / (1 - y))


def advantages(p, q, payoff):
    """Each agent's advantage of its two actions under pi_old = (p, q): A_i(a_i) = E_{a_-i}[r] - J."""
    a, b, c, d = payoff
    j = value(p, q, payoff)
    adv1 = np.array([q * a + (1 - q) * b, q * c + (1 - q) * d]) - j
    adv2 = np.array([p * a + (1 - p) * c, p * b + (1 - p) * d]) - j
    return adv1, adv2


def surrogate(x, y, adv, m_hat):
    """Eq. 17 for one agent: (1/N) sum_a pi(a) A_i(a) - hat M sqrt(KL(pi_old || pi)) - C KL, pi = (y, 1 - y)."""
    k = np.maximum(kl(x, y), 0.0)
    return (y * adv[0] + (1 - y) * adv[1]) / N - m_hat * np.sqrt(k) - C * k


def best_response(x, adv, m_hat):
    """argmax over y in (eps, 1 - eps): a grid for the basin, then bounded Brent around it.

    Moves only on a gain above round-off (1e-12), so the result is never worse than staying at x.
    """
    grid = np.linspace(EPS, 1 - EPS, 2001)
    i = int(np.argmax(surrogate(x, grid, adv, m_hat)))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(lambda y: -surrogate(x, y, adv, m_hat), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-12})
    return res.x if -res.fun > surrogate(x, x, adv, m_hat) + 1e-12 else x


def iterate(p, q, payoff, m_hat, iters=ITERS):
    """Eq. 17 applied by both agents independently and simultaneously; returns the (p, q) path.

    Stops early at an exact fixed point (the map depends on (p, q) only, so it would stay there).
    """
    path = [(p, q)]
    for _ in range(iters):
        adv1, adv2 = advantages(p, q, payoff)
        p, q = best_response(p, adv1, m_hat), best_response(q, adv2, m_hat)
        path.append((p, q))
        if path[-1] == path[-2]:
            break
    return np.array(path)


def check_monotone_and_converged(path, payoff):
    values = value(path[:, 0], path[:, 1], payoff)
    assert np.diff(values).min() >= -1e-9, "J(pi_t) decreased"
    assert np.abs(path[-1] - path[-2]).max() < 1e-4, "policies still moving"
    return values


@pytest.mark.parametrize("game", GAMES)
def test_theorem_3_3_bound_with_the_proofs_constant(game):
    """Eq. 12 with hat M = 2 r_max sqrt((N-1)/N) holds on 20,000 random pairs (pi_old, pi):

    L_joint - C KL >= (1/N) sum_i L_i - hat M sum_i sqrt(KL_i) - C sum_i KL_i. In a one-step game
    L_joint(pi) = J(pi) - J(pi_old) and L_i(pi^i) = J(pi^i, pi_old^-i) - J(pi_old): both sides are closed forms.
    """
    payoff = GAMES[game]
    p, q, p2, q2 = np.random.default_rng(game).uniform(1e-3, 1 - 1e-3, size=(4, 20_000))
    j = value(p, q, payoff)
    l_joint, l1, l2 = value(p2, q2, payoff) - j, value(p2, q, payoff) - j, value(p, q2, payoff) - j
    # the one-step L_i is also sum_a pi^i(a) A_i(a) with the advantage above
    adv1, adv2 = advantages(p[0], q[0], payoff)
    np.testing.assert_allclose(l1[0], p2[0] * adv1[0] + (1 - p2[0]) * adv1[1], atol=1e-12)
    np.testing.assert_allclose(l2[0], q2[0] * adv2[0] + (1 - q2[0]) * adv2[1], atol=1e-12)
    k1, k2 = kl(p, p2), kl(q, q2)
    lhs = l_joint - C * (k1 + k2)
    rhs = (l1 + l2) / N - m_hat_proof(payoff) * (np.sqrt(k1) + np.sqrt(k2)) - C * (k1 + k2)
    assert (lhs - rhs).min() >= -1e-12


def test_printed_constant_breaks_the_bound_in_game_4():
    """With the printed hat M = sqrt(20) eq. 12 fails in game 4 (so the statement, not the proof, is off).

    pi_old = (0.99, 0.9), pi = (0.99, 0.1): only agent 2 moves. J_old = 17.82 + 0.01 = 17.83 and
    J_new = 1.98 + 0.09 = 2.07, so L_joint = L_2 = -15.76 and L_1 = 0; KL_2 = 0.8 ln 9 = 1.7578.
    The C terms cancel, leaving -15.76 >= -7.88 - hat M * 1.3258: false for sqrt(20) (-13.81),
    true for the proof's 20 sqrt(2) = 28.28 (-45.38).
    """
    payoff = GAMES[4]
    np.testing.assert_allclose(value(0.99, 0.9, payoff), 17.83, rtol=1e-12)
    np.testing.assert_allclose(value(0.99, 0.1, payoff), 2.07, rtol=1e-12)
    np.testing.assert_allclose(kl(0.9, 0.1), 0.8 * math.log(9), rtol=1e-12)
    lhs = -15.76
    for m_hat, holds in [(m_hat_printed(payoff), False), (m_hat_proof(payoff), True)]:
        rhs = -15.76 / N - m_hat * math.sqrt(0.8 * math.log(9))
        assert (lhs >= rhs) == holds
    assert math.isclose(m_hat_printed(payoff), math.sqrt(20)) and math.isclose(m_hat_proof(payoff), 20 * math.sqrt(2))


@pytest.mark.parametrize("game", GAMES)
def test_iteration_with_the_proofs_constant_never_moves(game):
    """With the proof's hat M eq. 17's argmax is pi_old itself, so J is (trivially) monotone and converged at once.

    Why: sum_a (pi - pi_old)(a) A_i(a) <= 2 M TV and, by Pinsker, sqrt(KL) >= sqrt(2) TV, so the gain
    (2M/N) TV never beats the penalty hat M sqrt(2) TV = 2 sqrt(2 (N-1)/N) M TV. Checked on a fine grid
    and by the optimiser from several starts.
    """
    payoff = GAMES[game]
    m_hat = m_hat_proof(payoff)
    grid = np.linspace(1e-4, 1 - 1e-4, 4001)
    for p, q in STARTS + [(0.9, 0.1), (0.1, 0.9), (0.95, 0.95)]:
        for x, adv in zip((p, q), advantages(p, q, payoff), strict=True):
            assert surrogate(x, grid, adv, m_hat).max() <= 1e-12
        path = iterate(p, q, payoff, m_hat, iters=3)
        np.testing.assert_allclose(path[-1], (p, q), atol=1e-9)


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("constant", ["printed", 0.5, 0.1])
def test_iteration_improves_monotonically_and_converges(game, constant):
    """Eq. 17 by both agents at once: J(pi_t) never falls and (p, q) converges, from (0.5, 0.5) and 3 random starts."""
    payoff = GAMES[game]
    m_hat = m_hat_printed(payoff) if constant == "printed" else constant
    for p, q in STARTS:
        check_monotone_and_converged(iterate(p, q, payoff, m_hat), payoff)


def test_fig_11_outcomes():
    """What the iteration reaches (hat M = 0.1, C = 10), as far as the text of App. C describes Fig. 11.

    Game 4 from (0.5, 0.5) climbs to the 20 corner (p, q -> 1), not the 10 one; game 3 from (0.5, 0.5) to the
    7 corner. Sub-optima: game 1 from (0.2, 0.8) ends at the 6 corner (p -> 0, q -> 1) although 7 is reachable,
    and game 3 from (0.1, 0.1) at the 3 corner. With the printed constant, game 4 from (0.5, 0.5) does not move
    at all (J stays 7.5). Game 2 from (0.5, 0.5) heads for its optimum 5 (p -> 0, q -> 1) but the sqrt(KL) term
    stops it short (J < 4.99): the only sense in which game 2 is "trapped" here, since 5 is its only pure equilibrium.
    """
    def final(game, start, m_hat=0.1):
        path = iterate(*start, GAMES[game], m_hat)
        check_monotone_and_converged(path, GAMES[game])
        return path[-1], value(*path[-1], GAMES[game])

    (p, q), j = final(4, (0.5, 0.5))
    assert p > 0.99 and q > 0.99 and j > 19.9
    (p, q), j = final(3, (0.5, 0.5))
    assert p > 0.99 and q > 0.99 and j > 6.95
    (p, q), j = final(1, (0.2, 0.8))
    assert p < 0.05 and q > 0.95 and 5.8 < j < 6.0
    (p, q), j = final(3, (0.1, 0.1))
    assert p < 0.01 and q < 0.01 and 2.95 < j < 3.0
    (p, q), j = final(4, (0.5, 0.5), m_hat_printed(GAMES[4]))
    np.testing.assert_allclose((p, q, j), (0.5, 0.5, 7.5), atol=1e-9)
    (p, q), j = final(2, (0.5, 0.5))
    assert p < 0.01 and q > 0.95 and 4.9 < j < 4.99
