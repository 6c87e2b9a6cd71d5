"""Multi-agent MuJoCo (MaMuJoCo's joint partitions and agent_obsk observations) on Brax physics.

Multi-agent MuJoCo (Peng et al. 2021, "FACMAC") splits a MuJoCo robot's actuated joints among agents.
Each robot is a graph whose nodes are its actuated joints and whose (hyper)edges join neighbouring
joints; an agent drives the joints of its part and observes, for every graph distance ``d`` up to
``agent_obsk``, a list of categories of the joints at that distance, then global categories of the
robot's root. This module rebuilds that construction (the graph, the partitions, the per-distance
categories) in Python at construction time and reads every observed value from the physics state of
Brax's single-agent environment (``pipeline_state``), not from Brax's observation vector.

Partitions (agent -> joints, in MaMuJoCo's agent order and in each agent's action order; Brax's joint
names), with DPO's Table 1 tasks marked *:

* halfcheetah 3x2*: (bfoot, bshin), (bthigh, ffoot), (fshin, fthigh);
  2x3: (bfoot, bshin, bthigh), (ffoot, fshin, fthigh); 6x1: bfoot, bshin, bthigh, ffoot, fshin, fthigh.
  Graph: the chain bfoot - bshin - bthigh - fthigh - fshin - ffoot.
* hopper 3x1*: thigh_joint, leg_joint, foot_joint. Graph: foot_joint - leg_joint - thigh_joint.
* walker2d 3x2*: (foot_joint, leg_joint), (thigh_joint, foot_left_joint), (leg_left_joint, thigh_left_joint);
  2x3: (foot_joint, leg_joint, thigh_joint), (foot_left_joint, leg_left_joint, thigh_left_joint);
  6x1: foot_joint, leg_joint, thigh_joint, foot_left_joint, leg_left_joint, thigh_left_joint.
  Graph: foot - leg - thigh - thigh_left - leg_left - foot_left.
* ant 4x2*: (hip_1, ankle_1), (hip_2, ankle_2), (hip_3, ankle_3), (hip_4, ankle_4);
  2x4: (hip_1, ankle_1, hip_2, ankle_2), (hip_3, ankle_3, hip_4, ankle_4);
  2x4d (diagonal legs): (hip_1, ankle_1, hip_3, ankle_3), (hip_2, ankle_2, hip_4, ankle_4); 8x1: one joint each.
  Graph: each ankle_i - hip_i, and one hyperedge joining the four hips.
* humanoid 17x1*: one joint each, in the order left_shoulder1, left_shoulder2, abdomen_x, abdomen_y,
  abdomen_z, right_shoulder1, right_shoulder2, right_elbow, left_elbow, left_hip_x, left_hip_y, left_hip_z,
  right_hip_x, right_hip_y, right_hip_z, right_knee, left_knee;
  9|8: the first nine (upper body) and the last eight (legs).
  Graph (hyperedges): the abdomen triple; each hip triple; each hip triple with its knee; each shoulder
  pair with its elbow; each shoulder pair with the abdomen triple; each hip triple with the abdomen triple.

The 3x2 halfcheetah / walker2d and 17x1 humanoid partitions are those of the MAPPO / HAPPO copies of
MaMuJoCo (TRPO-in-MARL, HARL); the others are in the original code as well (2x4d: the original's
diagonal pairs, legs 1 & 3 and 2 & 4).

Observation of an agent (``joints at distance d`` are sorted by name at every distance, as MaMuJoCo
sorts them by label): for d = 0, 1, ..., agent_obsk, for every joint at distance d, for every category
of distance d, its values; then for each global category, the values of every global root joint.
Per-distance categories (MaMuJoCo's defaults, the last list repeats for larger d):

* halfcheetah, hopper, walker2d: d = 0: qpos, qvel; d >= 1: qpos.
* ant: d = 0: qpos, qvel, cfrc_ext; d >= 1: qpos. cfrc_ext is the 6-d external (contact) force of the
  joint's bodies, clipped to [-1, 1], each body at most once per agent.
* humanoid: d = 0: qpos, qvel, cfrc_ext, cvel, cinert, qfrc_actuator; d >= 1: qpos. MaMuJoCo's humanoid
  joints name no bodies, so of the body categories nothing is observed: a joint shows qpos, qvel and its
  actuator force (qfrc_actuator at its dof).

Global categories: qpos and qvel of the root (Gymnasium-Robotics' MaMuJoCo defaults): planar robots
(halfcheetah, hopper, walker2d) show rootz and rooty positions (not rootx) and the three root velocities;
ant and humanoid show the free joint's height and orientation quaternion (qpos[2:7], not x and y) and
its six velocities. Hopper clips every observed velocity to [-10, 10], as MaMuJoCo does.

With agent_obsk = 2 the observation sizes are (per agent): halfcheetah 3x2: 11, 13, 12; hopper 3x1: 9, 9, 9;
walker2d 3x2: 11, 13, 12; ant 4x2: 39 each; humanoid 17x1: 27, 27, 30, 30, 30, 27, 27, 19, 19, 27, 27, 27,
27, 27, 27, 20, 20. Agents' observations differ in size: each is zero-padded at its end to the largest
(``obs_dim`` = the maximum), as jaxmarl's "max" homogenisation does; ``obs_sizes`` gives the real sizes
and ``obs_labels`` names every entry.

Actions are continuous: every agent sends ``num_actions`` = (largest part) floats in [-1, 1] (clipped),
dimension i driving the i-th joint of its part; ``avail_actions`` marks the real dimensions, padded
ones are ignored. An actuator whose ctrlrange is not [-1, 1] takes its value rescaled linearly from
[-1, 1] onto the range, as MaMuJoCo's action normalisation does: only the humanoid's are not (+-0.4,
as in gym), and Brax's humanoid step does this rescaling itself (its control cost is then computed on
the rescaled controls, as gym's), so the actions are handed to it unchanged; for a robot whose Brax
step did not, ``joint_action`` would rescale.

Global state: Brax's single-agent observation vector (MaMuJoCo's state is the single-agent gym
observation): halfcheetah 17, hopper 11, walker2d 17, ant 27, humanoid 244 values.

Reward and termination: Brax's reward of the robot is the team reward; Brax's ``done`` (unhealthy
torso height / angle / state for hopper, walker2d, ant, humanoid; never for halfcheetah) ends the
episode as ``terminated``. The time limit (``episode_limit``, 1000 in the papers) is a truncation. Brax's
environment is used raw, without its episode or auto-reset wrappers.

Where this differs from MaMuJoCo:

* Physics and rewards are Brax's (MuJoCo's own physics through MJX by default), not gym's v2 MuJoCo
  environments: the models, time steps and reward functions follow gym's closely (forward velocity,
  healthy bonus, control cost; same healthy ranges), but Brax leaves out the contact costs of ant and
  humanoid, and its humanoid state (244) leaves out the contact forces of gym's 376.
* The MAPPO / HAPPO copies that define 3x2 and 17x1 send the agents' actions concatenated in agent
  order to the actuators, so there an agent may drive other joints than those it observes (halfcheetah
  3x2's first agent drives bthigh, bshin); here, as in the original MaMuJoCo and Gymnasium-Robotics,
  every agent drives its own joints. Those copies also hand every agent the whole normalised state
  instead of its agent_obsk observation; this module gives the agent_obsk observation.
* Global categories: the original's default is none (and it defines no root for walker2d and humanoid);
  here the root's qpos and qvel are observed as in Gymnasium-Robotics, whose hopper root velocities
  are read at their own indices (the original reads rootz's velocity for rootx).
* Brax's ant model merges gym's static upper-leg bodies into the torso, so an ant agent sees the
  contact forces of three bodies (torso, hip body, ankle body: 18 values), not four (24). The contact
  forces are computed from MJX's solution (``rne_postconstraint``); with the MuJoCo 2.0 that the
  original code ran on they read as zeros.
* Brax's hopper and walker2d models drop the rootz ``ref`` of gym's, so their rootz coordinate starts at
  0; it is observed shifted back by the torso's start height (1.25), i.e. as the torso height MaMuJoCo
  and Brax's own observation show.
* Backends: halfcheetah, hopper and walker2d run on every Brax backend; ant and humanoid observe
  quantities (cfrc_ext, qfrc_actuator) that only the "mjx" backend provides, so they need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep, stdout_to_stderr

with stdout_to_stderr():  # mujoco / brax print on import (optional GPU back ends they do not find)
    import mujoco
    from brax import envs as brax_envs
    from mujoco import mjx

BACKENDS = ("mjx", "generalized", "positional", "spring")
GLOBAL_CATEGORIES = ("qpos", "qvel")
JOINT_CATEGORIES = ("qpos", "qvel", "qfrc_actuator")  # one value per (1-dof) joint
BODY_CATEGORIES = {"cfrc_ext": 6, "cvel": 6, "cinert": 10}  # values per body
MJX_ONLY = ("qfrc_actuator", "cfrc_ext", "cvel", "cinert")
# qpos / qvel entries of a joint, by MuJoCo joint type (free, ball, slide, hinge)
_QPOS_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 7, int(mujoco.mjtJoint.mjJNT_BALL): 4,
              int(mujoco.mjtJoint.mjJNT_SLIDE): 1, int(mujoco.mjtJoint.mjJNT_HINGE): 1}
_DOF_SIZE = {int(mujoco.mjtJoint.mjJNT_FREE): 6, int(mujoco.mjtJoint.mjJNT_BALL): 3,
             int(mujoco.mjtJoint.mjJNT_SLIDE): 1, int(mujoco.mjtJoint.mjJNT_HINGE): 1}


@dataclasses.dataclass(frozen=True)
class Robot:
    """MaMuJoCo's description of one robot, in Brax's joint and body names.

    ``bodies`` name, per joint, the bodies whose body categories it shows: a body name, or
    ``"@joint"`` for the body that joint moves. ``global_joints`` are (root joint, leading qpos entries
    left out). ``height_joint``'s qpos is observed plus its body's start height.
    """

    brax_name: str
    edges: tuple[tuple[str, ...], ...]
    partitions: dict[str, tuple[tuple[str, ...], ...]]
    default_partition: str
    categories: str  # MaMuJoCo's k_categories label: "d0 categories|d1 categories|..."
    global_joints: tuple[tuple[str, int], ...]
    bodies: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    qvel_clip: float | None = None
    body_clip: float | None = None
    height_joint: str | None = None
    brax_scales_actions: bool = False  # Brax's step maps [-1, 1] onto the ctrlrange itself

    def categories_at(self, distance: int) -> tuple[str, ...]:
        levels = self.categories.split("|")
        return tuple(c for c in levels[min(distance, len(levels) - 1)].split(",") if c)


def _singles(joints: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple((j,) for j in joints)


_PLANAR_ROOT = (("rootx", 1), ("rootz", 0), ("rooty", 0))
_FREE_ROOT = (("root", 2),)

_CHEETAH = ("bfoot", "bshin", "bthigh", "ffoot", "fshin", "fthigh")
_WALKER = ("foot_joint", "leg_joint", "thigh_joint", "foot_left_joint", "leg_left_joint", "thigh_left_joint")
_ANT_LEGS = tuple((f"hip_{i}", f"ankle_{i}") for i in range(1, 5))
_HUMANOID = (
    "left_shoulder1", "left_shoulder2", "abdomen_x", "abdomen_y", "abdomen_z", "right_shoulder1",
    "right_shoulder2", "right_elbow", "left_elbow", "left_hip_x", "left_hip_y", "left_hip_z", "right_hip_x",
    "right_hip_y", "right_hip_z", "right_knee", "left_knee",
)
_ABDOMEN = ("abdomen_x", "abdomen_y", "abdomen_z")
_LEFT_HIP = ("left_hip_x", "left_hip_y", "left_hip_z")
_RIGHT_HIP = ("right_hip_x", "right_hip_y", "right_hip_z")
_LEFT_SHOULDER = ("left_shoulder1", "left_shoulder2")
_RIGHT_SHOULDER = ("right_shoulder1", "right_shoulder2")

ROBOTS: dict[str, Robot] = {
    "halfcheetah": Robot(
        brax_name="halfcheetah",
        edges=(("bfoot", "bshin"), ("bshin", "bthigh"), ("bthigh", "fthigh"), ("fthigh", "fshin"), ("fshin", "ffoot")),
        partitions={
            "3x2": (("bfoot", "bshin"), ("bthigh", "ffoot"), ("fshin", "fthigh")),
            "2x3": (("bfoot", "bshin", "bthigh"), ("ffoot", "fshin", "fthigh")),
            "6x1": _singles(_CHEETAH),
        },
        default_partition="3x2",
        categories="qpos,qvel|qpos",
        global_joints=_PLANAR_ROOT,
    ),
    "hopper": Robot(
        brax_name="hopper",
        edges=(("foot_joint", "leg_joint"), ("leg_joint", "thigh_joint")),
        partitions={"3x1": (("thigh_joint",), ("leg_joint",), ("foot_joint",))},
        default_partition="3x1",
        categories="qpos,qvel|qpos",
        global_joints=_PLANAR_ROOT,
        qvel_clip=10.0,
        height_joint="rootz",
    ),
    "walker2d": Robot(
        brax_name="walker2d",
        edges=(
            ("foot_joint", "leg_joint"), ("leg_joint", "thigh_joint"), ("foot_left_joint", "leg_left_joint"),
            ("leg_left_joint", "thigh_left_joint"), ("thigh_joint", "thigh_left_joint"),
        ),
        partitions={
            "3x2": (("foot_joint", "leg_joint"), ("thigh_joint", "foot_left_joint"),
                    ("leg_left_joint", "thigh_left_joint")),
            "2x3": (_WALKER[:3], _WALKER[3:]),
            "6x1": _singles(_WALKER),
        },
        default_partition="3x2",
        categories="qpos,qvel|qpos",
        global_joints=_PLANAR_ROOT,
        height_joint="rootz",
    ),
    "ant": Robot(
        brax_name="ant",
        edges=(*((f"ankle_{i}", f"hip_{i}") for i in range(1, 5)), ("hip_1", "hip_2", "hip_3", "hip_4")),
        partitions={
            "4x2": _ANT_LEGS,
            "2x4": (_ANT_LEGS[0] + _ANT_LEGS[1], _ANT_LEGS[2] + _ANT_LEGS[3]),
            "2x4d": (_ANT_LEGS[0] + _ANT_LEGS[2], _ANT_LEGS[1] + _ANT_LEGS[3]),
            "8x1": _singles(sum(_ANT_LEGS, ())),
        },
        default_partition="4x2",
        categories="qpos,qvel,cfrc_ext|qpos",
        global_joints=_FREE_ROOT,
        # MaMuJoCo: hip_i -> (torso, upper leg i), ankle_i -> (upper leg i, hip body i, ankle body i); Brax's
        # loader merges the static upper-leg bodies into the torso.
        bodies={
            **{f"hip_{i}": ("torso",) for i in range(1, 5)},
            **{f"ankle_{i}": ("torso", f"@hip_{i}", f"@ankle_{i}") for i in range(1, 5)},
        },
        body_clip=1.0,
    ),
    "humanoid": Robot(
        brax_name="humanoid",
        edges=(
            _ABDOMEN, _RIGHT_HIP, _LEFT_HIP, ("left_elbow", *_LEFT_SHOULDER), ("right_elbow", *_RIGHT_SHOULDER),
            ("left_knee", *_LEFT_HIP), ("right_knee", *_RIGHT_HIP), _LEFT_SHOULDER + _ABDOMEN,
            _RIGHT_SHOULDER + _ABDOMEN, _ABDOMEN + _LEFT_HIP, _ABDOMEN + _RIGHT_HIP,
        ),
        partitions={"17x1": _singles(_HUMANOID), "9|8": (_HUMANOID[:9], _HUMANOID[9:])},
        default_partition="17x1",
        categories="qpos,qvel,cfrc_ext,cvel,cinert,qfrc_actuator|qpos",
        global_joints=_FREE_ROOT,
        brax_scales_actions=True,
    ),
}


def joints_at_distance(part: tuple[str, ...], edges: tuple[tuple[str, ...], ...], k: int) -> list[list[str]]:
    """The joints at graph distance 0, 1, ..., k from a part (each joint once, at its nearest distance),
    sorted by name at every distance."""
    seen, frontier = set(part), set(part)
    levels = [sorted(frontier)]
    for _ in range(k):
        reached = {other for joint in frontier for edge in edges if joint in edge for other in edge}
        frontier = reached - seen
        seen |= frontier
        levels.append(sorted(frontier))
    return levels


@dataclasses.dataclass(frozen=True)
class _Feature:
    source: str  # "qpos", "qvel", a body category
    index: int  # into the flattened source
    label: str
    clip: float | None = None
    offset: float = 0.0


@contextlib.contextmanager
def _quiet_model_loading() -> Iterator[None]:
    """Brax's bundled models trigger MuJoCo compiler deprecation notices, which MuJoCo would append to a
    MUJOCO_LOG.TXT in the working directory; turn them into Python warnings while loading, and leave out
    Brax's notice that it is in maintenance mode."""
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message.strip()}", stacklevel=2))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Brax System, piplines and environments")
            yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _field(data: Any, name: str) -> Array:
    """A field of MJX data: recent MuJoCo keeps some (cfrc_ext, cinert) in ``data._impl``."""
    impl = getattr(data, "_impl", None)
    if impl is not None and hasattr(impl, name):
        return getattr(impl, name)
    return getattr(data, name)


