"""SMAX adapter: agrees with jaxmarl's own HeuristicEnemySMAX, and ends, wins, draws and truncates
when hand-built situations say it must.

Compile time dominates, so only 3m (two env configurations) and 2s3z are compiled in the fast
tests, each once per module.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

import envs
from envs.catalogue import SMAX_MAPS
from envs.core import EpisodeState
from envs.smax import SMAX

SCALE = 10.0
MARINE_HEALTH = 45.0
STOP, LEFT = 4, 3
# Unit-list layout: 13 features per other unit (health, dx, dy, last move x/y, last target, cooldown,
# 6 type bits), then 10 own features; world state: 10 features per unit, then teams, then types.
UNIT_FEATS, OWN_FEATS, STATE_FEATS = 13, 10, 10


class Compiled:
    """One env with its jitted reset/step, built once per module."""

    def __init__(self, env):
        self.env = env
        self.reset = jax.jit(env.reset)
        self.step = jax.jit(env.step)


@pytest.fixture(scope="module")
def m3():
    return Compiled(SMAX(map_name="3m", reward_scale=SCALE))


@pytest.fixture(scope="module")
def m3_short():
    return Compiled(SMAX(map_name="3m", episode_limit=5))


def jaxmarl_env(map_name):
    return HeuristicEnemySMAX(scenario=map_name_to_scenario(map_name))


# --- spec and constructor --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "map_name, n, m, obs_dim, state_dim",
    [
        # obs: 13 * (n - 1 + m) + 10; state: 12 * (n + m); actions: 5 + m
        ("3m", 3, 3, 13 * 5 + 10, 12 * 6),
        ("2s3z", 5, 5, 13 * 9 + 10, 12 * 10),
        ("5m_vs_6m", 5, 6, 13 * 10 + 10, 12 * 11),
        ("27m_vs_30m", 27, 30, 13 * 56 + 10, 12 * 57),
    ],
)
def test_spec_sizes_by_hand(map_name, n, m, obs_dim, state_dim):
    spec = envs.make(f"smax_{map_name}").spec
    assert spec.name == f"smax_{map_name}"
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (n, obs_dim, state_dim, 5 + m)
    assert spec.episode_limit == 100 and spec.has_won and spec.optimal_return is None
    assert spec.reward_bounds == (0.0, 2.0)


def test_spec_options():
    spec = envs.make("smax_3m", reward_scale=10.0, episode_limit=7).spec
    assert spec.reward_bounds == (0.0, 20.0) and spec.episode_limit == 7


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"map_name": "4m"}, ["4m", "3m", "27m_vs_30m", "smacv2_20_units"]),
        ({"map_name": "3m", "reward_scale": 0.0}, ["reward_scale", "positive"]),
        ({"map_name": "3m", "reward_scale": float("nan")}, ["reward_scale"]),
        ({"map_name": "3m", "episode_limit": 0}, ["episode_limit", "positive"]),
        ({"map_name": "3m", "episode_limit": 2.5}, ["episode_limit"]),
        ({"map_name": "3m", "attack_mode": "weakest"}, ["attack_mode", "closest", "random"]),
        ({"map_name": "3m", "enemy_shoots": "yes"}, ["enemy_shoots"]),
    ],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as err:
        SMAX(**kwargs)
    for word in words:
        assert word in str(err.value)


# --- agreement with jaxmarl ------------------------------------------------------------------------


def compare_with_jaxmarl(ours: Compiled, map_name: str, scale: float, steps: int) -> None:
    ref = jaxmarl_env(map_name)
    agents = ref.agents
    key = jax.random.PRNGKey(11)
    key, reset_key = jax.random.split(key)
    state, ts = ours.reset(reset_key)
    ref_obs, ref_state = ref.reset(reset_key)

    def check(ts, ref_obs, ref_state):
        np.testing.assert_allclose(ts.obs, np.stack([ref_obs[a] for a in agents]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ts.state, ref_obs["world_state"], rtol=1e-5, atol=1e-6)
        ref_avail = ref.get_avail_actions(ref_state)
        np.testing.assert_array_equal(ts.avail_actions, np.stack([ref_avail[a] for a in agents]) == 1)

    check(ts, ref_obs, ref_state)
    for _ in range(steps):
        key, act_key, step_key = jax.random.split(key, 3)
        actions = envs.random_actions(act_key, ts.avail_actions)
        state, ts = ours.step(step_key, state, actions)
        ref_obs, ref_state, ref_rew, ref_done, _ = ref.step_env(
            step_key, ref_state, {a: actions[i] for i, a in enumerate(agents)}
        )
        check(ts, ref_obs, ref_state)
        ally_rewards = np.array([ref_rew[a] for a in agents])
        assert np.all(ally_rewards == ally_rewards[0]), "jaxmarl gives every ally the same reward"
        np.testing.assert_allclose(ts.reward, ally_rewards[0] * scale, rtol=1e-5, atol=1e-7)
        assert bool(ts.terminated) == bool(ref_done["__all__"])  # no time-out within a few steps


def test_3m_matches_jaxmarl(m3):
    compare_with_jaxmarl(m3, "3m", SCALE, steps=8)


def test_2s3z_matches_jaxmarl():
    env = envs.make("smax_2s3z")
    compare_with_jaxmarl(Compiled(env), "2s3z", 1.0, steps=4)


# --- hand-built endings ----------------------------------------------------------------------------


def face_off(state: EpisodeState, ally_health: float, enemy_health: float, length: int = 0) -> EpisodeState:
    """Allies at x=8, enemies at x=11 on rows y=10, 16, 22: each unit can reach only its row partner
    (3 apart, marine range 5; the next row is sqrt(45) > 5 away)."""
    rows = jnp.array([10.0, 16.0, 22.0])
    pos = jnp.concatenate([jnp.stack([jnp.full(3, 8.0), rows], 1), jnp.stack([jnp.full(3, 11.0), rows], 1)])
    health = jnp.array([ally_health] * 3 + [enemy_health] * 3, jnp.float32)
    inner = state.env_state.state.replace(unit_positions=pos.astype(jnp.float32), unit_health=health)
    return state.replace(
        env_state=state.env_state.replace(state=inner), episode_length=jnp.asarray(length, jnp.int32)
    )


ATTACK_PARTNER = jnp.array([5, 6, 7], jnp.int32)  # ally i attacks enemy i


def test_win_when_all_enemies_die(m3):
    state, _ = m3.reset(jax.random.PRNGKey(0))
    state, ts = m3.step(jax.random.PRNGKey(2), face_off(state, MARINE_HEALTH, 1.0), ATTACK_PARTNER)
    assert bool(ts.terminated) and not bool(ts.truncated) and bool(ts.info["won"])
    # Each enemy loses 1 hp of 45: (3 / 45) / 3 enemies, plus the win bonus 1, times the scale.
    np.testing.assert_allclose(ts.reward, SCALE * (1.0 / 45.0 + 1.0), rtol=1e-5)
    alive = np.asarray(state.env_state.state.unit_alive)
    assert alive[:3].all() and not alive[3:].any()


def test_draw_is_a_termination_without_win(m3):
    state, ts0 = m3.reset(jax.random.PRNGKey(0))
    state = face_off(state, 1.0, 1.0)
    state, ts = m3.step(jax.random.PRNGKey(2), state, ATTACK_PARTNER)
    # Both teams fire in the same world step and all six marines die: terminated, not won, no bonus.
    assert not np.asarray(state.env_state.state.unit_alive).any()
    assert bool(ts.terminated) and not bool(ts.info["won"])
    np.testing.assert_allclose(ts.reward, SCALE * (1.0 / 45.0), rtol=1e-5)
    # Everybody is dead: zero observations, only "stop" available.
    assert not np.asarray(ts.obs).any()
    np.testing.assert_array_equal(ts.avail_actions, np.tile(np.eye(8, dtype=bool)[STOP], (3, 1)))
    assert not bool(ts0.info["won"]) and not bool(ts0.terminated)


def test_available_actions_in_a_face_off(m3):
    state, _ = m3.reset(jax.random.PRNGKey(0))
    state = face_off(state, MARINE_HEALTH, MARINE_HEALTH)
    # Recompute the timestep from the edited state by a zero-effect step on a copy with cooldowns
    # high (nobody can fire) and everyone standing still.
    inner = state.env_state.state
    frozen = inner.replace(unit_weapon_cooldowns=jnp.full((6,), 100.0, jnp.float32))
    state = state.replace(env_state=state.env_state.replace(state=frozen))
    _, ts = m3.step(jax.random.PRNGKey(3), state, jnp.full(3, STOP, jnp.int32))
    expected = np.zeros((3, 8), bool)
    expected[:, :5] = True
    expected[np.arange(3), 5 + np.arange(3)] = True
    np.testing.assert_array_equal(ts.avail_actions, expected)


def test_real_end_on_the_last_step_is_termination(m3_short):
    state, _ = m3_short.reset(jax.random.PRNGKey(0))
    state, ts = m3_short.step(jax.random.PRNGKey(2), face_off(state, MARINE_HEALTH, 1.0, length=4),
                              ATTACK_PARTNER)
    assert int(ts.info["episode_length"]) == 5 == m3_short.env.spec.episode_limit
    assert bool(ts.terminated) and not bool(ts.truncated) and bool(ts.info["won"])


def test_time_out_is_truncation_not_termination(m3_short):
    state, ts = m3_short.reset(jax.random.PRNGKey(4))
    stop = jnp.full(3, STOP, jnp.int32)
    for t in range(1, 6):
        state, ts = m3_short.step(jax.random.PRNGKey(100 + t), state, stop)
        assert not bool(ts.terminated)
        assert bool(ts.truncated) == (t == 5)
    # jaxmarl's own time limit (step >= max_steps) now holds; the adapter must not call it termination.
    assert int(state.env_state.state.step) == 5
    assert bool(m3_short.env.jax_env.is_terminal(state.env_state))
    assert np.asarray(state.env_state.state.unit_alive[:3]).any()
    assert np.asarray(state.env_state.state.unit_alive[3:]).any()


def test_running_into_the_wall_loses_with_zero_return(m3):
    """Allies start within 2 of x=8 and walk left at 3.15 * 8 / 16 = 1.575 per step: all die on the
    border within 7 steps, far from the enemies (they start near x=24 and are no faster), so the
    return is 0."""
    state, ts = m3.reset(jax.random.PRNGKey(5))
    left = jnp.full(3, LEFT, jnp.int32)
    stop_only = np.eye(8, dtype=bool)[STOP]
    mixed = False  # saw a step with dead and live allies together
    for t in range(1, 8):
        state, ts = m3.step(jax.random.PRNGKey(200 + t), state, left)
        dead = ~np.asarray(state.env_state.state.unit_alive[:3])
        obs, avail, world = np.asarray(ts.obs), np.asarray(ts.avail_actions), np.asarray(ts.state)
        for i in np.flatnonzero(dead):
            assert not obs[i].any(), f"dead ally {i} must see zeros"
            np.testing.assert_array_equal(avail[i], stop_only)
            assert not world[i * STATE_FEATS:(i + 1) * STATE_FEATS].any()
            # a live ally sees no features for the dead one
            for j in np.flatnonzero(~dead):
                slot = i if i < j else i - 1
                assert not obs[j, slot * UNIT_FEATS:(slot + 1) * UNIT_FEATS].any()
        for i in np.flatnonzero(~dead):
            assert avail[i, :5].all() and obs[i, -OWN_FEATS] > 0
        mixed |= bool(dead.any() and not dead.all())
        if bool(ts.terminated):
            break
    assert mixed and dead.all() and bool(ts.terminated) and not bool(ts.truncated) and not bool(ts.info["won"])
    assert float(ts.info["episode_return"]) == 0.0 and int(ts.info["episode_length"]) <= 7


# --- actions outside the rules ---------------------------------------------------------------------


def test_unavailable_and_out_of_range_actions(m3):
    state, ts = m3.reset(jax.random.PRNGKey(6))
    assert not np.asarray(ts.avail_actions[:, 5:]).any(), "enemies start out of range"
    key = jax.random.PRNGKey(7)
    stop_state, stop_ts = m3.step(key, state, jnp.full(3, STOP, jnp.int32))
    # Attacking an out-of-range enemy: no damage and no movement, like stop.
    att_state, att_ts = m3.step(key, state, jnp.array([5, 6, 7], jnp.int32))
    for field in ("unit_positions", "unit_health", "unit_alive"):
        np.testing.assert_array_equal(
            getattr(att_state.env_state.state, field), getattr(stop_state.env_state.state, field)
        )
    assert float(att_ts.reward) == float(stop_ts.reward) == 0.0
    # Out-of-range values cannot be rejected under jit: they act as stop, with identical results.
    bad_state, bad_ts = m3.step(key, state, jnp.array([-3, 8, 1000], jnp.int32))
    jax.tree.map(np.testing.assert_array_equal, (bad_state, bad_ts), (stop_state, stop_ts))
    assert np.isfinite(np.asarray(bad_ts.obs)).all()
    # Outside jit they are refused with a clear message.
    with pytest.raises(ValueError, match="actions must lie in"):
        m3.env.step(key, state, jnp.array([0, 1, 8], jnp.int32))


# --- every map -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("map_name", SMAX_MAPS)
def test_every_map_builds_and_steps(map_name):
    start = time.perf_counter()
    env = envs.make(f"smax_{map_name}")
    spec = env.spec
    state, ts = jax.jit(env.reset)(jax.random.PRNGKey(0))
    actions = envs.random_actions(jax.random.PRNGKey(1), ts.avail_actions)
    state, ts = jax.jit(env.step)(jax.random.PRNGKey(2), state, actions)
    assert ts.obs.shape == (spec.num_agents, spec.obs_dim)
    assert ts.state.shape == (spec.state_dim,)
    assert ts.avail_actions.shape == (spec.num_agents, spec.num_actions)
    assert np.isfinite(np.asarray(ts.obs)).all() and np.isfinite(float(ts.reward))
    low, high = spec.reward_bounds
    assert low <= float(ts.reward) <= high
    print(f"{map_name}: {spec.num_agents} agents, obs {spec.obs_dim}, state {spec.state_dim}, "
          f"actions {spec.num_actions}; build + first jit step {time.perf_counter() - start:.1f}s")
