"""Fuzzing every registered environment with long random action sequences, through the auto-reset env.

Hypothesis draws a seed and how often agents pick an action uniformly over *all* actions (available or
not) or an out-of-range value; NumPy turns the seed into fixed-shape action arrays, and one jitted
``lax.scan`` per env (compiled once, reused by every example) steps ``AutoReset(env)`` with them. The
same run is then repeated with every action replaced by the one the env documents it to act as
(clipped, stay, no-op or stop): both runs must agree step for step. The
trajectories are then checked in NumPy against the rules: finite values, per-step reward bounds derived
from each env's rules (``RULES``), episodes that end by the step limit with the right counters, and
per-family invariants written independently of the env code.

The fast suite fuzzes one representative env per family (``FAST``); ``-m slow`` fuzzes all of them.
Continuous-action envs are fuzzed in tests/envs/test_continuous_fuzz.py.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_continuous_fuzz import CONTINUOUS
from test_markov_matrix import check_markov_matrix

import envs

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Rule:
    """What an env's rules promise: its family, its step limit and the bounds of one step's team reward."""

    family: str
    limit: int
    low: float
    high: float
    why: str


def _pp(p: float) -> Rule:
    return Rule("predator_prey", 200, 8 * p, 40.0,
                f"each of 8 prey adds its punishment {p} at most once; a capture (+10) removes >= 2 of 8 agents")


_SMAX = Rule("smax", 100, 0.0, 2.0, "enemy health lost, normalised per unit and per enemy (<= 1), plus 1 on a win")

RULES: dict[str, Rule] = {
    "matrix": Rule("matrix", 1, -1.0, 3.0, "this test's 3-agent table MATRIX_PAYOFF holds -1..3"),
    "matrix_tad10": Rule("matrix", 1, -20.0, 10.0, "TAD-PPO Table 3: every entry lies in [-20, 10]"),
    "matrix_qtran": Rule("matrix", 1, -12.0, 8.0, "[[8,-12,-12],[-12,0,0],[-12,0,0]]"),
    "matrix_penalty": Rule("matrix", 1, -30.0, 10.0, "[[10,-30,-30],[-30,5,-30],[-30,-30,1]]"),
    "matrix_dpo1": Rule("matrix", 1, 4.0, 7.0, "DPO game 1: (a, b, c, d) = (5, 7, 6, 4)"),
    "matrix_dpo2": Rule("matrix", 1, 1.0, 5.0, "DPO game 2: (1, 3, 5, 4)"),
    "matrix_dpo3": Rule("matrix", 1, 1.0, 7.0, "DPO game 3: (7, 1, 1, 3)"),
    "matrix_dpo4": Rule("matrix", 1, 0.0, 20.0, "DPO game 4: (20, 0, 0, 10)"),
    "markov_matrix": Rule("markov_matrix", 10, -20.0, 10.0, "TAD-PPO Table 3 entries, one table a step"),
    "markov_matrix_random": Rule("markov_matrix", 10, -20.0, 10.0, "TAD-PPO Table 3 entries, one table a step"),
    "stochastic_game": Rule("stochastic_game", 25, 0.0, 1.0 - 2.0**-24, "reward is a 24-bit uniform on [0, 1)"),
    "hallway": Rule("hallway", 100, -1.0, 7.0, "-1 per step, plus 8 (both on g1) or 5 (both on g2)"),
    "predator_prey": _pp(-2.0),
    "predator_prey_p0": _pp(0.0),
    "predator_prey_p0.5": _pp(-0.5),
    "predator_prey_p1": _pp(-1.0),
    "predator_prey_p1.5": _pp(-1.5),
    "predator_prey_p2": _pp(-2.0),
    "checkers": Rule("checkers", 100, -11.0, 11.0, "one fruit per agent a step: agent 1 +-10, agent 2 +-1"),
    "mpe_simple_spread": Rule("mpe", 25, -math.inf, 0.0, "minus uncovered distance minus collisions: never positive"),
    "mpe_line_control": Rule("mpe", 25, -15.0, 0.0, "minus a matched mean distance, clipped at -15"),
    "mpe_circle_control": Rule("mpe", 25, -15.0, 0.0, "minus a matched mean distance, clipped at -15"),
    **{name: _SMAX for name in envs.names() if name.startswith("smax_")},
    "lbf": Rule("lbf", 100, 0.0, 1.0, "normalised food levels eaten: clearing the grid pays 1 in all"),
    "rware": Rule("rware", 500, 0.0, 2.0, "at most one delivery (+1) per delivery cell a step, two cells"),
}

MATRIX_PAYOFF = (np.arange(27).reshape(3, 3, 3) * 7 % 5 - 1).astype(np.float32)  # 3 agents, 3 actions
MAKE_KWARGS = {"matrix": {"payoff": MATRIX_PAYOFF}}

# One env per family in the fast suite (the cheapest to compile where a family has several; the two
# jumanji adapters count as one family: rware, the slower to compile, is fuzzed in the slow suite only).
FAST = ("matrix_qtran", "markov_matrix", "stochastic_game", "hallway", "predator_prey", "checkers", "mpe_line_control",
        "smax_3m")  # the jumanji family (lbf, rware) costs ~25 s of compile each: slow suite only
FAST_EXAMPLES = 3
SLOW_EXAMPLES = 12

# What each family documents for an action that is unavailable or out of range: the in-range action it
# acts as ("clip": clipped into [0, A-1]; None: no in-range equivalent, checked by the hallway reference).
SUBSTITUTE = {"matrix": "clip", "markov_matrix": "clip", "stochastic_game": "clip", "hallway": None,
              "predator_prey": 4, "checkers": 4, "mpe": 0, "smax": 4, "lbf": 0, "rware": 0}


def num_steps(limit: int) -> int:
    """Two whole time-limited episodes and a bit: every counter wraps at least once."""
    return max(2 * limit + 3, 16)


# ----- the compiled fuzz run -----------------------------------------------------------------------------

FIXED, UNIFORM, FAVOURITE = 0, 1, 2  # how an agent's action is chosen at a step (see draw_inputs)


def pick_available(u: jax.Array, avail: jax.Array) -> jax.Array:
    """Per agent, the floor(u * count)-th available action: uniform over the available ones."""
    count = avail.sum(-1)
    k = jnp.minimum((u * count).astype(jnp.int32), count - 1)
    return jnp.argmax(avail & (jnp.cumsum(avail, -1) == k[:, None] + 1), axis=-1).astype(jnp.int32)


def differs(a: Any, b: Any) -> jax.Array:
    """Whether two pytrees of the same structure differ: exactly for ints and bools, beyond float rounding
    (1e-5 relative) for floats, since the same step compiled in two places may round differently."""

    def leaf(x: jax.Array, y: jax.Array) -> jax.Array:
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.any(jnp.abs(x - y) > 1e-5 * (1.0 + jnp.abs(x)))
        return jnp.any(x != y)

    return jnp.stack([leaf(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]).any()


def extract(family: str, state: Any) -> dict[str, jax.Array]:
    """The parts of an env state the family's invariants are about."""
    s = state.env_state
    if family == "matrix":
        return {"task": s.task}
    if family == "stochastic_game":
        return {"s": s.state, "time": s.time}
    if family == "markov_matrix":
        return {"matrix": s.matrix, "time": s.time}
    if family == "hallway":
        return {"pos": s.positions}
    if family == "predator_prey":
        return {"agent_pos": s.agent_pos, "agent_alive": s.agent_alive, "prey_pos": s.prey_pos,
                "prey_alive": s.prey_alive}
    if family == "checkers":
        return {"pos": s.positions, "apples": s.apples, "lemons": s.lemons}
    if family == "mpe":
        floats = [x.ravel() for x in jax.tree.leaves(s) if jnp.issubdtype(x.dtype, jnp.floating)]
        return {"floats": jnp.concatenate(floats)}
    if family == "smax":
        w = s.state
        return {"health": w.unit_health, "alive": w.unit_alive, "types": w.unit_types}
    if family == "lbf":
        return {"agent_pos": s.inner.agents.position, "eaten": s.inner.food_items.eaten}
    if family == "rware":
        pos = s.inner.agents.position
        return {"x": pos.x, "y": pos.y}
    raise AssertionError(f"no extractor for family {family}")


