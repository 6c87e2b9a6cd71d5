"""Episode replay inside the compiled program: whole episodes, padded to the episode limit, streamed in.

Why our own buffer: recurrent value learners (pymarl-style) train on whole episodes that start at
index 0 of their row, so the GRU state is reset exactly once, at the episode's start. flashbax's
trajectory buffer samples fixed-length windows of a stream, not whole episodes aligned to their start,
so it cannot express this without a second bookkeeping layer on top; a slot array with a mask is
simpler and has fixed shapes.

Layout (C = capacity, T = episode limit, a leading capacity axis, one episode per slot):

- ``obs [C, T+1, N, obs_dim]`` and ``state [C, T+1, S]`` in ``dtype`` (float32, or bfloat16 to halve
  memory, kept as its uint16 bit pattern), ``avail [C, T+1, N, A]`` bool. Index ``t+1`` holds the
  observation *after* step ``t``: for the last step of an episode that is the terminal/truncation
  observation (``info["final_obs"]`` etc. of the auto-reset env), so bootstrapping a truncated last step
  reads ``obs[t+1]``.
- ``actions [C, T, N]`` in the narrowest integer type that holds the action count (int8 for fewer than
  128 actions; :func:`action_dtype`), ``reward [C, T]`` float32, ``terminated [C, T]`` bool and
  ``mask [C, T]`` bool (step t is a real step), plus ``complete [C]`` (the slot holds a finished episode).

Only the env's raw observations are stored: last-action and agent-id one-hots are rebuilt from the
stored actions when a batch is used.

Streaming writes. Each parallel env writes its in-progress episode straight into its own slot, one row
per env step (a scatter of ``num_envs`` rows). When an episode ends the slot is marked complete and the
env takes a fresh slot from a circular write pointer; several envs finishing in the same step get
distinct slots through a cumulative sum, and taking a slot clears its mask row and complete flag.
Slots still being written by another env are skipped by the pointer, so an episode in progress is never
reallocated whatever the capacity (>= 2 x num_envs; the pointer looks 2 x num_envs slots ahead, of
which at most num_envs are busy).

Sampling draws episodes uniformly *with replacement* among complete slots: a uniform rank among the
complete slots, found by a binary search of their running count, so sampling needs O(C) memory (a
categorical draw over the slots would make ``batch_size x C`` random numbers, which under a vmap over
many seeds rivals the buffer itself).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import EnvSpec

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# bfloat16 is stored as its uint16 bit pattern: XLA:CPU scatters bfloat16 arrays by converting the whole
# array to float32 and back (a full copy per env step), while integer scatters update in place.
_STORAGE = {"float32": jnp.float32, "bfloat16": jnp.uint16}


def _encode(x: jax.Array, storage: Any) -> jax.Array:
    if storage == jnp.uint16:
        return jax.lax.bitcast_convert_type(x.astype(jnp.bfloat16), jnp.uint16)
    return x.astype(storage)


def _decode(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.uint16:
        return jax.lax.bitcast_convert_type(x, jnp.bfloat16).astype(jnp.float32)
    return x.astype(jnp.float32)


@struct.dataclass
class Episodes:
    """A batch of whole episodes [B, T(+1), ...] as stored (obs/state cast back to float32)."""

    obs: jax.Array  # [B, T+1, N, obs_dim]
    state: jax.Array  # [B, T+1, S]
    avail: jax.Array  # [B, T+1, N, A] bool
    actions: jax.Array  # [B, T, N] int32 (stored narrower)
    reward: jax.Array  # [B, T]
    terminated: jax.Array  # [B, T] bool
    mask: jax.Array  # [B, T] bool


@struct.dataclass
class EpisodeBuffer:
    obs: jax.Array
    state: jax.Array
    avail: jax.Array
    actions: jax.Array
    reward: jax.Array
    terminated: jax.Array
    mask: jax.Array
    complete: jax.Array  # [C] bool
    write_slot: jax.Array  # [E] int32: the slot each env writes into
    write_step: jax.Array  # [E] int32: the row of the next step in that slot
    pointer: jax.Array  # [] int32: where the search for the next free slot starts

    @property
    def capacity(self) -> int:
        return self.complete.shape[-1]

    @property
    def episode_limit(self) -> int:
        return self.reward.shape[-1]

    @property
    def num_complete(self) -> jax.Array:
        return jnp.sum(self.complete, axis=-1, dtype=jnp.int32)


def action_dtype(num_actions: int) -> Any:
    """The narrowest signed integer type that holds actions 0..num_actions-1."""
    for dtype in (jnp.int8, jnp.int16):
        if num_actions <= np.iinfo(dtype).max:
            return dtype
    return jnp.int32


def bytes_per_episode(spec: EnvSpec, dtype: str = "float32") -> int:
    """Memory of one slot: what ``capacity x`` this costs per seed."""
    t, n, a = spec.episode_limit, spec.num_agents, spec.num_actions
    item = np.dtype(DTYPES[dtype]).itemsize
    action = np.dtype(action_dtype(a)).itemsize
    return (t + 1) * (n * spec.obs_dim + spec.state_dim) * item + (t + 1) * n * a + t * n * action + t * (4 + 1 + 1) + 1


def init_buffer(spec: EnvSpec, capacity: int, num_envs: int, dtype: str = "float32") -> EpisodeBuffer:
    """An empty buffer; env e starts writing into slot e."""
    if capacity < 2 * num_envs:
        raise ValueError(f"replay capacity ({capacity}) must be at least 2 x num_envs ({2 * num_envs})")
    if dtype not in DTYPES:
        raise ValueError(f"buffer dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    c, t, n, a, fdt = capacity, spec.episode_limit, spec.num_agents, spec.num_actions, _STORAGE[dtype]
    return EpisodeBuffer(
        obs=jnp.zeros((c, t + 1, n, spec.obs_dim), fdt),
        state=jnp.zeros((c, t + 1, spec.state_dim), fdt),
        avail=jnp.zeros((c, t + 1, n, a), bool),
        actions=jnp.zeros((c, t, n), action_dtype(a)),
        reward=jnp.zeros((c, t), jnp.float32),
        terminated=jnp.zeros((c, t), bool),
        mask=jnp.zeros((c, t), bool),
        complete=jnp.zeros((c,), bool),
        write_slot=jnp.arange(num_envs, dtype=jnp.int32),
        write_step=jnp.zeros((num_envs,), jnp.int32),
        pointer=jnp.asarray(num_envs % capacity, jnp.int32),
    )


def _allocate(buf: EpisodeBuffer, done: jax.Array) -> tuple[jax.Array, jax.Array]:
    """New slots for the envs whose episode ended (``done [E]``): (slots [E], new pointer).

    Candidates are the next 2E slots from the pointer; slots that envs still running are writing into
    are skipped; the j-th finishing env takes the j-th free candidate.
    """
    num_envs, cap = done.shape[0], buf.capacity
    cand = (buf.pointer + jnp.arange(2 * num_envs, dtype=jnp.int32)) % cap
    busy = jnp.any((cand[:, None] == buf.write_slot[None, :]) & ~done[None, :], axis=1)
    free = ~busy
    rank = jnp.cumsum(free) - 1  # rank of each free candidate
    order = jnp.cumsum(done) - 1  # the j-th finishing env
    slots = cand[jnp.argmax(free[None, :] & (rank[None, :] == order[:, None]), axis=1)]
    count = jnp.sum(done, dtype=jnp.int32)
    last = jnp.argmax(free & (rank == count - 1)).astype(jnp.int32)
    pointer = jnp.where(count > 0, (buf.pointer + last + 1) % cap, buf.pointer)
    return jnp.where(done, slots, buf.write_slot), pointer


def add_step(
    buf: EpisodeBuffer,
    obs: jax.Array,
    state: jax.Array,
    avail: jax.Array,
    actions: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    next_obs: jax.Array,
    next_state: jax.Array,
    next_avail: jax.Array,
    done: jax.Array,
) -> EpisodeBuffer:
    """Write one env step of every env ([E, ...] each) into its episode's slot.

    ``obs/state/avail`` are what the agents acted on; ``next_*`` the observation after the step (the
    terminal one where the episode ended, i.e. ``info["final_*"]``); ``done`` = terminated or truncated.
    """
    slot, row = buf.write_slot, buf.write_step
    enc = lambda x: _encode(x, buf.obs.dtype)  # noqa: E731
    buf = buf.replace(
        obs=buf.obs.at[slot, row].set(enc(obs)).at[slot, row + 1].set(enc(next_obs)),
        state=buf.state.at[slot, row].set(enc(state)).at[slot, row + 1].set(enc(next_state)),
        avail=buf.avail.at[slot, row].set(avail).at[slot, row + 1].set(next_avail),
        actions=buf.actions.at[slot, row].set(actions.astype(buf.actions.dtype)),
        reward=buf.reward.at[slot, row].set(reward.astype(jnp.float32)),
        terminated=buf.terminated.at[slot, row].set(terminated),
        mask=buf.mask.at[slot, row].set(True),
    )
    drop = buf.capacity  # an out-of-range index: the scatter skips it (mode="drop")
    buf = buf.replace(complete=buf.complete.at[jnp.where(done, slot, drop)].set(True, mode="drop"))
    new_slot, pointer = _allocate(buf, done)
    taken = jnp.where(done, new_slot, drop)
    return buf.replace(
        mask=buf.mask.at[taken].set(False, mode="drop"),
        complete=buf.complete.at[taken].set(False, mode="drop"),
        write_slot=new_slot,
        write_step=jnp.where(done, 0, row + 1),
        pointer=pointer,
    )


def sample(buf: EpisodeBuffer, key: jax.Array, batch_size: int) -> Episodes:
    """``batch_size`` complete episodes drawn uniformly with replacement (any slots when none is
    complete: the caller must not learn from that batch)."""
    ranks = jnp.cumsum(buf.complete, dtype=jnp.int32)  # complete slots up to and including each slot
    count = jnp.maximum(ranks[-1], 1)
    draw = jax.random.randint(key, (batch_size,), 0, count, dtype=jnp.int32)  # the draw-th complete slot
    idx = jnp.minimum(jnp.searchsorted(ranks, draw + 1, side="left"), buf.capacity - 1)
    take = lambda x: jnp.take(x, idx, axis=0)  # noqa: E731
    return Episodes(
        obs=_decode(take(buf.obs)),
        state=_decode(take(buf.state)),
        avail=take(buf.avail),
        actions=take(buf.actions).astype(jnp.int32),
        reward=take(buf.reward),
        terminated=take(buf.terminated),
        mask=take(buf.mask),
    )


def episode(buf: EpisodeBuffer, slot: int) -> dict[str, Any]:
    """One slot as NumPy arrays cut to its real length (for tests and inspection)."""
    length = int(np.asarray(buf.mask[slot]).sum())
    return {
        "obs": np.asarray(_decode(buf.obs[slot, : length + 1])),
        "state": np.asarray(_decode(buf.state[slot, : length + 1])),
        "avail": np.asarray(buf.avail[slot, : length + 1]),
        "actions": np.asarray(buf.actions[slot, :length]).astype(np.int32),
        "reward": np.asarray(buf.reward[slot, :length]),
        "terminated": np.asarray(buf.terminated[slot, :length]),
        "length": length,
    }
