"""Multi-agent MuJoCo on Brax physics, checked against MaMuJoCo's published definitions written out here by
hand: the partitions (agent -> joints), the observation layout and sizes counted from the per-distance
categories, the action mapping and padding; then one compiled hopper 3x1 (the cheapest robot to compile)
whose observations are compared with the physics state read directly, through episodes that end by the
time limit and by a fall. Every compiled robot (hopper included: its compile takes about 35 s on 2 CPU cores)
runs only under ``-m slow``; the fast suite checks the construction without physics."""

from __future__ import annotations

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from brax import envs as brax_envs

import envs
from envs.mamujoco import ROBOTS, MaMuJoCo, joints_at_distance

# ------------------------------------------------------------------------------------------------
# The published partitions and the observation sizes counted by hand (agent_obsk = 2)
# ------------------------------------------------------------------------------------------------

PLANAR_ROOT = 5  # qpos of rootz, rooty (rootx is never observed) + qvel of rootx, rootz, rooty
FREE_ROOT = 11  # qpos[2:7] (height + quaternion) + the 6 root velocities


@dataclasses.dataclass(frozen=True)
class Expected:
    joints: tuple[tuple[str, ...], ...]
    obs_sizes: tuple[int, ...]
    state_dim: int  # Brax's single-agent observation


HUMANOID_17 = ("left_shoulder1", "left_shoulder2", "abdomen_x", "abdomen_y", "abdomen_z", "right_shoulder1",
               "right_shoulder2", "right_elbow", "left_elbow", "left_hip_x", "left_hip_y", "left_hip_z",
               "right_hip_x", "right_hip_y", "right_hip_z", "right_knee", "left_knee")

# Per agent: own joints x categories at distance 0 + joints at distance 1 and 2 x qpos + the root.
EXPECTED = {
    "mamujoco_halfcheetah_3x2": Expected(
        joints=(("bfoot", "bshin"), ("bthigh", "ffoot"), ("fshin", "fthigh")),
        obs_sizes=(
            2 * 2 + 1 + 1 + PLANAR_ROOT,  # d1: bthigh; d2: fthigh
            2 * 2 + 3 + 1 + PLANAR_ROOT,  # d1: bshin, fshin, fthigh; d2: bfoot
            2 * 2 + 2 + 1 + PLANAR_ROOT,  # d1: bthigh, ffoot; d2: bshin
        ),
        state_dim=17,
    ),
    "mamujoco_hopper_3x1": Expected(
        joints=(("thigh_joint",), ("leg_joint",), ("foot_joint",)),
        obs_sizes=(
            2 + 1 + 1 + PLANAR_ROOT,  # thigh: d1 leg; d2 foot
            2 + 2 + 0 + PLANAR_ROOT,  # leg: d1 foot, thigh; d2 none
            2 + 1 + 1 + PLANAR_ROOT,  # foot: d1 leg; d2 thigh
        ),
        state_dim=11,
    ),
    "mamujoco_walker2d_3x2": Expected(
        joints=(("foot_joint", "leg_joint"), ("thigh_joint", "foot_left_joint"),
                ("leg_left_joint", "thigh_left_joint")),
        obs_sizes=(
            2 * 2 + 1 + 1 + PLANAR_ROOT,  # d1: thigh; d2: thigh_left
            2 * 2 + 3 + 1 + PLANAR_ROOT,  # d1: leg, leg_left, thigh_left; d2: foot
            2 * 2 + 2 + 1 + PLANAR_ROOT,  # d1: foot_left, thigh; d2: leg
        ),
        state_dim=17,
    ),
    "mamujoco_ant_4x2": Expected(
        joints=(("hip_1", "ankle_1"), ("hip_2", "ankle_2"), ("hip_3", "ankle_3"), ("hip_4", "ankle_4")),
        # ankle: qpos, qvel, cfrc_ext of torso, hip body, ankle body (3 x 6); hip: qpos, qvel (its torso row
        # is already shown); d1: the three other hips; d2: their ankles
        obs_sizes=(2 + 18 + 2 + 3 + 3 + FREE_ROOT,) * 4,
        state_dim=27,
    ),
    "mamujoco_humanoid_17x1": Expected(
        joints=tuple((j,) for j in HUMANOID_17),
        # own joint: qpos, qvel, qfrc_actuator (MaMuJoCo's humanoid joints name no bodies)
        obs_sizes=(
            3 + 5 + 8 + FREE_ROOT,  # left_shoulder1: d1 left_elbow, left_shoulder2, abdomen x3; d2 right
            #                         shoulder pair, both hip triples
            3 + 5 + 8 + FREE_ROOT,  # left_shoulder2 (the same)
            3 + 12 + 4 + FREE_ROOT,  # abdomen_x: d1 abdomen pair, both shoulder pairs, both hip triples; d2
            #                          both elbows, both knees
            3 + 12 + 4 + FREE_ROOT,  # abdomen_y
            3 + 12 + 4 + FREE_ROOT,  # abdomen_z
            3 + 5 + 8 + FREE_ROOT,  # right_shoulder1
            3 + 5 + 8 + FREE_ROOT,  # right_shoulder2
            3 + 2 + 3 + FREE_ROOT,  # right_elbow: d1 right shoulder pair; d2 abdomen x3
            3 + 2 + 3 + FREE_ROOT,  # left_elbow
            3 + 6 + 7 + FREE_ROOT,  # left_hip_x: d1 hip pair, knee, abdomen x3; d2 shoulders x4, right hip x3
            3 + 6 + 7 + FREE_ROOT,  # left_hip_y
            3 + 6 + 7 + FREE_ROOT,  # left_hip_z
            3 + 6 + 7 + FREE_ROOT,  # right_hip_x
            3 + 6 + 7 + FREE_ROOT,  # right_hip_y
            3 + 6 + 7 + FREE_ROOT,  # right_hip_z
            3 + 3 + 3 + FREE_ROOT,  # right_knee: d1 right hip x3; d2 abdomen x3
            3 + 3 + 3 + FREE_ROOT,  # left_knee
        ),
        state_dim=244,
    ),
}


