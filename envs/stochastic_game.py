"""DPO's cooperative stochastic game (dpo.md §4.1): a random tabular game whose optimum is known exactly.

The paper fixes only the sizes (100 states, 6 agents, 5 actions each, shared reward, reward and
transition "generated randomly") and says the optimum comes from dynamic programming.  Everything else
is chosen here so that exact dynamic programming stays cheap:

* A joint action is the index ``j = sum_i a_i * A**(N-1-i)`` (agent 0 most significant).
* Reward ``r(s, j)`` is uniform on [0, 1) (24-bit resolution), the same for every agent.
* Transition: each (s, j) has ``num_successors`` (K) next states drawn uniformly, with repetition, from
  all states, taken with probabilities proportional to integer weights uniform on {1, ..., 8}.  A dense
  P(s'|s, j) would be S x A**N x S floats; this sparse form makes a Bellman backup cost S x A**N x K.
* Every number is a fixed integer hash of (seed, s, j, field): ``h = mix(mix(mix(mix(0 ^ c(seed)) ^ c(s))
  ^ c(j)) ^ c(field))`` in uint32, with ``c(v) = v * 0x9E3779B9 + 0x632BE5AB`` and ``mix`` the
  xor-shift-multiply finaliser ``x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B;
  x ^= x >> 16``.  Field 0 gives the reward ``(h >> 8) / 2**24``, field ``1 + k`` successor k as
  ``h % S``, field ``1 + K + k`` its weight ``1 + h % 8``.  So ``step`` computes its one entry on the
  fly (no tables in memory or in compiled code) and the solver materialises exactly the same numbers.
* The start state is uniform.  An episode lasts ``episode_limit`` steps (default 25).  The paper gives
  neither.  ``discount`` (default 1) is realised as a continuation probability: after every step the
  episode *terminates* with probability ``1 - discount``.  Hence the expected plain sum of rewards
  (``info["episode_return"]``) equals the ``discount``-discounted finite-horizon return, and
  ``spec.optimal_return`` is the optimum of that expected plain sum in every case.

The optimum is computed at construction by backward induction over the horizon,
``V_T = 0, V_t(s) = max_j r(s, j) + discount * sum_k p_k V_{t+1}(succ_k)``, and
``spec.optimal_return = mean_s V_0(s)``.  The optimal policy depends on the step t (finite horizon): an
agent seeing only the state can fall slightly short of it; ``observe_time=True`` adds ``t / T`` to the
observation and state so that a memoryless policy can reach it.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.core import Array, EnvSpec, MultiAgentEnv, PRNGKey, TimeStep, make_timestep

_MAX_WEIGHT = 8
_SHORTLIST = 64  # joint actions per state tried first by the exact solver shortcut
_MAX_ENTRIES = 2**25  # states x joint actions x successors the solver may materialise (~130 MB per table)


def _u32(value: int) -> Array:
    return jnp.uint32(value)


def _mix(x: Array) -> Array:
    x = x ^ (x >> _u32(16))
    x = x * _u32(0x7FEB352D)
    x = x ^ (x >> _u32(15))
    x = x * _u32(0x846CA68B)
    return x ^ (x >> _u32(16))


def _absorb(x: Array, value: Array) -> Array:
    return _mix(x ^ (jnp.asarray(value).astype(jnp.uint32) * _u32(0x9E3779B9) + _u32(0x632BE5AB)))


def _hash(seed: Array, s: Array, j: Array, field: Array) -> Array:
    return _absorb(_absorb(_absorb(_absorb(_u32(0), seed), s), j), field)


def _entry(seed: Array, s: Array, j: Array, num_states: int, k: int) -> tuple[Array, Array, Array]:
    """Reward [...], successors [..., K] int32 and weights [..., K] int32 of (s, j) (broadcasting)."""
    s, j = jnp.asarray(s)[..., None], jnp.asarray(j)[..., None]
    fields = jnp.arange(1 + 2 * k, dtype=jnp.uint32)
    h = _hash(seed, s, j, fields)
    reward = (h[..., 0] >> _u32(8)).astype(jnp.float32) * jnp.float32(2.0**-24)
    successors = (h[..., 1 : 1 + k] % _u32(num_states)).astype(jnp.int32)
    weights = (h[..., 1 + k :] % _u32(_MAX_WEIGHT)).astype(jnp.int32) + 1
    return reward, successors, weights


@functools.partial(jax.jit, static_argnames=("num_states", "num_joint", "k"))
def _tables(seed: Array, num_states: int, num_joint: int, k: int) -> tuple[Array, Array, Array]:
    """The whole game: reward [S, J], successors [S, J, K], probabilities [S, J, K]."""
    s = jnp.arange(num_states, dtype=jnp.uint32)[:, None]
    j = jnp.arange(num_joint, dtype=jnp.uint32)[None, :]
    reward, successors, weights = _entry(seed, s, j, num_states, k)
    probs = weights.astype(jnp.float32) / weights.sum(-1, keepdims=True).astype(jnp.float32)
    return reward, successors, probs


@functools.partial(jax.jit, static_argnames=("horizon",))
def _solve(
    reward: Array, successors: Array, probs: Array, discount: Array, horizon: int
) -> tuple[Array, Array]:
    """Backward induction: values [T+1, S] (V_t, V_T = 0) and greedy joint actions [T, S].

    Exact shortcut: a joint action outside a state's ``_SHORTLIST`` highest rewards has
    Q <= r_M + discount * max V', while the best Q >= r_1 + discount * min V'; when r_1 - r_M exceeds
    discount * (max V' - min V') (plus a rounding margin) in every state, the backup over the shortlist
    alone gives the same maximum and argmax.  Otherwise the full backup runs.  (The tables come in as
    arguments: generated inside this jit they would be recomputed around the branch.)
    """
    num_states, num_joint = reward.shape
    m = min(_SHORTLIST, num_joint)
    top_reward, top_joint = jax.lax.top_k(reward, m)
    top_successors = jnp.take_along_axis(successors, top_joint[..., None], axis=1)
    top_probs = jnp.take_along_axis(probs, top_joint[..., None], axis=1)
    gap = top_reward[:, 0] - top_reward[:, -1]

    def q_of(r: Array, succ: Array, p: Array, next_values: Array) -> Array:
        return r + discount * (p * next_values[succ]).sum(-1)

    def full(next_values: Array) -> tuple[Array, Array]:
        q = q_of(reward, successors, probs, next_values)
        return q.max(-1), q.argmax(-1).astype(jnp.int32)

    def short(next_values: Array) -> tuple[Array, Array]:
        q = q_of(top_reward, top_successors, top_probs, next_values)
        best = q.argmax(-1)
        return q.max(-1), jnp.take_along_axis(top_joint, best[:, None], axis=1)[:, 0].astype(jnp.int32)

    def backup(next_values: Array, _: None) -> tuple[Array, tuple[Array, Array]]:
        spread = discount * (next_values.max() - next_values.min())
        margin = 1e-5 * (1.0 + jnp.abs(next_values).max())
        exact = jnp.logical_and(m < num_joint, jnp.all(gap > spread + margin))
        values, policy = jax.lax.cond(exact, short, full, next_values)
        return values, (values, policy)

    zero = jnp.zeros((num_states,), jnp.float32)
    _, (values, policy) = jax.lax.scan(backup, zero, None, length=horizon)
    values = jnp.concatenate([values[::-1], zero[None]], axis=0)
    return values, policy[::-1]


@struct.dataclass
class GameState:
    state: Array  # int32 [], the current state
    time: Array  # int32 [], steps taken in this episode


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class StochasticGame(MultiAgentEnv):
    """Random cooperative stochastic game (DPO §4.1); see the module docstring for its exact definition.

    Every agent observes the one-hot state (plus ``t / episode_limit`` with ``observe_time``), the global
    state is the same vector, all actions are always available and the reward is shared.  Out-of-range
    actions inside jit (the base class rejects concrete ones) are clipped into [0, A-1].

    Exposed for evaluation and tests: ``optimal_values`` [T+1, S] (optimal expected remaining return
    after t steps), ``optimal_policy`` [T, S] (greedy joint-action index), ``optimal_actions`` [T, S, N],
    ``tables()`` and ``q_values(t)``.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        num_states: int = 100,
        num_agents: int = 6,
        num_actions: int = 5,
        num_successors: int = 3,
        episode_limit: int = 25,
        discount: float = 1.0,
        observe_time: bool = False,
    ):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        s = _check_int("num_states", num_states, 1)
        n = _check_int("num_agents", num_agents, 1)
        a = _check_int("num_actions", num_actions, 1)
        k = _check_int("num_successors", num_successors, 1)
        horizon = _check_int("episode_limit", episode_limit, 1)
        if isinstance(discount, bool) or not isinstance(discount, numbers.Real) or not 0.0 <= discount <= 1.0:
            raise ValueError(
                f"discount must be a number in [0, 1] (the continuation probability), got {discount!r}"
            )
        if s * a**n * k > _MAX_ENTRIES:
            raise ValueError(
                f"num_states * num_actions**num_agents * num_successors = {s * a**n * k} exceeds "
                f"{_MAX_ENTRIES}: too large to solve exactly; use fewer states, agents, actions or successors"
            )
        self._seed = jnp.uint32(int(seed) % 2**32)
        self._sizes = dict(num_states=s, num_joint=a**n, k=k)
        self._n, self._a, self._s, self._horizon = n, a, s, horizon
        self._discount = float(discount)
        self._observe_time = bool(observe_time)
        self._strides = jnp.asarray(a ** np.arange(n - 1, -1, -1), jnp.int32)

        tables = _tables(self._seed, **self._sizes)
        values, policy = _solve(*tables, jnp.float32(discount), horizon=horizon)
        del tables
        self.optimal_values = np.asarray(values)
        self.optimal_policy = np.asarray(policy)
        per_agent = np.unravel_index(self.optimal_policy, (a,) * n)
        self.optimal_actions = np.stack(per_agent, axis=-1).astype(np.int32)

        dim = s + int(self._observe_time)
        self.spec = EnvSpec(
            name="stochastic_game",
            num_agents=n,
            obs_dim=dim,
            state_dim=dim,
            num_actions=a,
            episode_limit=horizon,
            reward_bounds=(0.0, 1.0),
            optimal_return=float(self.optimal_values[0].astype(np.float64).mean()),
            has_won=False,
            source="DPO §4.1 didactic cooperative stochastic game (structure: this module's docstring)",
        )

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole game as NumPy: reward [S, J], successors [S, J, K], probabilities [S, J, K]."""
        return tuple(np.asarray(x) for x in _tables(self._seed, **self._sizes))

    def q_values(self, t: int) -> Array:
        """Optimal Q_t(s, j) [S, J] after t steps (0 <= t < episode_limit)."""
        t = _check_int("t", t, 0)
        if t >= self._horizon:
            raise ValueError(f"t must lie in [0, {self._horizon - 1}], got {t}")
        reward, successors, probs = _tables(self._seed, **self._sizes)
        future = jnp.asarray(self.optimal_values[t + 1])[successors]
        return reward + jnp.float32(self._discount) * (probs * future).sum(-1)

    def joint_index(self, actions: Array) -> Array:
        """Joint-action index of int actions [..., N] (agent 0 most significant)."""
        return (jnp.asarray(actions, jnp.int32) * self._strides).sum(-1)

    def _timestep(
        self, state: GameState, reward: Array | float = 0.0, terminated: Array | bool = False
    ) -> TimeStep:
        vec = jax.nn.one_hot(state.state, self._s, dtype=jnp.float32)
        if self._observe_time:
            vec = jnp.concatenate([vec, (state.time / self._horizon).astype(jnp.float32)[None]])
        obs = jnp.broadcast_to(vec, (self._n, vec.shape[0]))
        avail = jnp.ones((self._n, self._a), bool)
        return make_timestep(obs, vec, avail, reward, terminated)

    def reset_env(self, key: PRNGKey) -> tuple[GameState, TimeStep]:
        start = (jax.random.bits(key, (), jnp.uint32) % _u32(self._s)).astype(jnp.int32)
        state = GameState(start, jnp.zeros((), jnp.int32))
        return state, self._timestep(state)

    def step_env(self, key: PRNGKey, state: GameState, actions: Array) -> tuple[GameState, TimeStep]:
        joint = self.joint_index(jnp.clip(actions, 0, self._a - 1))
        reward, successors, weights = _entry(self._seed, state.state, joint, self._s, self._sizes["k"])
        # One draw of random bits serves both choices (raw bits compile much faster than randint/split).
        bits = jax.random.bits(key, (2,), jnp.uint32)
        # Successor k with probability weights[k] / sum(weights); the modulo bias is below 2**-28.
        draw = (bits[0] % weights.sum().astype(jnp.uint32)).astype(jnp.int32)
        pick = (jnp.cumsum(weights) <= draw).sum()
        nxt = GameState(successors[pick], state.time + 1)
        terminated = False
        if self._discount < 1.0:  # end with probability 1 - discount (24-bit uniform)
            terminated = (bits[1] >> _u32(8)).astype(jnp.float32) * jnp.float32(2.0**-24) >= self._discount
        return nxt, self._timestep(nxt, reward, terminated)