_STATE_DIMS: dict[tuple[str, str], int] = {}


def _state_dim(env: Any, brax_name: str, backend: str) -> int:
    """The size of Brax's observation, from shapes only (Brax's ``observation_size`` runs a whole reset op
    by op); traced once per robot and backend."""
    if (brax_name, backend) not in _STATE_DIMS:
        _STATE_DIMS[brax_name, backend] = int(jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs.shape[-1])
    return _STATE_DIMS[brax_name, backend]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"MaMuJoCo: {name} must be an int >= {low}, got {value!r}")
    return int(value)


class MaMuJoCo(MultiAgentEnv):
    """A MaMuJoCo partition of a Brax robot (see the module docstring for partitions and observations).

    ``partition=None`` takes the robot's partition in DPO's Table 1 (halfcheetah 3x2, hopper 3x1,
    walker2d 3x2, ant 4x2, humanoid 17x1). ``agent_joints`` lists each agent's joints (its action
    order), ``obs_sizes`` each agent's real observation size before padding and ``obs_labels`` what each
    observation entry is (``"qpos:bthigh"``, ``"cfrc_ext:aux_1[3]"``, ...).
    """

    def __init__(
        self,
        *,
        robot: str = "halfcheetah",
        partition: str | None = None,
        agent_obsk: int = 2,
        episode_limit: int = 1000,
        backend: str = "mjx",
    ) -> None:
        if robot not in ROBOTS:
            raise ValueError(f"MaMuJoCo: unknown robot {robot!r}. Valid robots: {', '.join(ROBOTS)}")
        table = ROBOTS[robot]
        partition = table.default_partition if partition is None else partition
        if partition not in table.partitions:
            raise ValueError(f"MaMuJoCo: unknown partition {partition!r} for {robot}. "
                             f"Valid partitions: {', '.join(table.partitions)}")
        agent_obsk = _check_int("agent_obsk", agent_obsk, 0)
        episode_limit = _check_int("episode_limit", episode_limit, 1)
        needs_mjx = any(c in MJX_ONLY for d in range(agent_obsk + 1) for c in table.categories_at(d))
        allowed = ("mjx",) if needs_mjx else BACKENDS
        if backend not in allowed:
            why = " (its observations read MJX-only quantities)" if needs_mjx else ""
            raise ValueError(f"MaMuJoCo: backend for {robot} must be one of {', '.join(map(repr, allowed))}"
                             f"{why}, got {backend!r}")

        self.robot, self.partition, self.agent_obsk, self.backend = robot, partition, agent_obsk, backend
        self._robot = table
        with stdout_to_stderr(), _quiet_model_loading():
            # the raw environment: no episode wrapper, no auto-reset
            self._env = brax_envs.get_environment(table.brax_name, backend=backend)
        model = self._env.sys.mj_model
        self.agent_joints: tuple[tuple[str, ...], ...] = table.partitions[partition]

        joint_id = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j): j for j in range(model.njnt)}
        self._joint_id = joint_id
        self._model = model

        # actions: actuator u is driven by dimension dim[u] of agent agent[u]
        actuator_of = {int(model.actuator_trnid[u, 0]): u for u in range(model.nu)}
        owner = np.full(model.nu, -1, np.int32)
        dim = np.zeros(model.nu, np.int32)
        for i, part in enumerate(self.agent_joints):
            for d, joint in enumerate(part):
                u = actuator_of[joint_id[joint]]
                if owner[u] >= 0:
                    raise RuntimeError(f"MaMuJoCo {robot} {partition}: joint {joint} is in two parts")
                owner[u], dim[u] = i, d
        if (owner < 0).any():
            raise RuntimeError(f"MaMuJoCo {robot} {partition}: some actuators belong to no agent")
        self._act_agent, self._act_dim = owner, dim
        limited = model.actuator_ctrllimited.astype(bool)
        ranges = np.where(limited[:, None], model.actuator_ctrlrange, [-1.0, 1.0]).astype(np.float32)
        self._ctrl_low, self._ctrl_high = ranges[:, 0], ranges[:, 1]
        unit = np.all(self._ctrl_low == -1.0) and np.all(self._ctrl_high == 1.0)
        self._rescale = not (unit or table.brax_scales_actions)

        # observations
        features = [self._agent_features(part) for part in self.agent_joints]
        self.obs_sizes: tuple[int, ...] = tuple(len(f) for f in features)
        self.obs_labels: tuple[tuple[str, ...], ...] = tuple(tuple(x.label for x in f) for f in features)
        self._sources = tuple(s for s in ("qpos", "qvel", "qfrc_actuator", *BODY_CATEGORIES)
                              if any(x.source == s for f in features for x in f))
        sizes = {"qpos": model.nq, "qvel": model.nv, "qfrc_actuator": model.nv,
                 **{c: model.nbody * n for c, n in BODY_CATEGORIES.items()}}
        start = dict(zip(self._sources, np.cumsum([0] + [sizes[s] for s in self._sources])[:-1].tolist(),
                         strict=True))
        n, width = len(features), max(self.obs_sizes)
        self._obs_index = np.zeros((n, width), np.int32)
        self._obs_mask = np.zeros((n, width), np.float32)
        self._obs_offset = np.zeros((n, width), np.float32)
        self._obs_low = np.full((n, width), -np.inf, np.float32)
        self._obs_high = np.full((n, width), np.inf, np.float32)
        for i, feats in enumerate(features):
            for j, x in enumerate(feats):
                self._obs_index[i, j] = start[x.source] + x.index
                self._obs_mask[i, j] = 1.0
                self._obs_offset[i, j] = x.offset
                if x.clip is not None:
                    self._obs_low[i, j], self._obs_high[i, j] = -x.clip, x.clip

        num_actions = max(len(p) for p in self.agent_joints)
        state_dim = _state_dim(self._env, table.brax_name, backend)
        self._avail = np.array([[d < len(p) for d in range(num_actions)] for p in self.agent_joints], bool)
        self.spec = EnvSpec(
            name=f"mamujoco_{robot}_{partition}",
            num_agents=n,
            obs_dim=width,
            state_dim=state_dim,
            num_actions=num_actions,
            episode_limit=episode_limit,
            source=(f"Brax {table.brax_name} ({backend} backend) with Multi-agent MuJoCo's {robot} {partition} "
                    f"partition, agent_obsk={agent_obsk} (Peng et al. 2021)"
                    + ("; DPO Table 1" if partition == table.default_partition else "")),
            continuous=True,
            action_bounds=(-1.0, 1.0),
        )

    # ----- construction helpers ------------------------------------------------------------------
    def _body(self, ref: str) -> tuple[int, str]:
        model = self._model
        if ref.startswith("@"):
            body = int(model.jnt_bodyid[self._joint_id[ref[1:]]])
        else:
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, ref)
            if body < 0:
                raise RuntimeError(f"MaMuJoCo {self.robot}: no body {ref!r} in Brax's model")
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body) or f"{ref[1:]}_body"
        return body, name

    def _joint_feature(self, category: str, joint: str) -> _Feature:
        model, robot = self._model, self._robot
        j = self._joint_id[joint]
        if category == "qpos":
            offset = 0.0
            if joint == robot.height_joint:
                offset = float(model.body_pos[model.jnt_bodyid[j], 2])
            return _Feature("qpos", int(model.jnt_qposadr[j]), f"qpos:{joint}", offset=offset)
        clip = robot.qvel_clip if category == "qvel" else None
        return _Feature(category, int(model.jnt_dofadr[j]), f"{category}:{joint}", clip=clip)

    def _agent_features(self, part: tuple[str, ...]) -> list[_Feature]:
        robot, model = self._robot, self._model
        features: list[_Feature] = []
        shown: dict[str, set[int]] = {c: set() for c in BODY_CATEGORIES}
        for distance, joints in enumerate(joints_at_distance(part, robot.edges, self.agent_obsk)):
            for joint in joints:
                for category in robot.categories_at(distance):
                    if category in JOINT_CATEGORIES:
                        features.append(self._joint_feature(category, joint))
                    elif category in BODY_CATEGORIES:
                        width = BODY_CATEGORIES[category]
                        for ref in robot.bodies.get(joint, ()):
                            body, name = self._body(ref)
                            if body in shown[category]:
                                continue
                            shown[category].add(body)
                            clip = robot.body_clip if category == "cfrc_ext" else None
                            features += [_Feature(category, body * width + c, f"{category}:{name}[{c}]", clip)
                                         for c in range(width)]
                    else:
                        raise RuntimeError(f"MaMuJoCo: unknown observation category {category!r}")
        for category in GLOBAL_CATEGORIES:
            for joint, skip in robot.global_joints:
                j = self._joint_id[joint]
                size = _QPOS_SIZE if category == "qpos" else _DOF_SIZE
                count = size[int(model.jnt_type[j])]
                if count == 1:
                    feats = [self._joint_feature(category, joint)]
                else:
                    adr = int(model.jnt_qposadr[j] if category == "qpos" else model.jnt_dofadr[j])
                    clip = robot.qvel_clip if category == "qvel" else None
                    feats = [_Feature(category, adr + c, f"{category}:{joint}[{c}]", clip) for c in range(count)]
                features += feats[skip:] if category == "qpos" else feats
        return features

    # ----- physics to arrays -----------------------------------------------------------------------
    def _source_vector(self, ps: Any) -> Array:
        parts = []
        for source in self._sources:
            if source == "qpos":
                parts.append(ps.q)
            elif source == "qvel":
                parts.append(ps.qd)
            elif source == "qfrc_actuator":
                parts.append(_field(ps, "qfrc_actuator"))
            else:
                data = ps
                if source == "cfrc_ext":  # MJX's step leaves cfrc_ext unset unless a sensor needs it
                    data = mjx.rne_postconstraint(self._env.sys, ps)
                parts.append(_field(data, source).reshape(-1))
        return jnp.concatenate([jnp.asarray(p, jnp.float32).reshape(-1) for p in parts])

    def observe(self, pipeline_state: Any) -> Array:
        """Every agent's observation [N, obs_dim] of a Brax physics state (zero-padded)."""
        src = self._source_vector(pipeline_state)
        obs = jnp.clip(src[self._obs_index] + self._obs_offset, self._obs_low, self._obs_high)
        return obs * self._obs_mask

    def joint_action(self, actions: Array) -> Array:
        """The action vector [nu] handed to Brax's step for per-agent actions [N, A] (clipped to [-1, 1];
        padded dimensions ignored; rescaled onto the ctrlrange where Brax does not do it)."""
        low, high = self.spec.action_bounds
        ctrl = jnp.clip(jnp.asarray(actions, jnp.float32), low, high)[self._act_agent, self._act_dim]
        if self._rescale:
            ctrl = self._ctrl_low + (ctrl + 1.0) * 0.5 * (self._ctrl_high - self._ctrl_low)
        return ctrl

    def _timestep(self, brax_state: Any, reward: Array | float = 0.0, terminated: Array | bool = False) -> TimeStep:
        return make_timestep(self.observe(brax_state.pipeline_state), brax_state.obs, self._avail, reward, terminated)

    # ----- API -------------------------------------------------------------------------------------
    def reset_env(self, key: PRNGKey) -> tuple[Any, TimeStep]:
        brax_state = _strong(self._env.reset(key))
        return brax_state, self._timestep(brax_state)

    def step_env(self, key: PRNGKey, state: Any, actions: Array) -> tuple[Any, TimeStep]:
        # Brax's step updates the metrics dict of the state it is given in place: hand it a copy
        state = state.replace(metrics=dict(state.metrics))
        brax_state = _strong(self._env.step(state, self.joint_action(actions)))
        return brax_state, self._timestep(brax_state, brax_state.reward, brax_state.done > 0.5)


def _strong(tree: Any) -> Any:
    """Brax's step returns some weakly typed scalars (``done``, Python floats among the metrics) where its
    reset does not: make every leaf a strongly typed array, so that states from reset and from step have
    one type and a jitted step compiles once."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)