@functools.cache
def make(name: str, **kwargs) -> MaMuJoCo:
    return envs.make(name, **kwargs)


def model_of(env: MaMuJoCo) -> mujoco.MjModel:
    return env._env.sys.mj_model


def joint_id(model: mujoco.MjModel, name: str) -> int:
    j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    assert j >= 0, name
    return j


# ------------------------------------------------------------------------------------------------
# Construction only (no physics compiled)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_partition_sizes_and_padding(name):
    env, want = make(name), EXPECTED[name]
    spec = env.spec
    assert spec.name == name and spec.episode_limit == 1000 and env.agent_obsk == 2 and env.backend == "mjx"
    assert not isinstance(env._env, brax_envs.Wrapper)  # Brax's raw env: no episode or auto-reset wrapper
    assert env.agent_joints == want.joints
    assert spec.num_agents == len(want.joints)
    assert env.obs_sizes == want.obs_sizes
    assert spec.obs_dim == max(want.obs_sizes)
    assert spec.state_dim == want.state_dim
    assert spec.continuous and spec.action_bounds == (-1.0, 1.0)
    assert spec.num_actions == max(len(p) for p in want.joints)
    mask = np.array([[d < len(p) for d in range(spec.num_actions)] for p in want.joints])
    np.testing.assert_array_equal(env._avail, mask)
    assert spec.reward_bounds == (-np.inf, np.inf)
    assert "Brax" in spec.source and env.partition in spec.source
    # every actuator is driven by exactly one agent dimension
    assert sorted(j for p in env.agent_joints for j in p) == sorted(
        mujoco.mj_id2name(model_of(env), mujoco.mjtObj.mjOBJ_JOINT, int(model_of(env).actuator_trnid[u, 0]))
        for u in range(model_of(env).nu)
    )