@functools.cache
def fuzz_program(name: str) -> tuple[envs.MultiAgentEnv, Any, int]:
    """(env, jitted run(key, u, fixed, mode, fav) -> trajectory, steps); compiled on first call only."""
    env = envs.make(name, **MAKE_KWARGS.get(name, {}))
    auto = envs.wrap(env)
    family = RULES[name].family
    steps = num_steps(RULES[name].limit)

    def run(key: jax.Array, u: jax.Array, fixed: jax.Array, mode: jax.Array, fav: jax.Array) -> dict[str, Any]:
        key_reset, key_steps = jax.random.split(key)
        state, ts = auto.reset(key_reset)

        def body(carry, xs):
            state, ts = carry
            step_key, u_t, fixed_t, mode_t, fav_t = xs
            fav_ok = (mode_t == FAVOURITE) & jnp.take_along_axis(ts.avail_actions, fav_t[:, None], -1)[:, 0]
            chosen = jnp.where(fav_ok, fav_t, pick_available(u_t, ts.avail_actions))
            actions = jnp.where(mode_t == FIXED, fixed_t, chosen)
            # AutoReset steps the inner env with the first half of its key: the same transition as `raw`,
            # kept for the state it ends in (AutoReset replaces it by a fresh one when the episode ends).
            raw_state, raw_ts = env.step(jax.random.split(step_key)[0], state, actions)
            next_state, next_ts = auto.step(step_key, state, actions)
            info = next_ts.info
            record = {
                "actions": actions, "avail": ts.avail_actions,
                "reward": next_ts.reward, "terminated": next_ts.terminated, "truncated": next_ts.truncated,
                "length": info["episode_length"], "ret": info["episode_return"], "won": info["won"],
                "obs": next_ts.obs, "state": next_ts.state, "next_avail": next_ts.avail_actions,
                "final_obs": info["final_obs"], "final_state": info["final_state"],
                "final_avail": info["final_avail_actions"],
                "autoreset_differs": differs(
                    (raw_ts.reward, raw_ts.terminated, raw_ts.obs, raw_ts.state, raw_ts.avail_actions),
                    (next_ts.reward, next_ts.terminated, info["final_obs"], info["final_state"],
                     info["final_avail_actions"])),
                "before": extract(family, state), "after": extract(family, raw_state),
            }
            return (next_state, next_ts), record

        xs = (jax.random.split(key_steps, steps), u, fixed, mode, fav)
        _, traj = jax.lax.scan(body, (state, ts), xs)
        traj["first_obs"], traj["first_state"], traj["first_avail"] = ts.obs, ts.state, ts.avail_actions
        return traj

    return env, jax.jit(run), steps


