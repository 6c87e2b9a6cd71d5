"""The jumanji adapters against jumanji itself, plus hand-built LBF states with known outcomes."""

import functools

import jax
import jax.numpy as jnp
import jumanji
import numpy as np
import pytest
from jumanji.environments.routing.lbf import LevelBasedForaging as LevelBasedForagingReference
from jumanji.environments.routing.lbf.generator import RandomGenerator as LBFGenerator
from jumanji.environments.routing.lbf.types import Agent, Food
from jumanji.environments.routing.lbf.types import State as LBFState
from jumanji.types import StepType

import envs
from envs.core import EpisodeState
from envs.jumanji import JumanjiEnvState, jumanji_terminated

LAST = int(StepType.LAST)


def _compare_fn(env, reference):
    """jit(key, actions[T, N]) -> our reset/steps and the reference's (and its last state), same key and actions."""

    def run(key, actions):
        ours, ts0 = env.reset(key)
        theirs, jts0 = reference.reset(key)

        def body(carry, a):
            ours, theirs = carry
            ours, ts = env.step(jax.random.PRNGKey(0), ours, a)
            theirs, jts = reference.step(theirs, a)
            return (ours, theirs), (ts, jts)

        (_, final), (tss, jtss) = jax.lax.scan(body, (ours, theirs), actions)
        return ts0, jts0, final, tss, jtss

    return jax.jit(run)


@functools.cache
def lbf_compare():
    env = envs.make("lbf")
    return env, _compare_fn(env, jumanji.make("LevelBasedForaging-v0"))


@functools.cache
def rware_compare():
    env = envs.make("rware")
    return env, _compare_fn(env, jumanji.make("RobotWarehouse-v0"))


def _uniform_actions(seed, steps, n, a):
    # Uniform over ALL actions, unavailable ones included: the adapter must match jumanji on them too.
    return jnp.asarray(np.random.default_rng(seed).integers(0, a, size=(steps, n)), jnp.int32)


def _assert_same_views(ts0, jts0, tss, jtss):
    np.testing.assert_array_equal(ts0.obs, np.asarray(jts0.observation.agents_view, np.float32))
    np.testing.assert_array_equal(ts0.avail_actions, jts0.observation.action_mask)
    np.testing.assert_array_equal(tss.obs, np.asarray(jtss.observation.agents_view, np.float32))
    np.testing.assert_array_equal(tss.avail_actions, jtss.observation.action_mask)


# ---------------------------------------------------------------- spec and options