def test_observation_order_follows_mamujoco():
    """Own joints, then distance 1 and 2, each sorted by name, each joint's categories in turn; then the
    root: qpos of all root joints, then their qvel."""
    root = ("qpos:rootz", "qpos:rooty", "qvel:rootx", "qvel:rootz", "qvel:rooty")
    assert make("mamujoco_hopper_3x1").obs_labels == (
        ("qpos:thigh_joint", "qvel:thigh_joint", "qpos:leg_joint", "qpos:foot_joint", *root),
        ("qpos:leg_joint", "qvel:leg_joint", "qpos:foot_joint", "qpos:thigh_joint", *root),
        ("qpos:foot_joint", "qvel:foot_joint", "qpos:leg_joint", "qpos:thigh_joint", *root),
    )
    assert make("mamujoco_halfcheetah_3x2").obs_labels[1] == (
        "qpos:bthigh", "qvel:bthigh", "qpos:ffoot", "qvel:ffoot",  # own joints, sorted
        "qpos:bshin", "qpos:fshin", "qpos:fthigh", "qpos:bfoot", *root,
    )
    assert make("mamujoco_walker2d_3x2").obs_labels[2] == (
        "qpos:leg_left_joint", "qvel:leg_left_joint", "qpos:thigh_left_joint", "qvel:thigh_left_joint",
        "qpos:foot_left_joint", "qpos:thigh_joint", "qpos:leg_joint", *root,
    )
    free_root = tuple(f"qpos:root[{c}]" for c in range(2, 7)) + tuple(f"qvel:root[{c}]" for c in range(6))
    cfrc = lambda body: tuple(f"cfrc_ext:{body}[{c}]" for c in range(6))  # noqa: E731
    assert make("mamujoco_ant_4x2").obs_labels[2] == (
        "qpos:ankle_3", "qvel:ankle_3", *cfrc("torso"), *cfrc("aux_3"), *cfrc("ankle_3_body"),
        "qpos:hip_3", "qvel:hip_3", "qpos:hip_1", "qpos:hip_2", "qpos:hip_4",
        "qpos:ankle_1", "qpos:ankle_2", "qpos:ankle_4", *free_root,
    )
    humanoid = make("mamujoco_humanoid_17x1").obs_labels
    assert humanoid[7] == (
        "qpos:right_elbow", "qvel:right_elbow", "qfrc_actuator:right_elbow",
        "qpos:right_shoulder1", "qpos:right_shoulder2", "qpos:abdomen_x", "qpos:abdomen_y", "qpos:abdomen_z",
        *free_root,
    )
    assert humanoid[15][:9] == (
        "qpos:right_knee", "qvel:right_knee", "qfrc_actuator:right_knee",
        "qpos:right_hip_x", "qpos:right_hip_y", "qpos:right_hip_z", "qpos:abdomen_x", "qpos:abdomen_y",
        "qpos:abdomen_z",
    )


def test_graph_walk_on_the_humanoid():
    edges = ROBOTS["humanoid"].edges
    assert joints_at_distance(("right_elbow",), edges, 2) == [
        ["right_elbow"], ["right_shoulder1", "right_shoulder2"], ["abdomen_x", "abdomen_y", "abdomen_z"]]
    assert joints_at_distance(("left_knee",), edges, 3) == [
        ["left_knee"], ["left_hip_x", "left_hip_y", "left_hip_z"], ["abdomen_x", "abdomen_y", "abdomen_z"],
        sorted(["left_shoulder1", "left_shoulder2", "right_shoulder1", "right_shoulder2",
                "right_hip_x", "right_hip_y", "right_hip_z"])]
    assert joints_at_distance(("abdomen_x", "abdomen_y"), edges, 0) == [["abdomen_x", "abdomen_y"]]