def draw_inputs(seed: int, steps: int, n: int, a: int, p_any: float, p_out: float, p_fav: float,
                favourite: int) -> tuple[np.ndarray, ...]:
    """Fixed-shape action inputs from a seed. Per step and agent: an out-of-range value (p_out) or an
    action uniform over all A actions (p_any), both FIXED in advance; else, decided in the scan, the
    action ``favourite % A`` when it is available (p_fav: e.g. catch, attack or load, so that the rare
    joint events happen), or an available action drawn uniformly from ``u`` (UNIFORM)."""
    rng = np.random.default_rng(seed)
    u = rng.random((steps, n), dtype=np.float32)
    any_action = rng.integers(0, a, (steps, n))
    weird = rng.choice(np.array([-1, -2, a, a + 1, INT32_MAX, INT32_MIN], np.int64), (steps, n))
    r = rng.random((steps, n))
    use_weird, use_any = r < p_out, r < p_out + p_any
    fixed = np.where(use_weird, weird, any_action).astype(np.int32)
    mode = np.where(use_any, FIXED, np.where(rng.random((steps, n)) < p_fav, FAVOURITE, UNIFORM))
    return u, fixed, mode.astype(np.int32), np.full((steps, n), favourite % a, np.int32)


def substitute(family: str, actions: np.ndarray, avail: np.ndarray) -> np.ndarray | None:
    """The in-range, available actions that ``actions`` are documented to act as (None: no such action)."""
    rule = SUBSTITUTE[family]
    a = avail.shape[-1]
    clipped = np.clip(actions, 0, a - 1)
    if rule is None:
        return None
    if rule == "clip":
        return clipped
    allowed = (actions >= 0) & (actions < a) & np.take_along_axis(avail, clipped[..., None], -1)[..., 0]
    return np.where(allowed, actions, rule).astype(np.int32)