def test_specs_by_hand():
    lbf = envs.make("lbf")
    s = lbf.spec
    assert (s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (2, 12, 12, 6, 100)
    assert s.reward_bounds == (0.0, 1.0) and s.optimal_return is None and not s.has_won
    rware = envs.make("rware")
    s = rware.spec
    # 80 shelves in the default 20x10 warehouse: state = 4 views of 66 + 80 * (row, col, requested).
    assert (s.num_agents, s.obs_dim, s.state_dim, s.num_actions, s.episode_limit) == (4, 66, 504, 5, 500)
    assert s.reward_bounds == (0.0, 2.0) and s.optimal_return is None and not s.has_won
    # Other options: grid observation 3 x 17 x 17, sensor range 2 gives 8 + 24 * 5 + 25 * 2.
    assert envs.make("lbf", grid_observation=True).spec.obs_dim == 867
    assert envs.make("lbf", num_agents=3, num_food=1, grid_size=6, fov=2).spec.obs_dim == 12
    assert envs.make("rware", sensor_range=2).spec.obs_dim == 178
    assert envs.make("rware", num_agents=1).spec.reward_bounds == (0.0, 1.0)
    # Penalty: each of 3 agents pays p / (1 * 2) at worst per failed food, 2 foods -> -3p.
    assert envs.make("lbf", num_agents=3, penalty=0.5).spec.reward_bounds == (-1.5, 1.0)
    assert envs.make("lbf", normalize_reward=False, penalty=0.5).spec.reward_bounds == (-2.0, 2 * 2 * 2 * 2 * 2)


def test_episode_limit_is_jumanjis_time_limit():
    assert envs.make("lbf", episode_limit=37)._env.time_limit == 37
    assert envs.make("rware", episode_limit=41)._env.time_limit == 41
    assert envs.make("lbf").spec.episode_limit == jumanji.make("LevelBasedForaging-v0").time_limit
    assert envs.make("rware").spec.episode_limit == jumanji.make("RobotWarehouse-v0").time_limit


@pytest.mark.parametrize(
    "name, kwargs, words",
    [
        ("lbf", {"grid_size": 4}, "grid_size"),
        ("lbf", {"fov": 9}, "fov"),
        ("lbf", {"fov": 0}, "fov"),
        ("lbf", {"num_agents": 0}, "num_agents"),
        ("lbf", {"num_food": 0}, "num_food"),
        ("lbf", {"num_food": 7}, "too small"),
        ("lbf", {"max_agent_level": 1}, "max_agent_level"),
        ("lbf", {"penalty": -1.0}, "penalty"),
        ("lbf", {"penalty": float("nan")}, "penalty"),
        ("lbf", {"force_coop": 1}, "force_coop"),
        ("lbf", {"episode_limit": 0}, "episode_limit"),
        ("lbf", {"episode_limit": 2.5}, "episode_limit"),
        ("lbf", {"num_agents": True}, "num_agents"),
        ("lbf", {"food": 3}, "no option"),
        ("rware", {"shelf_columns": 2}, "odd"),
        ("rware", {"shelf_rows": 0}, "shelf_rows"),
        ("rware", {"column_height": 0}, "column_height"),
        ("rware", {"num_agents": 0}, "num_agents"),
        ("rware", {"num_agents": 201}, "num_agents"),
        ("rware", {"sensor_range": 0}, "sensor_range"),
        ("rware", {"request_queue_size": 0}, "request_queue_size"),
        ("rware", {"request_queue_size": 80}, "number of shelves"),
        ("rware", {"episode_limit": -3}, "episode_limit"),
    ],
)
def test_bad_options_rejected(name, kwargs, words):
    with pytest.raises(ValueError, match=words):
        envs.make(name, **kwargs)


def test_terminated_conversion():
    mid, last = jnp.int8(int(StepType.MID)), jnp.int8(LAST)
    assert bool(jumanji_terminated(last, jnp.zeros(3)))  # true end
    assert not bool(jumanji_terminated(last, jnp.ones(3)))  # jumanji's truncation
    assert not bool(jumanji_terminated(mid, jnp.ones(3)))
    assert not bool(jumanji_terminated(jnp.int8(int(StepType.FIRST)), jnp.ones(())))
    assert bool(jumanji_terminated(last, jnp.float32(0.0)))


# ---------------------------------------------------------------- LBF


def test_lbf_matches_jumanji_and_truncates_at_the_limit():
    env, run = lbf_compare()
    steps = env.spec.episode_limit
    ts0, jts0, _, tss, jtss = run(jax.random.PRNGKey(11), _uniform_actions(0, steps, 2, 6))
    _assert_same_views(ts0, jts0, tss, jtss)
    np.testing.assert_allclose(tss.reward, np.asarray(jtss.reward).sum(axis=1), rtol=0, atol=1e-7)
    # Default fov sees the whole 8x8 grid, so agent 0's view lists everything in the state's order.
    np.testing.assert_array_equal(ts0.state, ts0.obs[0])
    np.testing.assert_array_equal(tss.state, tss.obs[:, 0])

    step_type, discount = np.asarray(jtss.step_type), np.asarray(jtss.discount)
    # This episode never clears the grid: jumanji ends it only by its time limit (LAST, discount 1).
    assert (step_type[:-1] != LAST).all() and step_type[-1] == LAST and (discount[-1] == 1).all()
    assert not np.asarray(tss.terminated).any()
    np.testing.assert_array_equal(tss.truncated, np.arange(1, steps + 1) == steps)
    assert int(tss.info["episode_length"][-1]) == steps


LBF_SMALL = dict(grid_size=7, fov=2, num_agents=3, num_food=3, max_agent_level=3, force_coop=False)


@functools.cache
def lbf_small_compare():
    """A non-default LBF where single agents can often lift food, so random play eats some (and
    sometimes all) of it, and a field of view of 2 so that the state is more than any agent sees."""
    env = envs.make("lbf", **LBF_SMALL)
    options = {k: v for k, v in LBF_SMALL.items() if k != "force_coop"}
    reference = LevelBasedForagingReference(
        generator=LBFGenerator(force_coop=False, **options), time_limit=env.spec.episode_limit
    )
    return env, _compare_fn(env, reference)


def _lbf_state_by_hand(inner):
    rows = []
    for pos, level, eaten in zip(np.asarray(inner.food_items.position), np.asarray(inner.food_items.level),
                                 np.asarray(inner.food_items.eaten), strict=True):
        rows += [-1, -1, 0] if eaten else [pos[0], pos[1], level]
    for pos, level in zip(np.asarray(inner.agents.position), np.asarray(inner.agents.level), strict=True):
        rows += [pos[0], pos[1], level]
    return np.asarray(rows, np.float32)


def test_lbf_random_episodes_with_food_eaten():
    env, run = lbf_small_compare()
    assert (env.spec.obs_dim, env.spec.state_dim, env.spec.episode_limit) == (18, 18, 100)
    total_terminated = 0
    for seed in (1, 2, 4, 6):  # seeds whose random play eats food; seed 6 clears the grid at step 47
        ts0, jts0, final, tss, jtss = run(jax.random.PRNGKey(200 + seed), _uniform_actions(seed, 100, 3, 6))
        _assert_same_views(ts0, jts0, tss, jtss)
        # Team reward = sum of jumanji's per-agent rewards.
        np.testing.assert_allclose(tss.reward, np.asarray(jtss.reward).sum(axis=1), rtol=0, atol=1e-6)
        true_end = (np.asarray(jtss.step_type) == LAST) & (np.asarray(jtss.discount) == 0).all(axis=1)
        np.testing.assert_array_equal(tss.terminated, true_end)
        np.testing.assert_array_equal(tss.truncated, (np.arange(1, 101) == 100) & ~true_end)
        np.testing.assert_array_equal(tss.state[-1], _lbf_state_by_hand(final))
        assert (np.asarray(tss.reward) > 0).any(), "some food is expected to be eaten"
        if true_end.any():
            # Normalised rewards: everything eaten by the first true end adds up to exactly 1.
            first = int(np.argmax(true_end))
            assert float(np.asarray(tss.reward)[: first + 1].sum()) == pytest.approx(1.0, abs=1e-5)
            total_terminated += 1
    assert total_terminated >= 1


@functools.cache
def lbf_step():
    env = envs.make("lbf")
    return env, jax.jit(env.step)


def _lbf_two_foods_state(step_count):
    """Foods (level 3) at (2,2) and (3,3); agent 0 (level 1) at (2,3) and agent 1 (level 2) at (3,2):
    each agent touches both foods, and together their levels (1 + 2) lift either one."""
    i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
    inner = LBFState(
        agents=Agent(id=i32([0, 1]), position=i32([[2, 3], [3, 2]]), level=i32([1, 2]),
                     loading=jnp.zeros(2, bool)),
        food_items=Food(id=i32([0, 1]), position=i32([[2, 2], [3, 3]]), level=i32([3, 3]),
                        eaten=jnp.zeros(2, bool)),
        step_count=i32(step_count),
        key=jnp.zeros(2, jnp.uint32),
    )
    # noop, up, down, left, right, load; food blocks agent 0 going down/left and agent 1 going up/right.
    avail = jnp.asarray([[1, 1, 0, 0, 1, 1], [1, 0, 1, 1, 0, 1]], bool)
    return EpisodeState(JumanjiEnvState(inner, avail), jnp.float32(0.0), i32(step_count))


@pytest.mark.parametrize("step_count", [5, 99])
def test_lbf_eating_all_food_terminates(step_count):
    env, step = lbf_step()
    _, ts = step(jax.random.PRNGKey(0), _lbf_two_foods_state(step_count), jnp.asarray([5, 5], jnp.int32))
    # Both foods eaten at once: levels 3 + 3 out of a total of 6 -> team reward exactly 1.
    assert float(ts.reward) == pytest.approx(1.0, abs=1e-6)
    assert bool(ts.terminated) and not bool(ts.truncated)  # at step 100 termination still wins
    gone = [-1, -1, 0]
    np.testing.assert_array_equal(ts.obs, [gone + gone + [2, 3, 1, 3, 2, 2], gone + gone + [3, 2, 2, 2, 3, 1]])
    np.testing.assert_array_equal(ts.state, gone + gone + [2, 3, 1, 3, 2, 2])
    np.testing.assert_array_equal(ts.avail_actions, [[1, 1, 1, 1, 1, 0]] * 2)


def test_lbf_partial_load_and_bad_actions():
    env, step = lbf_step()
    # Agent 0 (level 1) alone cannot lift a level-3 food: nothing happens, and at step 100 it is truncation.
    _, ts = step(jax.random.PRNGKey(0), _lbf_two_foods_state(99), jnp.asarray([5, 0], jnp.int32))
    assert float(ts.reward) == 0.0 and not bool(ts.terminated) and bool(ts.truncated)
    _, noop = step(jax.random.PRNGKey(0), _lbf_two_foods_state(3), jnp.asarray([0, 0], jnp.int32))
    # Out-of-range (traced, so not caught by check_actions) and unavailable actions act as the no-op.
    for bad in ([7, -1], [2, 1], [3, 4]):
        _, ts = step(jax.random.PRNGKey(0), _lbf_two_foods_state(3), jnp.asarray(bad, jnp.int32))
        np.testing.assert_array_equal(ts.obs, noop.obs)
        assert np.isfinite(np.asarray(ts.obs)).all() and float(ts.reward) == 0.0
    np.testing.assert_array_equal(noop.obs[0], [2, 2, 3, 3, 3, 3, 2, 3, 1, 3, 2, 2])


# ---------------------------------------------------------------- RWARE


def test_rware_matches_jumanji():
    env, run = rware_compare()
    steps = env.spec.episode_limit
    ts0, jts0, _, tss, jtss = run(jax.random.PRNGKey(5), _uniform_actions(7, steps, 4, 5))
    _assert_same_views(ts0, jts0, tss, jtss)
    np.testing.assert_array_equal(tss.reward, jtss.reward)  # shared scalar reward, used as is
    # Before the limit jumanji's only LAST is a collision (discount 0): the adapter calls it terminated.
    last = np.asarray(jtss.step_type) == LAST
    assert last[:-1].any(), "random robots are expected to collide at least once"
    np.testing.assert_array_equal(np.asarray(tss.terminated)[:-1], last[:-1])
    np.testing.assert_array_equal(np.asarray(jtss.discount)[last], 0.0)


def test_rware_state_layout():
    env, run = rware_compare()
    # Every robot turns left every step: nothing moves and nothing is delivered.
    ts0, _, final, tss, _ = run(jax.random.PRNGKey(5), jnp.full((env.spec.episode_limit, 4), 2, jnp.int32))
    state = np.asarray(ts0.state)
    np.testing.assert_array_equal(state[: 4 * 66], np.asarray(ts0.obs).reshape(-1))
    shelves = state[4 * 66:].reshape(80, 3)
    np.testing.assert_array_equal(shelves[:, 0], final.shelves.position.x)
    np.testing.assert_array_equal(shelves[:, 1], final.shelves.position.y)
    np.testing.assert_array_equal(shelves[:, 2], final.shelves.is_requested)
    assert shelves[:, 2].sum() == 8 and set(np.unique(shelves[:, 2])) <= {0.0, 1.0}  # request queue of 8
    np.testing.assert_array_equal(np.asarray(tss.state)[:, 4 * 66:], np.broadcast_to(state[4 * 66:], (500, 240)))


def test_rware_time_limit_is_truncation_not_termination():
    env, run = rware_compare()
    steps = env.spec.episode_limit
    # Every robot turns left every step: nothing moves, nothing collides, the episode times out.
    _, _, _, tss, jtss = run(jax.random.PRNGKey(5), jnp.full((steps, 4), 2, jnp.int32))
    step_type, discount = np.asarray(jtss.step_type), np.asarray(jtss.discount)
    # jumanji reports its time limit as LAST with discount 0 ...
    assert (step_type[:-1] != LAST).all() and step_type[-1] == LAST and discount[-1] == 0
    # ... which the adapter turns into truncation.
    assert not np.asarray(tss.terminated).any()
    np.testing.assert_array_equal(tss.truncated, np.arange(1, steps + 1) == steps)
    np.testing.assert_array_equal(tss.reward, 0.0)


def test_rware_collision_on_the_last_step_is_termination():
    env, run = rware_compare()
    steps = env.spec.episode_limit
    key = jax.random.PRNGKey(5)
    random_actions = _uniform_actions(7, steps, 4, 5)
    _, _, _, tss, _ = run(key, random_actions)
    first = int(np.argmax(np.asarray(tss.terminated)))  # index of the first colliding step
    assert bool(tss.terminated[first])
    # No-ops leave the fresh warehouse untouched (nobody carries a shelf yet), so a no-op prefix only
    # shifts the same collision to the last step.
    prefix = jnp.zeros((steps - first - 1, 4), jnp.int32)
    shifted = jnp.concatenate([prefix, random_actions[: first + 1]])
    _, _, _, tss, jtss = run(key, shifted)
    assert not np.asarray(tss.terminated)[:-1].any() and not np.asarray(tss.truncated)[:-1].any()
    assert bool(tss.terminated[-1]) and not bool(tss.truncated[-1])
    assert int(tss.info["episode_length"][-1]) == steps


def test_rware_out_of_range_actions_are_noops():
    env, run = rware_compare()
    steps = env.spec.episode_limit
    wild = np.random.default_rng(3).integers(-3, 9, size=(steps, 4))
    cleaned = np.where((wild >= 0) & (wild < 5), wild, 0)
    key = jax.random.PRNGKey(8)
    _, _, _, tss, _ = run(key, jnp.asarray(wild, jnp.int32))
    _, _, _, expected, _ = run(key, jnp.asarray(cleaned, jnp.int32))
    jax.tree.map(np.testing.assert_array_equal, tss, expected)
    assert np.isfinite(np.asarray(tss.obs)).all()
