"""Predator-prey (relative overgeneralisation): scripted hand-placed steps with hand-worked outcomes, a
brute-force NumPy reading of observations, states and masks, and property tests on random play."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs
from envs.core import EpisodeState
from envs.predator_prey import CATCH, DOWN, LEFT, RIGHT, STAY, UP, PredatorPrey

N = M = 8
G = 10
ENV = envs.make("predator_prey")
RESET = jax.jit(ENV.reset)
STEP = jax.jit(ENV.step)
OBSERVE = jax.jit(ENV.observe)
_STEPS = {ENV.spec.name: STEP}
FAR = (0, 0)  # where absent (removed / caught) entities are parked; they occupy nothing


def step_of(env):
    if env.spec.name not in _STEPS:
        _STEPS[env.spec.name] = jax.jit(env.step)
    return _STEPS[env.spec.name]


def place(agents, prey, env=ENV):
    """Episode state with the given present agents / prey (lists of (row, col)); the rest are absent."""
    agent_pos = list(agents) + [FAR] * (N - len(agents))
    prey_pos = list(prey) + [FAR] * (M - len(prey))
    agent_alive = [True] * len(agents) + [False] * (N - len(agents))
    prey_alive = [True] * len(prey) + [False] * (M - len(prey))
    state = env.state_from_positions(np.array(agent_pos), np.array(prey_pos), agent_alive, prey_alive)
    return EpisodeState(state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))


def acts(**chosen):
    """Actions [N]: STAY except for agents named a0..a7."""
    a = np.full(N, STAY, np.int32)
    for name, value in chosen.items():
        a[int(name[1:])] = value
    return jnp.asarray(a)


def key(i):
    return jax.random.PRNGKey(i)


def reference_views(agent_pos, agent_alive, prey_pos, prey_alive):
    """Brute-force NumPy observation [N, 75], state [300] and availability [N, 6], cell by cell."""
    grid = np.zeros((G, G, 3), np.float32)
    for (r, c), alive in zip(agent_pos, agent_alive, strict=True):
        if alive:
            grid[r, c, 0] = 1.0
    for (r, c), alive in zip(prey_pos, prey_alive, strict=True):
        if alive:
            grid[r, c, 1] = 1.0
    obs = np.zeros((N, 5, 5, 3), np.float32)
    avail = np.zeros((N, 6), bool)
    for i, ((r, c), alive) in enumerate(zip(agent_pos, agent_alive, strict=True)):
        if not alive:
            avail[i, STAY] = True
            continue
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                if 0 <= r + dr < G and 0 <= c + dc < G:
                    obs[i, dr + 2, dc + 2] = grid[r + dr, c + dc]
        avail[i, RIGHT] = c + 1 < G
        avail[i, DOWN] = r + 1 < G
        avail[i, LEFT] = c - 1 >= 0
        avail[i, UP] = r - 1 >= 0
        avail[i, STAY] = True
        avail[i, CATCH] = any(
            alive_p and abs(pr - r) + abs(pc - c) == 1
            for (pr, pc), alive_p in zip(prey_pos, prey_alive, strict=True)
        )
    return obs.reshape(N, -1), grid.reshape(-1), avail


def check_views(state, ts):
    s = jax.device_get(state.env_state)
    obs, grid, avail = reference_views(s.agent_pos, s.agent_alive, s.prey_pos, s.prey_alive)
    np.testing.assert_array_equal(np.asarray(ts.obs), obs)
    np.testing.assert_array_equal(np.asarray(ts.state), grid)
    np.testing.assert_array_equal(np.asarray(ts.avail_actions), avail)


# ----- spec, construction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, punishment, spec_name",
    [
        ("predator_prey", -2.0, "predator_prey"),
        ("predator_prey_p0", 0.0, "predator_prey_p0"),
        ("predator_prey_p0.5", -0.5, "predator_prey_p0.5"),
        ("predator_prey_p1", -1.0, "predator_prey_p1"),
        ("predator_prey_p1.5", -1.5, "predator_prey_p1.5"),
        ("predator_prey_p2", -2.0, "predator_prey_p2"),
    ],
)
def test_registered_specs(name, punishment, spec_name):
    env = envs.make(name)
    s = env.spec
    assert env.punishment == punishment and env.capture_reward == 10.0
    assert s.name == spec_name
    assert (s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (8, 75, 300, 6, 200)
    # 8 lone catches at most (punishment each); 4 catches at most (each removes 2 of the 8 agents).
    assert s.reward_bounds == (8 * punishment, 40.0)
    assert s.optimal_return is None and s.has_won is False


def test_bounds_follow_sizes():
    env = PredatorPrey(num_agents=3, num_prey=5, grid_size=5, punishment=-1.0, capture_reward=2.0)
    # One catch at most (3 // 2); five lone catches are possible (one agent can border four prey).
    assert env.spec.reward_bounds == (-5.0, 2.0)
    assert env.spec.state_dim == 75 and env.spec.obs_dim == 75
    assert PredatorPrey(num_agents=1, num_prey=8).spec.reward_bounds == (-8.0, 0.0)
    # envs.make stamps the registered name, also where two names share a game
    assert envs.make("predator_prey").spec.name == "predator_prey"
    assert envs.make("predator_prey_p2").spec.name == "predator_prey_p2"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"grid_size": 1},
        {"grid_size": 3},  # 16 entities on 9 cells
        {"num_agents": 0},
        {"num_prey": 2.5},
        {"num_agents": True},
        {"episode_limit": 0},
        {"punishment": 1.0},
        {"punishment": float("nan")},
        {"punishment": "-2"},
        {"capture_reward": 0.0},
        {"capture_reward": float("inf")},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="PredatorPrey"):
        PredatorPrey(**kwargs)


def test_registry_rejects_preset_override():
    with pytest.raises(ValueError, match="punishment"):
        envs.make("predator_prey_p0", punishment=-1.0)


def test_state_from_positions_validates():
    ok = [(i, 0) for i in range(8)]
    prey = [(i, 5) for i in range(8)]
    with pytest.raises(ValueError, match="distinct"):
        ENV.state_from_positions(np.array(ok), np.array(ok))
    with pytest.raises(ValueError, match="lie in"):
        ENV.state_from_positions(np.array([(10, 0)] + ok[1:]), np.array(prey))
    with pytest.raises(ValueError, match="shape"):
        ENV.state_from_positions(np.array(ok[:7]), np.array(prey))
    # Absent entities may sit anywhere, even on a present one.
    ENV.state_from_positions(np.array(ok), np.array([(0, 0)] + prey[1:]), prey_alive=[False] + [True] * 7)


# ----- reset, observation, masks ---------------------------------------------------------------------------


def test_reset_places_distinct_entities_and_is_deterministic():
    cells = set()
    for i in range(5):
        state, ts = RESET(key(i))
        s = state.env_state
        pos = np.concatenate([np.asarray(s.agent_pos), np.asarray(s.prey_pos)])
        assert pos.min() >= 0 and pos.max() < G
        assert len({tuple(p) for p in pos.tolist()}) == N + M
        assert bool(s.agent_alive.all()) and bool(s.prey_alive.all())
        assert not bool(ts.terminated) and not bool(ts.truncated)
        assert int(ts.info["prey_remaining"]) == 8 and int(ts.info["agents_remaining"]) == 8
        check_views(state, ts)
        cells |= {tuple(p) for p in pos.tolist()}
        again, ts_again = RESET(key(i))
        for a, b in zip(jax.tree.leaves((state, ts)), jax.tree.leaves((again, ts_again)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(cells) > 40  # placements differ between keys


def test_observation_of_hand_placed_state():
    # agent 0 at the top-left corner, agent 1 two columns right, agent 2 out of agent 0's window.
    agents = [(0, 0), (1, 2), (3, 3), (0, 1)]
    prey = [(2, 0), (0, 3)]
    ep = place(agents, prey)
    alive = np.array([True, True, True, False] + [False] * 4)
    # agent 3 removed at (0, 1)
    ep = ep.replace(env_state=ep.env_state.replace(agent_alive=jnp.asarray(alive)))
    ts = OBSERVE(ep.env_state)
    obs, state = np.asarray(ts.obs), np.asarray(ts.state)
    assert obs.shape == (8, 75) and state.shape == (300,)
    # Window cell (i, j) of agent 0 is grid cell (i - 2, j - 2); flat index (5 i + j) * 3 + channel.
    expected0 = np.zeros(75)
    expected0[(2 * 5 + 2) * 3 + 0] = 1  # itself
    expected0[(3 * 5 + 4) * 3 + 0] = 1  # agent 1 at offset (+1, +2)
    expected0[(4 * 5 + 2) * 3 + 1] = 1  # prey 0 at offset (+2, 0)
    np.testing.assert_array_equal(obs[0], expected0)  # removed agent 3 at (0, 1) is invisible
    expected1 = np.zeros(75)
    expected1[(1 * 5 + 0) * 3 + 0] = 1  # agent 0 at offset (-1, -2)
    expected1[(2 * 5 + 2) * 3 + 0] = 1  # itself
    expected1[(4 * 5 + 3) * 3 + 0] = 1  # agent 2 at offset (+2, +1)
    expected1[(3 * 5 + 0) * 3 + 1] = 1  # prey 0 at offset (+1, -2)
    expected1[(1 * 5 + 3) * 3 + 1] = 1  # prey 1 at offset (-1, +1)
    np.testing.assert_array_equal(obs[1], expected1)
    assert not obs[3:].any()  # removed agents see nothing
    expected_state = np.zeros(300)
    for r, c in agents[:3]:
        expected_state[(r * 10 + c) * 3] = 1
    for r, c in prey:
        expected_state[(r * 10 + c) * 3 + 1] = 1
    np.testing.assert_array_equal(state, expected_state)
    check_views(ep, ts)


def test_available_actions_of_hand_placed_state():
    agents = [(0, 0), (9, 9), (5, 5), (3, 3), (9, 0)]
    prey = [(0, 1), (8, 8), (6, 5), (8, 0)]
    ep = place(agents, prey)
    s = ep.env_state
    # agent 3 removed; prey 3 (next to agent 4) already caught.
    s = s.replace(agent_alive=s.agent_alive.at[3].set(False), prey_alive=s.prey_alive.at[3].set(False))
    avail = np.asarray(OBSERVE(s).avail_actions)
    T, F = True, False
    #                     right down left up stay catch
    expected = np.array([[T, T, F, F, T, T],   # corner; prey to the right (the move stays available)
                         [F, F, T, T, T, F],   # opposite corner; prey only diagonal
                         [T, T, T, T, T, T],   # centre; prey below
                         [F, F, F, F, T, F],   # removed
                         [T, F, F, T, T, F],   # bottom-left; the prey above it is caught
                         [F, F, F, F, T, F],
                         [F, F, F, F, T, F],
                         [F, F, F, F, T, F]])
    np.testing.assert_array_equal(avail, expected)


# ----- movement --------------------------------------------------------------------------------------------


def test_blocked_and_masked_moves_leave_agents_in_place():
    agents = [(3, 3), (3, 4), (6, 6), (0, 0), (9, 9), (0, 5), (2, 8)]
    prey = [(7, 6)]
    actions = acts(a0=RIGHT, a1=STAY, a2=DOWN, a3=UP, a4=RIGHT, a5=CATCH, a6=LEFT)
    for i in range(5):
        state, ts = STEP(key(i), place(agents, prey), actions)
        pos = np.asarray(state.env_state.agent_pos)[:7].tolist()
        # into an agent, stay, into a prey, off-grid up, off-grid right, catch with no prey, free move
        assert pos == [[3, 3], [3, 4], [6, 6], [0, 0], [9, 9], [0, 5], [2, 7]]
        assert float(ts.reward) == 0.0
        prey_now = tuple(np.asarray(state.env_state.prey_pos)[0].tolist())
        assert prey_now in {(8, 6), (7, 5), (7, 7)}  # fled; (6, 6) holds an agent
        check_views(state, ts)


def test_out_of_range_actions_inside_jit_act_as_stay():
    agents = [(4, 4), (5, 5)]
    state, ts = STEP(key(0), place(agents, [(9, 9)]), jnp.array([-1, 6, 0, 0, 0, 0, 0, 0], jnp.int32))
    assert np.asarray(state.env_state.agent_pos)[:2].tolist() == [[4, 4], [5, 5]]
    with pytest.raises(ValueError, match="actions must lie"):
        ENV.step(key(0), place(agents, [(9, 9)]), jnp.array([-1, 6, 0, 0, 0, 0, 0, 0], jnp.int32))


def test_agents_move_one_at_a_time_in_random_order():
    # Agent 0 follows agent 1 to the right: it gets in only if agent 1 moved first.
    # Agents 2 and 3 race for the same free cell (5, 6): exactly one of them gets it.
    agents = [(2, 2), (2, 3), (5, 5), (5, 7)]
    actions = acts(a0=RIGHT, a1=RIGHT, a2=RIGHT, a3=LEFT)
    follow, race = set(), set()
    for i in range(40):
        state, _ = STEP(key(i), place(agents, [(9, 9)]), actions)
        pos = [tuple(p) for p in np.asarray(state.env_state.agent_pos)[:4].tolist()]
        assert pos[1] == (2, 4)
        follow.add(pos[0])
        assert (pos[2], pos[3]) in {((5, 6), (5, 7)), ((5, 5), (5, 6))}
        race.add((pos[2], pos[3]))
    assert follow == {(2, 2), (2, 3)}
    assert len(race) == 2


def test_prey_flee_to_a_uniform_free_neighbour_or_stay_when_blocked():
    # Prey 0 boxed into a corner by two agents; prey 1 with three sides blocked; prey 2 free.
    agents = [(0, 1), (1, 0), (4, 5), (6, 5), (5, 4)]
    prey = [(0, 0), (5, 5), (8, 2)]
    counts = {}
    for i in range(200):
        state, ts = STEP(key(i), place(agents, prey), acts())
        p = [tuple(x) for x in np.asarray(state.env_state.prey_pos)[:3].tolist()]
        assert p[0] == (0, 0) and p[1] == (5, 6)
        counts[p[2]] = counts.get(p[2], 0) + 1
    assert set(counts) == {(8, 3), (9, 2), (8, 1), (7, 2)}  # never stays when it can move
    assert all(25 <= c <= 80 for c in counts.values()), counts  # 50 expected each, sd about 6


# ----- catching --------------------------------------------------------------------------------------------


def test_two_catchers_capture_and_leave_the_grid():
    agents = [(4, 4), (4, 6), (8, 8)]
    prey = [(4, 5), (0, 0)]
    for i in range(3):
        state, ts = STEP(key(i), place(agents, prey), acts(a0=CATCH, a1=CATCH))
        s = state.env_state
        assert float(ts.reward) == 10.0
        assert np.asarray(s.agent_alive)[:3].tolist() == [False, False, True]
        assert np.asarray(s.prey_alive)[:2].tolist() == [False, True]
        assert not bool(ts.terminated) and not bool(ts.truncated)
        assert int(ts.info["prey_remaining"]) == 1 and int(ts.info["agents_remaining"]) == 1
        assert float(ts.info["episode_return"]) == 10.0 and int(ts.info["episode_length"]) == 1
        obs, avail = np.asarray(ts.obs), np.asarray(ts.avail_actions)
        assert not obs[:2].any()
        np.testing.assert_array_equal(avail[:2], np.eye(6, dtype=bool)[[STAY, STAY]])
        grid = np.asarray(ts.state).reshape(10, 10, 3)
        assert grid[4, 4:7].sum() == 0 and grid.sum() == 2  # agent 2 and prey 1 only
        check_views(state, ts)
        # Removed agents cannot act any more: a move keeps them where they were.
        state2, ts2 = STEP(key(i + 10), state, acts(a0=DOWN, a1=CATCH))
        assert np.asarray(state2.env_state.agent_pos)[:2].tolist() == [[4, 4], [4, 6]]
        assert float(ts2.reward) == 0.0 and not np.asarray(ts2.obs)[:2].any()


def test_three_catchers_capture_once():
    agents = [(4, 5), (5, 4), (5, 6), (0, 9)]
    state, ts = STEP(key(0), place(agents, [(5, 5), (9, 0)]), acts(a0=CATCH, a1=CATCH, a2=CATCH))
    assert float(ts.reward) == 10.0
    assert np.asarray(state.env_state.agent_alive)[:4].tolist() == [False, False, False, True]


def test_removed_agents_do_not_count_as_catchers():
    ep = place([(4, 4), (4, 6), (0, 0)], [(4, 5), (9, 9)])
    s = ep.env_state.replace(agent_alive=ep.env_state.agent_alive.at[1].set(False))
    state, ts = STEP(key(0), ep.replace(env_state=s), acts(a0=CATCH, a1=CATCH))
    assert float(ts.reward) == -2.0  # agent 0 is the only catcher left
    assert bool(state.env_state.prey_alive[0])


@pytest.mark.parametrize(
    "name, p", [("predator_prey", -2.0), ("predator_prey_p0.5", -0.5), ("predator_prey_p0", 0.0)]
)
def test_lone_catcher_is_punished_once_per_prey(name, p):
    env = envs.make(name)
    step = step_of(env)
    far = [(9, 9)]
    # One prey next to the lone catcher.
    _, ts = step(key(0), place([(5, 5)] + far, [(5, 4), (0, 0)], env), acts(a0=CATCH))
    assert float(ts.reward) == p
    # Two prey next to the same lone catcher: each of them has exactly one catcher.
    _, ts = step(key(0), place([(5, 5)] + far, [(5, 4), (4, 5), (0, 0)], env), acts(a0=CATCH))
    assert float(ts.reward) == 2 * p
    # Two lone catchers at two different prey, plus an agent next to a prey that does not catch.
    agents = [(2, 2), (7, 7), (2, 4)]
    state, ts = step(key(0), place(agents, [(2, 3), (7, 8)], env), acts(a0=CATCH, a1=CATCH))
    assert float(ts.reward) == 2 * p
    assert bool(state.env_state.agent_alive[:3].all()) and bool(state.env_state.prey_alive[:2].all())


def test_shared_catcher_outcome_depends_on_prey_order():
    # Agent 0 borders prey X (5, 4) and prey Y (5, 6); agent 1 borders X only. If X is resolved first it
    # is caught (+10) and agent 0 is gone before Y; if Y comes first agent 0 is its lone catcher (-2).
    agents = [(5, 5), (4, 4), (0, 9)]
    prey = [(5, 4), (5, 6)]
    rewards = set()
    for i in range(40):
        state, ts = STEP(key(i), place(agents, prey), acts(a0=CATCH, a1=CATCH))
        rewards.add(float(ts.reward))
        assert np.asarray(state.env_state.agent_alive)[:3].tolist() == [False, False, True]
        assert np.asarray(state.env_state.prey_alive)[:2].tolist() == [False, True]
    assert rewards == {10.0, 8.0}


# ----- episode ends ----------------------------------------------------------------------------------------


def test_last_capture_terminates():
    state, ts = STEP(key(0), place([(0, 0), (1, 1), (7, 7)], [(0, 1)]), acts(a0=CATCH, a1=CATCH))
    assert float(ts.reward) == 10.0
    assert bool(ts.terminated) and not bool(ts.truncated)
    assert int(ts.info["prey_remaining"]) == 0 and float(ts.info["episode_return"]) == 10.0


def test_removing_every_agent_terminates():
    state, ts = STEP(key(0), place([(0, 0), (1, 1)], [(0, 1), (6, 6)]), acts(a0=CATCH, a1=CATCH))
    assert float(ts.reward) == 10.0
    assert bool(ts.terminated) and int(ts.info["agents_remaining"]) == 0
    assert not np.asarray(ts.obs).any()
    np.testing.assert_array_equal(np.asarray(ts.avail_actions), np.eye(6, dtype=bool)[[STAY] * 8])


def test_truncated_at_the_limit_when_nobody_catches():
    state, ts = RESET(key(3))
    for t in range(1, 201):
        state, ts = STEP(key(100 + t), state, acts())
        assert not bool(ts.terminated)
        assert bool(ts.truncated) == (t == 200)
    assert int(ts.info["episode_length"]) == 200 and float(ts.info["episode_return"]) == 0.0
    check_views(state, ts)


def test_step_is_deterministic_for_a_key():
    state, ts = RESET(key(7))
    actions = envs.random_actions(key(8), ts.avail_actions)
    a = STEP(key(9), state, actions)
    b = STEP(key(9), state, actions)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----- random play -----------------------------------------------------------------------------------------


def test_vmapped_auto_reset_rollout():
    env = envs.wrap(ENV)
    lo, hi = ENV.spec.reward_bounds
    steps = ENV.spec.episode_limit + 5

    @jax.jit
    def rollout(k):
        st, ts = jax.vmap(env.reset)(jax.random.split(k, 4))

        def body(carry, k):
            st, ts = carry
            ka, ks = jax.random.split(k)
            a = jax.vmap(envs.random_actions)(jax.random.split(ka, 4), ts.avail_actions)
            st, ts = jax.vmap(env.step)(jax.random.split(ks, 4), st, a)
            return (st, ts), (ts.obs, ts.reward, ts.done, ts.info["episode_return"])

        return jax.lax.scan(body, (st, ts), jax.random.split(k, steps))[1]

    obs, reward, done, ret = jax.device_get(rollout(key(0)))
    assert np.isfinite(obs).all() and np.isfinite(reward).all()
    assert (reward >= lo).all() and (reward <= hi).all()
    assert done.any(axis=0).all()  # every env finishes an episode (the time limit at least)
    # The reported return of each finished episode is the sum of its rewards.
    for e in range(4):
        start = 0
        for t in np.flatnonzero(done[:, e]):
            np.testing.assert_allclose(ret[t, e], reward[start : t + 1, e].sum(), atol=1e-4)
            start = t + 1


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), catch_bias=st.floats(0.0, 0.9), misuse=st.floats(0.0, 0.3))
def test_random_play_keeps_the_rules(seed, catch_bias, misuse):
    """Random (mostly available) actions: entities stay on distinct cells, counts never grow, each
    reward is 10 per catch plus p per lone catch within the spec bounds, and the return adds up."""
    rng = np.random.default_rng(seed)
    lo, hi = ENV.spec.reward_bounds
    state, ts = RESET(key(seed))
    total = 0.0
    for t in range(40):
        prev = jax.device_get(state.env_state)
        avail = np.asarray(ts.avail_actions)
        actions = np.empty(N, np.int32)
        for i in range(N):
            if rng.random() < misuse:
                actions[i] = rng.integers(6)  # possibly unavailable: must act as stay
            elif avail[i, CATCH] and rng.random() < catch_bias:
                actions[i] = CATCH
            else:
                actions[i] = rng.choice(np.flatnonzero(avail[i]))
        state, ts = STEP(key(seed + 1000 + t), state, jnp.asarray(actions))
        s = jax.device_get(state.env_state)
        reward = float(ts.reward)

        present = np.concatenate([s.agent_pos[s.agent_alive], s.prey_pos[s.prey_alive]])
        assert present.min(initial=0) >= 0 and present.max(initial=0) < G
        assert len({tuple(p) for p in present.tolist()}) == len(present)
        assert not (s.agent_alive & ~prev.agent_alive).any() and not (s.prey_alive & ~prev.prey_alive).any()
        np.testing.assert_array_equal(s.agent_pos[~prev.agent_alive], prev.agent_pos[~prev.agent_alive])
        agent_step = np.abs(s.agent_pos - prev.agent_pos).sum(-1)
        prey_step = np.abs(s.prey_pos - prev.prey_pos).sum(-1)
        assert agent_step.max() <= 1 and prey_step.max() <= 1
        moved = agent_step == 1
        assert avail[moved, actions[moved]].all() and (actions[moved] < STAY).all()

        caught = int(prev.prey_alive.sum() - s.prey_alive.sum())
        removed = int(prev.agent_alive.sum() - s.agent_alive.sum())
        assert removed >= 2 * caught and (removed == 0) == (caught == 0)
        lone = (reward - 10.0 * caught) / ENV.punishment
        assert lone == round(lone) and 0 <= lone <= M
        assert lo <= reward <= hi

        total += reward
        assert float(ts.info["episode_return"]) == pytest.approx(total)
        assert bool(ts.terminated) == (not s.prey_alive.any() or not s.agent_alive.any())
        check_views(state, ts)
        if bool(ts.terminated):
            break