def fuzz(name: str, seed: int, p_any: float, p_out: float, p_fav: float = 0.0,
         favourite: int = 0) -> tuple[envs.MultiAgentEnv, dict[str, Any]]:
    """Run the drawn actions, then the same episode with every action replaced by its documented
    equivalent: the two runs must agree on everything but the actions (``substitute_differs`` per step)."""
    env, program, steps = fuzz_program(name)
    n, a = env.spec.num_agents, env.spec.num_actions
    key = jax.random.PRNGKey(seed)
    u, fixed, mode, fav = draw_inputs(seed, steps, n, a, p_any, p_out, p_fav, favourite)
    traj = jax.tree.map(np.asarray, program(key, u, fixed, mode, fav))
    sub = substitute(RULES[name].family, traj["actions"], traj["avail"])
    traj["substitute_differs"] = np.zeros(steps, bool)
    if sub is not None:
        again = jax.tree.map(np.asarray, program(key, u, sub, np.full_like(mode, FIXED), fav))
        np.testing.assert_array_equal(again["actions"], sub)
        for key_, value in traj.items():
            if key_ not in ("actions", "substitute_differs") and not key_.startswith("first_"):
                for x, y in zip(jax.tree.leaves(value), jax.tree.leaves(again[key_]), strict=True):
                    traj["substitute_differs"] |= (x != y).reshape(steps, -1).any(-1)
    return env, traj


# ----- checks shared by every env ----------------------------------------------------------------------


def episode_starts(done: np.ndarray) -> np.ndarray:
    """Whether each step is the first of an episode."""
    return np.concatenate([[True], done[:-1]])


