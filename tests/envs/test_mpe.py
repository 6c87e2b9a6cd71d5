"""MPE envs checked against independent references: jaxmarl itself for simple spread, scipy's Hungarian
assignment and a loop-by-loop NumPy transcription of MPE's particle physics for line / circle control."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import envs
from envs.mpe import CircleControl, LineControl, SimpleSpread, matching_mean_distance, optimal_matching_cost

# ------------------------------------------------------------------------------------------------
# NumPy references
# ------------------------------------------------------------------------------------------------

PUSH = {0: (0.0, 0.0), 1: (-1.0, 0.0), 2: (1.0, 0.0), 3: (0.0, -1.0), 4: (0.0, 1.0)}


def np_matched_mean(agents, targets):
    d = np.linalg.norm(
        np.asarray(agents, np.float64)[:, None] - np.asarray(targets, np.float64)[None], axis=-1
    )
    rows, cols = linear_sum_assignment(d)
    return d[rows, cols].mean()


def np_line_targets(lm, n):
    lm = np.asarray(lm, np.float64)
    unit = (lm[1] - lm[0]) / np.linalg.norm(lm[1] - lm[0])
    return np.array([lm[0] + i * (1.25 / (n - 1)) * unit for i in range(n)])


def np_circle_targets(centre, agents):
    centre = np.asarray(centre, np.float64)
    angles = []
    for p in np.asarray(agents, np.float64):
        a = math.atan2(p[1] - centre[1], p[0] - centre[0])
        angles.append(a + 2 * math.pi if a < 0 else a)
    start, n = min(angles), len(angles)
    return np.array(
        [
            centre
            + 0.5 * np.array([math.cos(start + 2 * math.pi * i / n), math.sin(start + 2 * math.pi * i / n)])
            for i in range(n)
        ]
    )


def np_mpe_step(pos, vel, actions, size=0.03):
    """The original MPE world step, written out pair by pair (damping 0.25, dt 0.1, sensitivity 5)."""
    pos, vel = np.array(pos, np.float64), np.array(vel, np.float64)
    n = len(pos)
    force = np.array([5.0 * np.array(PUSH[int(a)]) for a in actions])
    for a in range(n):
        for b in range(a + 1, n):
            delta = pos[a] - pos[b]
            dist = np.sqrt(np.sum(delta**2))
            penetration = np.logaddexp(0, -(dist - 2 * size) / 1e-3) * 1e-3
            f = 100.0 * delta / dist * penetration
            force[a] += f
            force[b] -= f
    vel = vel * 0.75 + force * 0.1
    return pos + vel * 0.1, vel


def np_spread_reward(p_pos, n, local_ratio):
    agents, landmarks = np.asarray(p_pos[:n], np.float64), np.asarray(p_pos[n:], np.float64)
    coverage = -sum(min(np.linalg.norm(a - lm) for a in agents) for lm in landmarks)
    hits = [
        sum(1 for j in range(n) if j != i and np.linalg.norm(agents[i] - agents[j]) < 0.3) for i in range(n)
    ]
    return (1 - local_ratio) * coverage - local_ratio * np.mean(hits)


# ------------------------------------------------------------------------------------------------
# Shared envs and jitted functions (compiled once per module)
# ------------------------------------------------------------------------------------------------

NAMES = ("mpe_simple_spread", "mpe_line_control", "mpe_circle_control")
ENV = {name: envs.make(name) for name in NAMES}
SPREAD, LINE, CIRCLE = (ENV[name] for name in NAMES)
RESET = {name: jax.jit(env.reset) for name, env in ENV.items()}
STEP = {name: jax.jit(env.step) for name, env in ENV.items()}  # traced actions: no range check
REWARD = {name: jax.jit(ENV[name].reward) for name in NAMES[1:]}
NUM_ENVS = 4
RANDOM_ACTIONS = jax.jit(envs.random_actions)


@functools.cache
def random_rollout(name):
    """jit(vmap(scan)) of AutoReset-wrapped steps, episode_limit + 5 steps, 4 envs, random actions.

    Keys and actions (``envs.random_actions`` over all-available masks) are drawn outside the scan, which
    keeps compilation short.  Records, per step, the state the step starts from, its key, its actions and
    the TimeStep.
    """
    env = ENV[name]
    wrapped = envs.wrap(env)
    steps, n, a = env.spec.episode_limit + 5, env.spec.num_agents, env.spec.num_actions
    key_reset, key_steps, key_actions = jax.random.split(jax.random.PRNGKey(0), 3)
    reset_keys = jax.random.split(key_reset, NUM_ENVS)
    step_keys = jax.random.split(key_steps, NUM_ENVS * steps).reshape(NUM_ENVS, steps, -1)
    actions = RANDOM_ACTIONS(key_actions, jnp.ones((NUM_ENVS, steps, n, a), bool))

    def one_env(key, keys, acts):
        def body(state, x):
            k, act = x
            new_state, ts = wrapped.step(k, state, act)
            return new_state, (state, k, act, ts)

        state, ts = wrapped.reset(key)
        return ts, jax.lax.scan(body, state, (keys, acts))[1]

    run = jax.jit(jax.vmap(one_env))
    first, again = run(reset_keys, step_keys, actions), run(reset_keys, step_keys, actions)
    jax.tree.map(np.testing.assert_array_equal, first, again)  # deterministic for fixed keys
    return first


# ------------------------------------------------------------------------------------------------
# Optimal matching
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 7])
def test_matching_equals_scipy_assignment(n):
    rng = np.random.default_rng(n)
    mean_fn, cost_fn = jax.jit(matching_mean_distance), jax.jit(optimal_matching_cost)
    for _ in range(25):
        agents = rng.uniform(-1.5, 1.5, (n, 2)).astype(np.float32)
        targets = rng.uniform(-1.5, 1.5, (n, 2)).astype(np.float32)
        np.testing.assert_allclose(
            float(mean_fn(agents, targets)), np_matched_mean(agents, targets), atol=2e-6
        )
        cost = rng.normal(size=(n, n)).astype(np.float32)  # arbitrary costs, negatives included
        rows, cols = linear_sum_assignment(cost)
        np.testing.assert_allclose(float(cost_fn(cost)), cost[rows, cols].astype(np.float64).sum(), atol=1e-5)


def test_matching_is_not_the_greedy_or_identity_pairing():
    # agent 0 is nearest to target 0, but giving it to agent 1 frees a much better overall match
    agents = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)
    targets = np.array([[0.6, 0.0], [-1.0, 0.0]], np.float32)
    # identity: 0.6 + 2.0; swapped: 1.0 + 0.4 -> mean 0.7
    assert float(matching_mean_distance(agents, targets)) == pytest.approx(0.7, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# Line and circle control
# ------------------------------------------------------------------------------------------------


def test_line_landmarks_and_target_geometry():
    keys = jax.random.split(jax.random.PRNGKey(7), 512)
    states, _ = jax.jit(jax.vmap(LINE.reset))(keys)
    lms = np.asarray(states.env_state.landmarks, np.float64)  # [512, 2, 2]
    assert np.all(np.abs(lms[:, 0]) <= 0.25) and np.all(np.abs(lms[:, 1]) < 1.0)
    np.testing.assert_allclose(np.linalg.norm(lms[:, 1] - lms[:, 0], axis=-1), 1.25, atol=1e-5)
    # directions are spread all around (not one fixed orientation)
    angle = np.arctan2(*(lms[:, 1] - lms[:, 0]).T[::-1])
    assert np.histogram(angle, bins=8, range=(-np.pi, np.pi))[0].min() > 0
    for n in (2, 5, 8):
        t = np.asarray(LineControl(num_agents=n).targets(jnp.asarray(lms[0], jnp.float32), None), np.float64)
        np.testing.assert_allclose(t[0], lms[0, 0], atol=1e-6)
        np.testing.assert_allclose(t[-1], lms[0, 1], atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(np.diff(t, axis=0), axis=-1), 1.25 / (n - 1), atol=1e-5)
        np.testing.assert_allclose(t, np_line_targets(lms[0], n), atol=1e-5)


def test_circle_target_geometry():
    rng = np.random.default_rng(0)
    centre = np.array([0.1, -0.2], np.float32)
    for n in (3, 5):
        agents = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        t = np.asarray(CircleControl(num_agents=n).targets(jnp.asarray(centre[None]), jnp.asarray(agents)))
        rel = t - centre
        np.testing.assert_allclose(np.linalg.norm(rel, axis=-1), 0.5, atol=1e-6)
        angles = np.mod(np.arctan2(rel[:, 1], rel[:, 0]), 2 * np.pi)
        np.testing.assert_allclose(
            np.sort(np.diff(np.sort(angles))), np.full(n - 1, 2 * np.pi / n), atol=1e-5
        )
        # the first target lies on the ray towards the agent of smallest polar angle
        a_rel = agents - centre
        first = a_rel[np.argmin(np.mod(np.arctan2(a_rel[:, 1], a_rel[:, 0]), 2 * np.pi))]
        np.testing.assert_allclose(t[0], centre + 0.5 * first / np.linalg.norm(first), atol=1e-6)
        np.testing.assert_allclose(t, np_circle_targets(centre, agents), atol=1e-5)


@pytest.mark.parametrize("name", NAMES[1:])
def test_formation_reward_matches_scipy(name):
    rng = np.random.default_rng(1)
    state, _ = RESET[name](jax.random.PRNGKey(2))
    lms = np.asarray(state.env_state.landmarks)
    for _ in range(20):
        agents = rng.uniform(-1.2, 1.2, (5, 2)).astype(np.float32)
        targets = np_line_targets(lms, 5) if name == "mpe_line_control" else np_circle_targets(lms[0], agents)
        np.testing.assert_allclose(
            float(REWARD[name](agents, lms)), -np_matched_mean(agents, targets), atol=2e-6
        )


@pytest.mark.parametrize("name", NAMES[1:])
def test_formation_step_physics_and_reward(name):
    state, ts = RESET[name](jax.random.PRNGKey(11))
    inner = state.env_state
    # agents 0 and 1 start overlapping (0.04 apart < 0.06) so the contact force matters
    pos = np.array([[0.0, 0.0], [0.04, 0.01], [0.5, 0.5], [-0.6, 0.3], [0.2, -0.7]], np.float32)
    vel = np.array([[0.1, 0.0], [0.0, 0.0], [0.0, -0.2], [0.3, 0.3], [0.0, 0.0]], np.float32)
    state = state.replace(env_state=inner.replace(pos=jnp.asarray(pos), vel=jnp.asarray(vel)))
    lms = np.asarray(inner.landmarks)
    # 7 and -1 are out of range (possible only inside jit): they act as the no-op 0
    for actions in ([0, 1, 2, 3, 4], [2, 2, 4, 1, 3], [4, 7, 0, 2, -1]):
        state, ts = STEP[name](jax.random.PRNGKey(0), state, jnp.array(actions, jnp.int32))
        pos, vel = np_mpe_step(pos, vel, [a if 0 <= a < 5 else 0 for a in actions])
        np.testing.assert_allclose(np.asarray(state.env_state.pos), pos, atol=1e-5)
        np.testing.assert_allclose(np.asarray(state.env_state.vel), vel, atol=1e-4)
        targets = np_line_targets(lms, 5) if name == "mpe_line_control" else np_circle_targets(lms[0], pos)
        np.testing.assert_allclose(float(ts.reward), -np_matched_mean(pos, targets), atol=1e-5)
        assert not bool(ts.terminated)


def test_hand_worked_moves():
    state, _ = RESET["mpe_line_control"](jax.random.PRNGKey(0))
    far = jnp.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.8], [0.0, -0.8], [-0.9, -0.9]])
    start = state.replace(env_state=state.env_state.replace(pos=far))
    step = lambda s, a: STEP["mpe_line_control"](jax.random.PRNGKey(0), s, jnp.array(a, jnp.int32))  # noqa: E731
    # agent 0 pushes right: v = 5 * 0.1 = 0.5, x moves 0.05;
    # again: v = 0.5 * 0.75 + 0.5 = 0.875, x moves 0.0875
    # agent 1 pushes up then idles: it coasts with v = 0.5 * 0.75 = 0.375; agents 2-4 push left, down, nothing
    s, _ = step(start, [2, 4, 1, 3, 0])
    s, _ = step(s, [2, 0, 0, 0, 0])
    pos, vel = np.asarray(s.env_state.pos), np.asarray(s.env_state.vel)
    np.testing.assert_allclose(pos[0], [-0.5 + 0.05 + 0.0875, 0.0], atol=1e-6)
    np.testing.assert_allclose(pos[1], [0.5, 0.05 + 0.0375], atol=1e-6)
    np.testing.assert_allclose(pos[2:4], [[-0.05 - 0.0375, 0.8], [0.0, -0.8 - 0.05 - 0.0375]], atol=1e-6)
    np.testing.assert_allclose(pos[4], [-0.9, -0.9], atol=1e-7)
    np.testing.assert_allclose(vel[:2], [[0.875, 0.0], [0.0, 0.375]], atol=1e-6)
    with pytest.raises(ValueError, match="actions must lie in"):
        LINE.step(jax.random.PRNGKey(0), start, jnp.array([5, 0, 0, 0, 0]))


def test_formation_observation_and_state_layout():
    n = 5
    for env, lm_count in ((LINE, 2), (CIRCLE, 1)):
        assert env.spec.obs_dim == 4 + 2 * lm_count + 2 * (n - 1)
        assert env.spec.state_dim == n * env.spec.obs_dim and env.spec.num_actions == 5
        assert env.spec.episode_limit == 25 and env.spec.reward_bounds == (-15.0, 0.0)
    assert (LINE.spec.obs_dim, CIRCLE.spec.obs_dim) == (16, 14)
    state, _ = RESET["mpe_line_control"](jax.random.PRNGKey(4))
    pos = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.99], [1.2, 0.0], [-0.3, -0.4]], np.float32)
    vel = np.arange(10, dtype=np.float32).reshape(5, 2) / 10
    lms = np.array([[0.1, 0.1], [-0.9, 0.9]], np.float32)
    inner = state.env_state.replace(pos=jnp.asarray(pos), vel=jnp.asarray(vel), landmarks=jnp.asarray(lms))
    ts = jax.jit(LINE._timestep)(inner)
    obs, full = np.asarray(ts.obs), np.asarray(ts.state).reshape(n, -1)
    # agent 0 by hand: vel, pos, landmark 0 at (0.1, 0.1), landmark 1 at distance 1.27 > vision 1: hidden,
    # others at (0.5, 0), (0, 0.99), (1.2, 0) hidden, (-0.3, -0.4)
    expect0 = [0.0, 0.1, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0, 0.5, 0.0, 0.0, 0.99, 0.0, 0.0, -0.3, -0.4]
    np.testing.assert_allclose(obs[0], expect0, atol=1e-6)
    for i in range(n):  # the state holds every agent's unmasked view
        rel = [*(lms - pos[i]), *(pos[j] - pos[i] for j in range(n) if j != i)]
        np.testing.assert_allclose(full[i], np.concatenate([vel[i], pos[i], *rel]), atol=1e-6)
        seen = [v if np.linalg.norm(v) < 1 else 0 * v for v in rel]
        np.testing.assert_allclose(obs[i], np.concatenate([vel[i], pos[i], *seen]), atol=1e-6)
    unmasked = jax.jit(LineControl(vision=None)._timestep)(inner)
    np.testing.assert_allclose(np.asarray(unmasked.obs), full, atol=1e-7)


def test_collision_penalty_and_clip():
    env = CircleControl(num_agents=3, collision_penalty=1.0, vision=None)
    reward = jax.jit(env.reward)
    lm = np.array([[0.0, 0.0]], np.float32)
    agents = np.array([[0.5, 0.0], [0.52, 0.0], [-0.5, 0.0]], np.float32)  # one touching pair (0.02 < 0.06)
    base = np_matched_mean(agents, np_circle_targets(lm[0], agents))
    assert float(reward(agents, lm)) == pytest.approx(-base - 1 / 3, abs=1e-6)
    far = np.array([[40.0, 0.0], [0.0, 40.0], [-40.0, 0.0]], np.float32)
    assert float(reward(far, lm)) == -15.0


# ------------------------------------------------------------------------------------------------
# Simple spread against jaxmarl
# ------------------------------------------------------------------------------------------------


def test_simple_spread_matches_jaxmarl():
    import jaxmarl

    raw = jaxmarl.make("MPE_simple_spread_v3", num_agents=5, num_landmarks=5)
    raw_step = jax.jit(raw.step_env)
    key = jax.random.PRNGKey(5)
    state, ts = RESET["mpe_simple_spread"](key)
    raw_obs, raw_state = raw.reset(key)
    assert SPREAD.spec.obs_dim == 30 and SPREAD.spec.state_dim == 150 and ts.obs.shape == (5, 30)
    np.testing.assert_array_equal(np.asarray(ts.obs), np.stack([raw_obs[a] for a in raw.agents]))
    np.testing.assert_array_equal(np.asarray(ts.state), np.concatenate([raw_obs[a] for a in raw.agents]))
    # squeeze agents 0 and 1 together (0.1 apart < 0.3) so that jaxmarl's per-agent rewards differ
    crowded = raw_state.p_pos.at[1].set(raw_state.p_pos[0] + jnp.array([0.1, 0.0]))
    raw_state = raw_state.replace(p_pos=crowded)
    state = state.replace(env_state=state.env_state.replace(p_pos=crowded))
    unequal = False
    for t, actions in enumerate(([0, 1, 2, 3, 4], [2, 2, 4, 1, 3], [4, 0, 0, 2, 1], [1, 1, 1, 1, 1])):
        k = jax.random.PRNGKey(100 + t)
        state, ts = STEP["mpe_simple_spread"](k, state, jnp.array(actions, jnp.int32))
        raw_obs, raw_state, raw_rew, _, _ = raw_step(
            k, raw_state, {a: actions[i] for i, a in enumerate(raw.agents)}
        )
        np.testing.assert_allclose(np.asarray(ts.obs), np.stack([raw_obs[a] for a in raw.agents]), atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(ts.state), np.concatenate([raw_obs[a] for a in raw.agents]), atol=1e-6
        )
        rewards = np.array([float(raw_rew[a]) for a in raw.agents])
        unequal |= np.ptp(rewards) > 0.1
        np.testing.assert_allclose(float(ts.reward), rewards.mean(), rtol=1e-6)
        np.testing.assert_allclose(
            float(ts.reward), np_spread_reward(np.asarray(raw_state.p_pos), 5, 0.5), rtol=1e-5
        )
        assert not bool(ts.terminated)
    assert unequal, "the scripted collision should make jaxmarl's per-agent rewards differ"


def test_simple_spread_local_ratio_zero_is_the_shared_coverage_reward():
    env = SimpleSpread(num_agents=3, local_ratio=0.0)
    assert env.spec.obs_dim == 4 + 6 + 4 + 4
    state, _ = env.reset(jax.random.PRNGKey(1))
    pos = state.env_state.p_pos.at[1].set(state.env_state.p_pos[0] + 0.05)  # a collision costs nothing now
    state = state.replace(env_state=state.env_state.replace(p_pos=pos))
    state, ts = jax.jit(env.step)(jax.random.PRNGKey(2), state, jnp.array([0, 2, 4]))
    p = np.asarray(state.env_state.p_pos, np.float64)
    coverage = -sum(min(np.linalg.norm(p[i] - p[3 + j]) for i in range(3)) for j in range(3))
    assert float(ts.reward) == pytest.approx(coverage, rel=1e-5)


def test_simple_spread_out_of_range_action_is_noop():
    state, _ = RESET["mpe_simple_spread"](jax.random.PRNGKey(0))
    step = lambda s, a: STEP["mpe_simple_spread"](jax.random.PRNGKey(1), s, jnp.array(a, jnp.int32))  # noqa: E731
    a, _ = step(state, [9, -3, 0, 5, 2])
    b, _ = step(state, [0, 0, 0, 0, 2])
    for _ in range(2):  # jaxmarl moves positions with the previous velocity: look one step further
        a, ts_a = step(a, [0] * 5)
        b, ts_b = step(b, [0] * 5)
    np.testing.assert_array_equal(np.asarray(ts_a.obs), np.asarray(ts_b.obs))
    assert np.isfinite(np.asarray(ts_a.obs)).all()
    moved = np.asarray(b.env_state.p_pos[4] - state.env_state.p_pos[4])
    assert moved[0] > 0 and moved[1] == 0  # action 2 is "right"


# ------------------------------------------------------------------------------------------------
# Truncation, auto-reset and the generic contract
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_generic_contract(name):
    env = ENV[name]
    spec = env.spec
    n = spec.num_agents
    _, ts = RESET[name](jax.random.PRNGKey(3))
    _, ts2 = RESET[name](jax.random.PRNGKey(3))
    jax.tree.map(np.testing.assert_array_equal, ts, ts2)
    assert ts.obs.shape == (n, spec.obs_dim) and ts.obs.dtype == jnp.float32
    assert ts.state.shape == (spec.state_dim,) and ts.state.dtype == jnp.float32
    assert ts.avail_actions.shape == (n, spec.num_actions) and ts.avail_actions.dtype == jnp.bool_
    assert bool(ts.avail_actions.all())
    _, (_, _, _, out) = random_rollout(name)
    steps = spec.episode_limit + 5
    assert out.obs.shape == (NUM_ENVS, steps, n, spec.obs_dim) and out.state.shape == (
        NUM_ENVS,
        steps,
        spec.state_dim,
    )
    # info keys, shapes and dtypes are the same after reset and after a step
    after_reset = {k: (v.shape, v.dtype) for k, v in ts.info.items()}
    after_step = {k: (v.shape[2:], v.dtype) for k, v in out.info.items() if not k.startswith("final_")}
    assert after_reset == after_step
    for x in (out.obs, out.state, out.reward, out.info["final_obs"]):
        assert np.isfinite(np.asarray(x)).all()
    low, high = spec.reward_bounds
    assert low <= float(out.reward.min()) and float(out.reward.max()) <= high
    assert np.asarray(out.truncated).any(axis=1).all() and not np.asarray(out.terminated).any()


@pytest.mark.parametrize("name", NAMES)
def test_truncated_not_terminated_at_25_with_final_obs_kept(name):
    _, (before, keys, actions, out) = random_rollout(name)
    for e in range(NUM_ENVS):
        trunc, term = np.asarray(out.truncated[e]), np.asarray(out.terminated[e])
        assert trunc.tolist() == [False] * 24 + [True] + [False] * 5 and not term.any()
        length = np.asarray(out.info["episode_length"][e])
        assert length.tolist() == [*range(1, 26), *range(1, 6)]
        np.testing.assert_allclose(
            float(out.info["episode_return"][e, 24]), float(out.reward[e, :25].sum()), rtol=1e-5
        )
    # redo env 0's 25th step by hand: AutoReset splits its key into (step key, reset key)
    pick = lambda tree, t: jax.tree.map(lambda x: x[0, t], tree)  # noqa: E731
    key_step, key_reset = jax.random.split(keys[0, 24])
    _, terminal = STEP[name](key_step, pick(before, 24), actions[0, 24])
    _, fresh = RESET[name](key_reset)
    assert bool(terminal.truncated)
    np.testing.assert_allclose(np.asarray(out.info["final_obs"][0, 24]), np.asarray(terminal.obs), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(out.info["final_state"][0, 24]), np.asarray(terminal.state), atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(out.obs[0, 24]), np.asarray(fresh.obs), atol=1e-6)
    assert np.abs(np.asarray(out.obs[0, 24]) - np.asarray(terminal.obs)).max() > 1e-2  # a new episode began
    # while the episode goes on, final_obs is just obs
    np.testing.assert_array_equal(np.asarray(out.info["final_obs"][0, :24]), np.asarray(out.obs[0, :24]))


def test_constructor_errors_and_make_options():
    bad = [
        (SimpleSpread, {"num_agents": 0}, "num_agents"),
        (SimpleSpread, {"num_landmarks": 0}, "num_landmarks"),
        (SimpleSpread, {"local_ratio": 1.5}, "local_ratio"),
        (SimpleSpread, {"episode_limit": 0}, "episode_limit"),
        (LineControl, {"num_agents": 1}, "num_agents"),
        (CircleControl, {"num_agents": 13}, "num_agents"),
        (CircleControl, {"num_agents": 2.0}, "num_agents"),
        (LineControl, {"vision": 0.0}, "vision"),
        (LineControl, {"collision_penalty": -1.0}, "collision_penalty"),
        (CircleControl, {"collision_penalty": math.inf}, "collision_penalty"),
    ]
    for cls, kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            cls(**kwargs)
    env = envs.make("mpe_simple_spread", num_agents=3, num_landmarks=4)
    assert (env.spec.num_agents, env.spec.obs_dim, env.spec.state_dim) == (3, 4 + 8 + 8, 60)
    env = envs.make("mpe_circle_control", num_agents=4, vision=None)
    assert (env.spec.obs_dim, env.spec.state_dim) == (4 + 2 + 6, 48)
    with pytest.raises(ValueError, match="no option"):
        envs.make("mpe_line_control", radius=1.0)