def test_agent_obsk_changes_the_view():
    sizes = {k: MaMuJoCo(robot="hopper", agent_obsk=k).obs_sizes for k in (0, 1)}  # k = 2: the preset
    assert sizes[0] == (2 + PLANAR_ROOT,) * 3
    assert sizes[1] == (3 + PLANAR_ROOT, 4 + PLANAR_ROOT, 3 + PLANAR_ROOT)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_agent_drives_its_own_joints(name):
    env = make(name)
    model = model_of(env)
    n, a = env.spec.num_agents, env.spec.num_actions
    actions = (np.arange(n * a, dtype=np.float32).reshape(n, a) + 1.0) / (n * a + 1.0)
    ctrl = np.asarray(env.joint_action(jnp.asarray(actions)))
    assert ctrl.shape == (model.nu,)
    for i, part in enumerate(EXPECTED[name].joints):
        for d, joint in enumerate(part):
            u = int(np.flatnonzero(model.actuator_trnid[:, 0] == joint_id(model, joint))[0])
            # the humanoid's +-0.4 ctrlrange is applied by Brax's own step: no second rescaling here
            assert ctrl[u] == pytest.approx(actions[i, d]), (joint, u)
    # out-of-bounds values are clipped to [-1, 1]
    np.testing.assert_allclose(env.joint_action(jnp.full((n, a), 7.0)), 1.0)
    np.testing.assert_allclose(env.joint_action(jnp.full((n, a), -7.0)), -1.0)


def test_uneven_partition_is_padded():
    env = MaMuJoCo(robot="humanoid", partition="9|8")
    assert env.agent_joints == (HUMANOID_17[:9], HUMANOID_17[9:])
    assert env.spec.num_actions == 9
    np.testing.assert_array_equal(env._avail, [[True] * 9, [True] * 8 + [False]])
    actions = np.zeros((2, 9), np.float32)
    base = np.asarray(env.joint_action(jnp.asarray(actions)))
    actions[1, 8] = 0.9  # the padded dimension is ignored
    np.testing.assert_array_equal(env.joint_action(jnp.asarray(actions)), base)
    assert env.obs_sizes[0] > env.obs_sizes[1] and env.spec.obs_dim == env.obs_sizes[0]

    # observations are zero-padded at the end: a fake physics state with no zero in it
    model = model_of(env)
    fake = types.SimpleNamespace(q=jnp.arange(1.0, model.nq + 1), qd=jnp.arange(1.0, model.nv + 1) / 7,
                                 qfrc_actuator=-jnp.arange(1.0, model.nv + 1))
    obs = np.asarray(env.observe(fake))
    assert obs.shape == (2, env.spec.obs_dim)
    assert (obs[1, env.obs_sizes[1]:] == 0).all() and (obs[1, : env.obs_sizes[1]] != 0).all()
    assert (obs[0] != 0).all()


def expected_from_labels(env: MaMuJoCo, q, qd, qfrc) -> np.ndarray:
    """What each labelled entry must hold, looked up in the model by joint name (for the qpos / qvel /
    qfrc_actuator categories): hopper clips velocities to +-10; hopper and walker2d show rootz as the torso
    height (Brax's models start rootz at 0 with the torso at 1.25)."""
    model = model_of(env)
    out = np.zeros((env.spec.num_agents, env.spec.obs_dim), np.float32)
    for i, labels in enumerate(env.obs_labels):
        for k, label in enumerate(labels):
            category, _, joint = label.partition(":")
            joint, _, rest = joint.partition("[")
            j = joint_id(model, joint)
            offset = int(rest.rstrip("]")) if rest else 0
            if category == "qpos":
                height = 1.25 if joint == "rootz" and env.robot != "halfcheetah" else 0.0
                value = q[model.jnt_qposadr[j] + offset] + height
            elif category == "qvel":
                value = qd[model.jnt_dofadr[j] + offset]
                value = np.clip(value, -10, 10) if env.robot == "hopper" else value
            else:
                assert category == "qfrc_actuator"
                value = qfrc[model.jnt_dofadr[j]]
            out[i, k] = value
    return out