def check_common(name: str, env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    rule, spec = RULES[name], env.spec
    assert spec.episode_limit == rule.limit, f"{name}: episode_limit {spec.episode_limit}, rules say {rule.limit}"
    for key in ("first_obs", "first_state", "obs", "state", "final_obs", "final_state", "reward", "ret"):
        assert np.isfinite(t[key]).all(), f"{name}: non-finite {key}"
    for key in ("first_avail", "next_avail", "final_avail"):
        assert t[key].any(-1).all(), f"{name}: an agent with no available action in {key}"
    reward = t["reward"]
    for low, high, what in ((rule.low, rule.high, "the rules"), (*spec.reward_bounds, "spec.reward_bounds")):
        bad = (reward < low - 1e-5) | (reward > high + 1e-5)
        assert not bad.any(), f"{name}: reward {reward[bad][:5]} outside [{low}, {high}] ({what})"

    term, trunc = t["terminated"], t["truncated"]
    done = term | trunc
    assert not (term & trunc).any(), f"{name}: terminated and truncated together"
    # Reference episode counters with a plain loop.
    length, ret = np.zeros(len(done), np.int64), np.zeros(len(done))
    for i, start in enumerate(episode_starts(done)):
        length[i] = 1 if start else length[i - 1] + 1
        ret[i] = reward[i] if start else ret[i - 1] + reward[i]
    np.testing.assert_array_equal(t["length"], length, err_msg=f"{name}: episode_length")
    np.testing.assert_allclose(t["ret"], ret, rtol=1e-4, atol=1e-4, err_msg=f"{name}: episode_return")
    assert length.max() <= rule.limit, f"{name}: an episode ran {length.max()} steps, limit {rule.limit}"
    np.testing.assert_array_equal(trunc, (length == rule.limit) & ~term, err_msg=f"{name}: truncation")
    if not spec.has_won:
        assert not t["won"].any(), f"{name}: won reported by an env without wins"
    assert t["won"][~term].sum() == 0, f"{name}: won without terminating"

    # After a finished episode the next observation is a fresh episode's, else the transition's own.
    for key in ("obs", "state"):
        same = np.all((t[key] == t[f"final_{key}"]).reshape(len(done), -1), axis=-1)
        assert same[~done].all(), f"{name}: {key} differs from final_{key} mid-episode"
    assert not t["autoreset_differs"].any(), f"{name}: AutoReset's transition differs from the env's step"
    bad = t["substitute_differs"]
    assert not bad.any(), (
        f"{name}: an unavailable or out-of-range action did not act as {SUBSTITUTE[rule.family]!r} at steps "
        f"{np.flatnonzero(bad)[:5]} (actions {t['actions'][bad][:3].tolist()})"
    )
    # state continuity: what a step starts from is what the previous step left, unless an episode ended
    start = episode_starts(done)
    for key, before in t["before"].items():
        after = t["after"][key]
        np.testing.assert_allclose(before[1:][~start[1:]], after[:-1][~start[1:]], rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name}: {key} changed between steps")


# ----- per-family invariants ---------------------------------------------------------------------------


def check_matrix(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    assert t["terminated"].all() and (t["length"] == 1).all(), "a matrix game lasts exactly one step"
    payoff = np.asarray(env.payoff)
    actions = np.clip(t["actions"], 0, env.spec.num_actions - 1)
    expected = payoff[(t["before"]["task"], *actions.T)]
    np.testing.assert_array_equal(t["reward"], expected, err_msg="matrix reward is not payoff[task][actions]")


def check_stochastic_game(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    assert not t["terminated"].any(), "with discount 1 the stochastic game never terminates early"
    s, s_next = t["before"]["s"], t["after"]["s"]
    num_states = env.spec.state_dim
    np.testing.assert_array_equal(t["final_state"], np.eye(num_states)[s_next])
    assert (t["final_obs"] == t["final_state"][:, None, :]).all(), "every agent observes the state"
    np.testing.assert_array_equal(t["after"]["time"], t["before"]["time"] + 1)
    reward_table, successors, _ = env.tables()
    a = env.spec.num_actions
    joint = (np.clip(t["actions"], 0, a - 1) * a ** np.arange(env.spec.num_agents - 1, -1, -1)).sum(-1)
    np.testing.assert_allclose(t["reward"], reward_table[s, joint], rtol=0, atol=0)
    assert (successors[s, joint] == s_next[:, None]).any(-1).all(), "moved to a state that is no successor"


def check_hallway(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    pos, nxt = t["before"]["pos"], t["after"]["pos"]
    start = episode_starts(t["terminated"] | t["truncated"])
    assert (pos[start] == 1).all(), "agents start on s0 (cell 1)"
    move = np.where(t["actions"] == 0, -1, np.where(t["actions"] == 1, 1, 0))  # others leave the agent put
    expected = np.clip(pos + move, 0, 4)
    np.testing.assert_array_equal(nxt, expected, err_msg="hallway moves")
    both_g1, both_g2 = (expected == 4).all(-1), (expected == 0).all(-1)
    np.testing.assert_array_equal(t["reward"], -1.0 + 8.0 * both_g1 + 5.0 * both_g2)
    np.testing.assert_array_equal(t["terminated"], ((expected == 0) | (expected == 4)).any(-1))
    np.testing.assert_array_equal(t["won"], both_g1 | both_g2)


def check_predator_prey(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    e = env
    g = e.grid_size
    b, a = t["before"], t["after"]
    start = episode_starts(t["terminated"] | t["truncated"])
    assert b["agent_alive"][start].all() and b["prey_alive"][start].all(), "an episode starts with everyone"
    for key in ("agent_alive", "prey_alive"):
        assert not (a[key] & ~b[key]).any(), f"{key}: something came back within an episode"
    for side in (b, a):
        for key in ("agent_pos", "prey_pos"):
            assert ((side[key] >= 0) & (side[key] < g)).all(), f"{key} off the {g}x{g} grid"
        cells = np.concatenate([side["agent_pos"], side["prey_pos"]], 1) @ np.array([g, 1])
        present = np.concatenate([side["agent_alive"], side["prey_alive"]], 1)
        for row, alive in zip(cells, present, strict=True):
            assert len(set(row[alive].tolist())) == alive.sum(), "two present entities share a cell"
    prey_lost = b["prey_alive"].sum(1) - a["prey_alive"].sum(1)
    agents_lost = b["agent_alive"].sum(1) - a["agent_alive"].sum(1)
    assert (agents_lost >= 2 * prey_lost).all() and (agents_lost <= 4 * prey_lost).all(), \
        "each capture removes its 2-4 adjacent catchers and nothing else removes agents"
    rest = t["reward"] - e.capture_reward * prey_lost
    if e.punishment == 0:
        np.testing.assert_array_equal(rest, 0.0)
    else:
        lone = rest / e.punishment  # prey with exactly one catcher
        assert np.allclose(lone, np.round(lone), atol=1e-4), f"reward {t['reward']} not 10 k + p l"
        assert ((lone > -1e-4) & (lone <= b["prey_alive"].sum(1) + 1e-4)).all()
    np.testing.assert_array_equal(t["terminated"], ~a["prey_alive"].any(1) | ~a["agent_alive"].any(1))

    # Availability from the rules, for the state each step started from.
    offsets = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])
    target = b["agent_pos"][:, :, None, :] + offsets
    on_grid = ((target >= 0) & (target < g)).all(-1)
    dist = np.abs(b["agent_pos"][:, :, None, :] - b["prey_pos"][:, None, :, :]).sum(-1)
    next_to_prey = ((dist == 1) & b["prey_alive"][:, None, :]).any(-1)
    expected = np.concatenate([on_grid, np.ones_like(next_to_prey)[..., None], next_to_prey[..., None]], -1)
    expected = np.where(b["agent_alive"][..., None], expected, np.arange(6) == 4)
    np.testing.assert_array_equal(t["avail"], expected, err_msg="predator-prey available actions")
    # Moves: one cell in the chosen direction, only for present agents choosing an available move.
    step = a["agent_pos"] - b["agent_pos"]
    moved = np.abs(step).sum(-1)
    assert (moved <= 1).all(), "an agent jumped"
    act = t["actions"]
    in_range = (act >= 0) & (act < 6)
    chose_move = in_range & (act < 4) & np.take_along_axis(t["avail"], np.clip(act, 0, 5)[..., None], -1)[..., 0]
    assert not (moved.astype(bool) & ~(chose_move & b["agent_alive"])).any(), "moved without an available move"
    np.testing.assert_array_equal(step[moved == 1], offsets[act[moved == 1]])


def check_checkers(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    b, a = t["before"], t["after"]
    start = episode_starts(t["terminated"] | t["truncated"])
    assert (b["pos"][start] == np.array([[0, 6], [2, 6]])).all(), "agents start at (0, 6) and (2, 6)"
    assert (b["apples"][start].sum((1, 2)) == 9).all() and (b["lemons"][start].sum((1, 2)) == 9).all()
    pos = a["pos"]
    assert ((pos >= 0) & (pos < np.array([3, 8]))).all(), "agent off the 3x8 board"
    assert (pos[:, 0] != pos[:, 1]).any(-1).all(), "agents share a cell"
    step = pos - b["pos"]
    moved = np.abs(step).sum(-1)
    assert (moved <= 1).all(), "an agent jumped"
    moves = np.array([[1, 0], [0, -1], [-1, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(step[moved == 1], moves[t["actions"][moved == 1]])
    rows, idx = np.arange(len(pos))[:, None], (pos[..., 0], pos[..., 1])
    apple_under = b["apples"][rows, idx[0], idx[1]]
    lemon_under = b["lemons"][rows, idx[0], idx[1]]
    expected = ((apple_under.astype(float) - lemon_under) * np.array([10.0, 1.0])).sum(-1)
    np.testing.assert_allclose(t["reward"], expected, err_msg="checkers reward: fruit under each agent")
    for key in ("apples", "lemons"):
        cleared = b[key].copy()
        cleared[rows, idx[0], idx[1]] = False
        np.testing.assert_array_equal(a[key], cleared, err_msg=f"{key}: only the agents' cells are eaten")
    np.testing.assert_array_equal(t["terminated"], ~a["apples"].any((1, 2)))


def check_mpe(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    assert np.isfinite(t["before"]["floats"]).all() and np.isfinite(t["after"]["floats"]).all()
    steps, n = t["obs"].shape[:2]
    for obs, state in ((t["obs"], t["state"]), (t["final_obs"], t["final_state"])):
        full = state.reshape(steps, n, -1)
        if env.spec.name == "mpe_simple_spread":
            np.testing.assert_array_equal(obs, full, err_msg="spread state = the observations")
        else:  # the vision mask zeroes what an agent cannot see
            seen = np.isclose(obs, full, rtol=1e-5, atol=1e-6)  # computed apart from the state: may round apart
            assert (seen | (obs == 0)).all(), "an observation is neither the state's value nor masked"


def check_smax(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    e = env
    max_health = np.asarray(e.jax_env.unit_type_health)[t["before"]["types"]]
    b, a = t["before"], t["after"]
    start = episode_starts(t["terminated"] | t["truncated"])
    for side in (b, a):
        assert ((side["health"] >= 0) & (side["health"] <= max_health + 1e-4)).all(), "health outside [0, max]"
        np.testing.assert_array_equal(side["alive"], side["health"] > 0, err_msg="alive is health > 0")
    assert b["alive"][start].all(), "an episode starts with every unit alive"
    assert (a["health"] <= b["health"]).all(), "health grew within an episode"
    assert not (a["alive"] & ~b["alive"]).any(), "a dead unit came back within an episode"
    na = e.num_allies
    dead_ally = ~b["alive"][:, :na]
    assert (t["avail"][dead_ally] == (np.arange(env.spec.num_actions) == 4)).all(), "dead allies may only stop"
    allies_gone, enemies_gone = ~a["alive"][:, :na].any(1), ~a["alive"][:, na:].any(1)
    np.testing.assert_array_equal(t["terminated"], allies_gone | enemies_gone)
    np.testing.assert_array_equal(t["won"], enemies_gone & ~allies_gone)


def check_lbf(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    b, a = t["before"], t["after"]
    grid = env._env.grid_size
    assert ((a["agent_pos"] >= 0) & (a["agent_pos"] < grid)).all(), "agent off the grid"
    assert not (b["eaten"] & ~a["eaten"]).any(), "eaten food came back"
    ate = (a["eaten"] & ~b["eaten"]).any(1)
    assert not ((t["reward"] > 0) & ~ate).any(), "reward without eating"
    np.testing.assert_array_equal(t["reward"] > 0, ate)
    assert (t["ret"] <= 1.0 + 1e-5).all(), "an episode paid more than all the food"
    np.testing.assert_array_equal(t["terminated"], a["eaten"].all(1))


def check_rware(env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    a = t["after"]
    height, width = env._env.grid_size
    assert ((a["x"] >= 0) & (a["x"] < height) & (a["y"] >= 0) & (a["y"] < width)).all(), "robot off the grid"
    np.testing.assert_array_equal(t["reward"], np.round(t["reward"]), err_msg="deliveries are whole numbers")
    # Jumanji moves robots one at a time in id order; a robot that drives into a cell another robot holds
    # at that moment collides, even if that robot leaves the cell later in the same step.
    before = zip(t["before"]["x"], t["before"]["y"], strict=True)
    after = zip(a["x"], a["y"], strict=True)
    collided = []
    for (x0, y0), (x1, y1) in zip(before, after, strict=True):
        cells = [(int(x), int(y)) for x, y in zip(x0, y0, strict=True)]
        hit = False
        for i, target in enumerate(zip(x1.tolist(), y1.tolist(), strict=True)):
            if target != cells[i]:
                hit |= target in cells[:i] + cells[i + 1:]
                cells[i] = target
        collided.append(hit)
    np.testing.assert_array_equal(t["terminated"], collided, err_msg="terminated exactly when a robot collides")


FAMILY_CHECKS = {
    "matrix": check_matrix, "markov_matrix": check_markov_matrix, "stochastic_game": check_stochastic_game,
    "hallway": check_hallway,
    "predator_prey": check_predator_prey, "checkers": check_checkers, "mpe": check_mpe, "smax": check_smax,
    "lbf": check_lbf, "rware": check_rware,
}


def check_all(name: str, env: envs.MultiAgentEnv, t: dict[str, Any]) -> None:
    check_common(name, env, t)
    FAMILY_CHECKS[RULES[name].family](env, t)


# ----- the tests ---------------------------------------------------------------------------------------

examples = st.tuples(
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.25, 1.0]),  # share of actions uniform over all actions, available or not
    st.sampled_from([0.0, 0.05, 0.5]),  # share of out-of-range action values
    st.sampled_from([0.0, 0.8]),  # share of the others taking the favourite action when available
    st.integers(0, 63),  # the favourite action, modulo the number of actions
)
# Action 5 is catch (predator-prey), attack enemy 0 (SMAX) and load (LBF): captures, kills and meals.
INTERACT = (7, 0.0, 0.0, 0.8, 5)


def test_rules_cover_every_registered_env():
    assert set(RULES) == set(envs.names()) - set(CONTINUOUS)  # those: tests/envs/test_continuous_fuzz.py
    assert set(FAST) <= set(RULES) and {RULES[n].family for n in FAST} | {"lbf", "rware"} == set(FAMILY_CHECKS)


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=FAST_EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(example=examples)
@example(example=INTERACT)
def test_fuzz_representative(name, example):
    env, traj = fuzz(name, *example)
    check_all(name, env, traj)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RULES))
@settings(max_examples=SLOW_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=examples)
@example(example=INTERACT)
def test_fuzz_every_env(name, example):
    env, traj = fuzz(name, *example)
    check_all(name, env, traj)


# The checks must fail on broken trajectories: corrupt recorded ones and expect the matching failure.


def _reward_above_bound(t: dict[str, Any]) -> None:
    t["reward"][3] = 7.5


def _nan_observation(t: dict[str, Any]) -> None:
    t["obs"][2, 0, 0] = np.nan


def _episode_past_limit(t: dict[str, Any]) -> None:
    """The first episode goes on past its 25 steps, its counters consistent with that."""
    t["truncated"][24] = False
    t["length"][25:50] += 25
    t["ret"][25:50] += t["ret"][24]


def _prey_come_back(t: dict[str, Any]) -> None:
    step = int(np.flatnonzero(~t["before"]["prey_alive"].all(1))[0])  # a step with a prey already caught
    t["after"]["prey_alive"][step] = True


def _unavailable_action_acts(t: dict[str, Any]) -> None:
    t["substitute_differs"][7] = True


# what -> (env, corruption, the check expected to fail, its message); a family check alone where the shared
# checks (state continuity) would notice the corruption first.
CORRUPTIONS = {
    "reward above the bound": ("hallway", _reward_above_bound, check_all, "outside"),
    "NaN in an observation": ("hallway", _nan_observation, check_all, "non-finite obs"),
    "episode past the limit": ("stochastic_game", _episode_past_limit, check_all, "an episode ran 50 steps"),
    "caught prey come back": ("predator_prey", _prey_come_back, check_predator_prey, "came back"),
    "unavailable action acts": ("checkers", _unavailable_action_acts, check_all, "did not act as"),
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_checks_catch_broken_trajectories(what):
    name, corrupt, check, message = CORRUPTIONS[what]
    env, traj = fuzz(name, *INTERACT)
    check_all(name, env, traj)  # intact: passes
    traj = jax.tree.map(np.copy, traj)
    corrupt(traj)
    with pytest.raises(AssertionError, match=message):
        check(name, env, traj) if check is check_all else check(env, traj)


def test_pick_available_is_uniform_over_available_actions():
    avail = jnp.array([[True, False, True, True], [False, False, True, False]])
    u = jnp.array(list(itertools.product([0.0, 0.34, 0.67, 0.99], [0.5])), jnp.float32)
    picks = jax.vmap(pick_available, in_axes=(0, None))(u, avail)
    np.testing.assert_array_equal(picks[:, 0], [0, 2, 3, 3])
    np.testing.assert_array_equal(picks[:, 1], [2, 2, 2, 2])


def test_smax_unavailable_attack_never_fires():
    """Seed 0 once showed attacks on enemies out of range at the start of a step hitting them later in it
    (jaxmarl's eight world steps per env step); the adapter now turns them into stop."""
    env, traj = fuzz("smax_3m", 0, 0.25, 0.0)
    chosen = np.clip(traj["actions"], 0, env.spec.num_actions - 1)
    unavailable = ~np.take_along_axis(traj["avail"], chosen[..., None], -1)[..., 0]
    assert (unavailable & (traj["actions"] >= 5)).sum() >= 20, "the example must try unavailable attacks"
    check_all("smax_3m", env, traj)