@pytest.mark.parametrize("name", [n for n in EXPECTED if "ant" not in n])  # ant reads contact forces: slow test
def test_observation_values_from_a_fake_state(name):
    env = make(name)
    model = model_of(env)
    rng = np.random.default_rng(0)
    q, qd, qfrc = (rng.normal(0, 20, size).astype(np.float32) for size in (model.nq, model.nv, model.nv))
    fake = types.SimpleNamespace(q=jnp.asarray(q), qd=jnp.asarray(qd), qfrc_actuator=jnp.asarray(qfrc))
    np.testing.assert_allclose(env.observe(fake), expected_from_labels(env, q, qd, qfrc), rtol=1e-6)


def test_invalid_options_say_what_is_allowed():
    with pytest.raises(ValueError, match="Valid robots: halfcheetah, hopper, walker2d, ant, humanoid"):
        MaMuJoCo(robot="cheetah")
    with pytest.raises(ValueError, match="Valid partitions: 3x2, 2x3, 6x1"):
        MaMuJoCo(robot="walker2d", partition="3x1")
    with pytest.raises(ValueError, match="agent_obsk must be an int >= 0"):
        MaMuJoCo(robot="hopper", agent_obsk=-1)
    with pytest.raises(ValueError, match="episode_limit must be an int >= 1"):
        MaMuJoCo(robot="hopper", episode_limit=0)
    with pytest.raises(ValueError, match="'mjx', 'generalized', 'positional', 'spring'"):
        MaMuJoCo(robot="hopper", backend="gpu")
    with pytest.raises(ValueError, match="must be one of 'mjx'"):
        MaMuJoCo(robot="ant", backend="generalized")
    with pytest.raises(ValueError, match="no option 'robot'"):
        envs.make("mamujoco_hopper_3x1", robot="ant")


def test_generic_name_defaults_to_the_robots_table_1_partition():
    env = envs.make("mamujoco", robot="walker2d")
    assert env.partition == "3x2" and env.spec.name == "mamujoco"


# ------------------------------------------------------------------------------------------------
# One compiled robot: hopper 3x1
# ------------------------------------------------------------------------------------------------

LIMIT = 8  # a zero-action hopper stands for ~140 steps; full reverse torque makes it fall in ~6


@pytest.fixture(scope="module")
def hopper():
    env = envs.make("mamujoco_hopper_3x1", episode_limit=LIMIT)
    model = model_of(env)
    assert [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in range(model.njnt)] == [
        "rootx", "rootz", "rooty", "thigh_joint", "leg_joint", "foot_joint"]
    # reset and step compiled once; AutoReset runs eagerly around them (its own work is a few selects)
    env.reset, env.step = jax.jit(env.reset), jax.jit(env.step)
    return types.SimpleNamespace(env=env, reset=env.reset, step=env.step, auto_step=envs.wrap(env).step)


def hopper_obs(ps) -> np.ndarray:
    """Hopper 3x1 observations written out from the physics state (qpos: rootx, rootz, rooty, thigh, leg,
    foot; velocities clipped to +-10; the torso height is rootz + 1.25)."""
    q, v = np.asarray(ps.qpos), np.clip(np.asarray(ps.qvel), -10, 10)
    root = [q[1] + 1.25, q[2], v[0], v[1], v[2]]
    return np.array([
        [q[3], v[3], q[4], q[5], *root],  # thigh
        [q[4], v[4], q[5], q[3], *root],  # leg
        [q[5], v[5], q[4], q[3], *root],  # foot
    ], np.float32)


def brax_hopper_obs(ps) -> np.ndarray:
    """Brax's single-agent hopper observation: torso height, qpos[2:], clipped velocities."""
    return np.concatenate([[np.asarray(ps.x.pos)[0, 2]], np.asarray(ps.qpos)[2:],
                           np.clip(np.asarray(ps.qvel), -10, 10)])


@pytest.mark.slow
def test_hopper_zero_action_episode_is_truncated(hopper):
    key = jax.random.PRNGKey(0)
    zero = jnp.zeros((3, 1))
    state, ts = hopper.reset(key)
    auto_state = state
    np.testing.assert_allclose(ts.obs, hopper_obs(state.env_state.pipeline_state), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ts.state, brax_hopper_obs(state.env_state.pipeline_state), rtol=1e-6)
    assert not ts.terminated and not ts.truncated
    for t in range(1, LIMIT + 1):
        step_key = jax.random.PRNGKey(t)
        state, ts = hopper.step(step_key, state, zero)
        auto_state, auto_ts = hopper.auto_step(step_key, auto_state, zero)
        ps = state.env_state.pipeline_state
        np.testing.assert_allclose(ts.obs, hopper_obs(ps), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ts.state, brax_hopper_obs(ps), rtol=1e-6)
        assert np.isfinite(float(ts.reward)) and float(ts.reward) > 0.9  # healthy bonus 1 minus small costs
        assert not ts.terminated and bool(ts.truncated) == (t == LIMIT)
        assert int(ts.info["episode_length"]) == t
        # through AutoReset: the same transition, and the terminal observation is kept at the end
        np.testing.assert_allclose(auto_ts.info["final_obs"], ts.obs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(auto_ts.info["final_state"], ts.state, rtol=1e-5, atol=1e-6)
        assert bool(auto_ts.truncated) == (t == LIMIT) and not auto_ts.terminated
        assert float(auto_ts.reward) == pytest.approx(float(ts.reward), rel=1e-5)
    # after the end AutoReset shows the next episode's first observation
    _, first = hopper.reset(jax.random.split(jax.random.PRNGKey(LIMIT))[1])
    np.testing.assert_allclose(auto_ts.obs, first.obs, rtol=1e-6)
    assert int(auto_ts.info["episode_length"]) == LIMIT
    assert not np.allclose(auto_ts.obs, auto_ts.info["final_obs"])


@pytest.mark.slow
def test_hopper_fall_terminates_and_keeps_the_final_obs(hopper):
    push = jnp.full((3, 1), -1.0, jnp.float32)  # strongly typed, as the other tests' actions: no recompile
    state, _ = hopper.reset(jax.random.PRNGKey(1))
    auto_state = state
    for t in range(1, LIMIT + 1):
        state, ts = hopper.step(jax.random.PRNGKey(t), state, push)
        auto_state, auto_ts = hopper.auto_step(jax.random.PRNGKey(t), auto_state, push)
        if ts.terminated:
            break
    assert bool(ts.terminated) and not ts.truncated and t < LIMIT, "the hopper should fall before the limit"
    ps = state.env_state.pipeline_state
    q, qd = np.asarray(ps.qpos), np.asarray(ps.qvel)
    healthy = float(ps.x.pos[0, 2]) > 0.7 and abs(q[2]) < 0.2 and (np.abs(np.concatenate([q[2:], qd])) < 100).all()
    assert not healthy  # gym's (and Brax's) hopper health: torso height > 0.7, |angle| < 0.2, |state| < 100
    assert bool(auto_ts.terminated) and not auto_ts.truncated
    np.testing.assert_allclose(auto_ts.info["final_obs"], hopper_obs(ps), rtol=1e-5, atol=1e-6)
    assert int(auto_ts.info["episode_length"]) == t


@pytest.mark.slow
def test_hopper_clips_out_of_bounds_actions(hopper):
    state, _ = hopper.reset(jax.random.PRNGKey(2))
    big = jnp.array([[5.0], [-3.0], [1.5]], jnp.float32)
    _, ts_big = hopper.step(jax.random.PRNGKey(0), state, big)
    _, ts_unit = hopper.step(jax.random.PRNGKey(0), state, jnp.clip(big, -1.0, 1.0))
    jax.tree.map(np.testing.assert_array_equal, ts_big, ts_unit)


# ------------------------------------------------------------------------------------------------
# Slow: the robots that read MJX-only quantities (ant: contact forces; humanoid: actuator forces)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ant_contact_forces_and_root():
    from mujoco import mjx

    env = make("mamujoco_ant_4x2")
    model = model_of(env)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state, ts = reset(jax.random.PRNGKey(0))
    for t in range(20):  # the ant drops onto its feet
        state, ts = step(jax.random.PRNGKey(t), state, jnp.zeros((4, 2)))
    ps = state.env_state.pipeline_state
    cfrc = np.clip(np.asarray(mjx.rne_postconstraint(env._env.sys, ps)._impl.cfrc_ext), -1, 1)
    q, qd = np.asarray(ps.qpos), np.asarray(ps.qvel)
    assert np.abs(cfrc).sum() > 0, "the feet touch the floor"
    obs = np.asarray(ts.obs)
    for i in range(4):
        hip, ankle = joint_id(model, f"hip_{i + 1}"), joint_id(model, f"ankle_{i + 1}")
        hip_body, ankle_body = model.jnt_bodyid[hip], model.jnt_bodyid[ankle]
        want_head = np.concatenate([
            [q[model.jnt_qposadr[ankle]], qd[model.jnt_dofadr[ankle]]], cfrc[1], cfrc[hip_body], cfrc[ankle_body],
            [q[model.jnt_qposadr[hip]], qd[model.jnt_dofadr[hip]]],
        ])
        np.testing.assert_allclose(obs[i, :22], want_head, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(obs[i, -11:], np.concatenate([q[2:7], qd[:6]]), rtol=1e-6)
    assert not ts.terminated


@pytest.mark.slow
def test_humanoid_actuator_forces_and_control_range():
    env = make("mamujoco_humanoid_17x1")
    model = model_of(env)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state, ts = reset(jax.random.PRNGKey(0))
    actions = jnp.linspace(-0.95, 0.9, 17)[:, None]  # no zero among them
    state, ts = step(jax.random.PRNGKey(1), state, actions)
    ps = state.env_state.pipeline_state
    for i, joint in enumerate(HUMANOID_17):
        u = int(np.flatnonzero(model.actuator_trnid[:, 0] == joint_id(model, joint))[0])
        assert float(ps.ctrl[u]) == pytest.approx(0.4 * float(actions[i, 0]), abs=1e-6)  # ctrlrange +-0.4
    q, qd, qfrc = np.asarray(ps.qpos), np.asarray(ps.qvel), np.asarray(ps.qfrc_actuator)
    np.testing.assert_allclose(ts.obs, expected_from_labels(env, q, qd, qfrc), rtol=1e-5, atol=1e-6)
    assert np.abs(qfrc[6:]).min() > 0  # every joint's own actuator force is observed


@pytest.mark.slow
@pytest.mark.parametrize("name, backend", [("mamujoco_halfcheetah_3x2", "mjx"), ("mamujoco_walker2d_3x2", "mjx"),
                                           ("mamujoco_halfcheetah_3x2", "generalized")])
def test_planar_robots_read_the_physics_state(name, backend):
    env = envs.make(name, backend=backend)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state, ts = reset(jax.random.PRNGKey(0))
    actions = jnp.full((3, 2), 0.5, jnp.float32)
    for t in range(3):
        state, ts = step(jax.random.PRNGKey(t), state, actions)
    ps = state.env_state.pipeline_state
    np.testing.assert_allclose(ts.obs, expected_from_labels(env, np.asarray(ps.q), np.asarray(ps.qd), None),
                               rtol=1e-5, atol=1e-6)
    assert ts.state.shape == (17,) and np.isfinite(np.asarray(ts.state)).all()
    assert not ts.terminated
