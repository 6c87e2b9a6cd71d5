"""Shared off-policy machinery for recurrent value learners (ReMIX / QMIX / VDN / WQMIX, LAN / IQL).

Everything here is independent of the loss: the config fields off-policy learners share, the linear
epsilon schedule, pymarl2's recurrent agent Q-network, agent inputs rebuilt from stored episodes,
streaming collection into the episode buffer (jmarl.replay), sampling, gradient steps, hard target
updates, greedy evaluation and decentralised acting (``greedy_policy``: what exported policies and
rendering run, the algorithm contract of docs/contributing.md).

Contract for a learner (subclass :class:`OffPolicyLearner`):

- ``init_params(key) -> dict``: every network's parameters; ``params["agent"]`` must be the parameters
  of ``self.agent`` (the decentralised Q-network that acts). The target copy has the same structure.
- ``loss(params, target_params, batch, hparams, key) -> (scalar, stats)``: ``batch`` is a
  :class:`jmarl.replay.Episodes` of ``batch_size`` whole episodes (batch-major: [B, T(+1), ...]);
  ``hparams`` the dict of traced hyperparameters (``state.hparams``); ``stats`` a dict of scalars.
  Helpers: :meth:`agent_qs` (Q-values over an episode batch), :func:`greedy`, :func:`take`,
  :func:`td_lambda_targets`, :func:`jmarl.masks.masked_mean`.
- ``SWEEPABLE``: config fields read only from ``state.hparams`` (built from the config by ``init``), never
  in Python control flow or shapes; they are the learner's ``sweepable`` keys (jmarl.sweep's contract:
  the runner rebuilds the learner with traced values, so ``init`` puts them in ``state.hparams`` and a
  sweep over them is one vmapped program). Extend the base tuple.

One update = ``num_steps`` steps in each of ``num_envs`` auto-reset envs (epsilon-greedy over available
actions, GRU carries reset at episode starts, every step streamed into the buffer), then gradient steps on
``batch_size`` episodes sampled uniformly (with replacement) from the complete episodes. ``env_steps``
grows by exactly ``num_envs * num_steps`` per update. How many gradient steps, and when targets copy:

- ``updates_per_episode = k > 0``: floor(k * E_after) - floor(k * E_before) gradient steps per update, E
  the count of completed episodes, run as a ``while_loop``: exactly k gradient steps per completed episode
  whatever the episode lengths. k = 1/8 is pymarl2's ratio (its 8 parallel envs run one episode each,
  then one gradient step); LAN's paper uses k = 2.
- ``updates_per_episode = 0``: a fixed ``train_steps`` per update (a scan whose trip count XLA knows).
  With 8 envs, ``num_steps`` = the episode limit and one step, that is pymarl2's ratio only while
  episodes run to the limit: once a good policy ends them early, more episodes share a gradient step.
- Steps owed before the buffer holds ``batch_size`` complete episodes are dropped (pymarl2 waits for a
  full batch); params and optimiser are untouched until then.
- Targets are copied right after every ``target_update_updates``-th gradient step (inside the loop), or,
  when that is 0, whenever the count of completed episodes crosses a multiple of
  ``target_update_episodes``.

The agent network is pymarl2's: input = raw observation + one-hot of the agent's previous action (zeros
at an episode's first step) + one-hot agent id, Dense(64) + ReLU, GRU(64), linear head to the actions.
Its GRU is :func:`jmarl.networks.gru_cell` (a LeCun-normal recurrent kernel: Flax's default orthogonal
one can deadlock XLA:CPU under a vmap over seeds). pymarl2's Adam (eps 1e-8) and global gradient-norm
clip (10) are the optimiser.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from jmarl import replay
from jmarl.config import CommonConfig, ConfigError, field
from jmarl.evaluate import evaluate_with_score, evaluation_key
from jmarl.masks import mask_actions
from jmarl.networks import gru_cell
from jmarl.optim import gradient_step


@dataclasses.dataclass(frozen=True)
class OffPolicyConfig(CommonConfig):
    """Fields every off-policy learner shares (pymarl2's settings unless the paper says otherwise)."""

    total_steps: int = field(1_000_000, low=1)
    num_envs: int = field(8, low=1, doc="parallel envs per seed (pymarl2: 8)")
    num_steps: int = field(0, low=0, doc="env steps per env per update (0 = the env's episode limit)")
    train_steps: int = field(1, low=1, doc="gradient steps per update (when updates_per_episode is 0)")
    batch_size: int = field(128, low=1, doc="episodes per gradient step")
    buffer_size: int = field(10_000, low=1, doc="replay capacity in episodes (per seed)")
    buffer_dtype: str = field("float32", choices=("float32", "bfloat16"), doc="storage of obs and state")
    buffer_limit_gib: float = field(4.0, low=0.0, low_open=True, doc="refuse replay buffers above this per seed")
    target_update_episodes: int = field(200, low=1, doc="hard target copy every this many completed episodes "
                                                        "(when target_update_updates is 0)")
    target_update_updates: int = field(0, low=0, doc="hard target copy every this many gradient steps (0 = "
                                                     "every target_update_episodes episodes)")
    updates_per_episode: float = field(0.0, low=0.0, doc="gradient steps per completed episode (0 = a fixed "
                                                         "train_steps per update; 0.125 = pymarl2's one per 8)")
    lr: float = field(1e-3, low=0.0, low_open=True, doc="Adam learning rate")
    adam_eps: float = field(1e-8, low=0.0, low_open=True)
    max_grad_norm: float = field(10.0, low=0.0, low_open=True, doc="global gradient-norm clip")
    gamma: float = field(0.99, low=0.0, high=1.0, low_open=True)
    td_lambda: float = field(0.6, low=0.0, high=1.0, doc="lambda of the TD(lambda) targets (0 = one-step)")
    hidden_dim: int = field(64, low=1, doc="agent network width (Dense and GRU)")
    eps_start: float = field(0.995, low=0.0, high=1.0, doc="epsilon at step 0")
    eps_finish: float = field(0.05, low=0.0, high=1.0, doc="epsilon after the anneal")
    eps_anneal_steps: int = field(100_000, low=1, doc="env steps of the linear epsilon anneal")


@struct.dataclass
class OffPolicyState:
    params: Any
    target_params: Any
    opt_state: Any
    buffer: replay.EpisodeBuffer
    env_state: Any
    timestep: Any
    hidden: jax.Array  # [E, N, H] agent GRU carries
    last_action: jax.Array  # [E, N] int32, -1 = none (episode start)
    episode_start: jax.Array  # [E] bool
    hparams: dict[str, jax.Array]
    key: jax.Array
    env_steps: jax.Array
    episodes: jax.Array  # completed episodes (all envs), for target updates
    update_count: jax.Array
    grad_steps: jax.Array  # gradient steps actually taken


class AgentQNetwork(nn.Module):
    """pymarl2's recurrent agent: Dense + ReLU, GRU, linear Q head; one time step per call."""

    num_actions: int
    hidden_dim: int = 64

    @nn.compact
    def __call__(self, carry: jax.Array, x: jax.Array, reset: jax.Array) -> tuple[jax.Array, jax.Array]:
        carry = jnp.where(reset[..., None], jnp.zeros_like(carry), carry)
        x = nn.relu(nn.Dense(self.hidden_dim)(x))
        carry, h = gru_cell(self.hidden_dim)(carry, x)
        return carry, nn.Dense(self.num_actions)(h)


# ----- pure helpers -----------------------------------------------------------------------------


def agent_inputs(obs: jax.Array, last_actions: jax.Array, num_actions: int) -> jax.Array:
    """[..., N, obs_dim] + previous actions [..., N] (-1 = none) -> [..., N, obs_dim + A + N]."""
    n = obs.shape[-2]
    last = jax.nn.one_hot(last_actions, num_actions, dtype=obs.dtype)  # -1 -> all zeros
    ids = jnp.broadcast_to(jnp.eye(n, dtype=obs.dtype), obs.shape[:-1] + (n,))
    return jnp.concatenate([obs, last, ids], axis=-1)


def previous_actions(actions: jax.Array) -> jax.Array:
    """Stored actions [B, T, N] -> the previous action at each of the T+1 observations [B, T+1, N]."""
    none = jnp.full(actions.shape[:1] + (1,) + actions.shape[2:], -1, actions.dtype)
    return jnp.concatenate([none, actions], axis=1)


def greedy(q: jax.Array, avail: jax.Array) -> jax.Array:
    """Argmax over available actions (last axis)."""
    return jnp.argmax(mask_actions(q, avail), axis=-1).astype(jnp.int32)


def take(q: jax.Array, actions: jax.Array) -> jax.Array:
    """q [..., A] at actions [...] -> [...]."""
    return jnp.take_along_axis(q, actions[..., None], axis=-1)[..., 0]


def epsilon_greedy(key: jax.Array, q: jax.Array, avail: jax.Array, epsilon: jax.Array | float) -> jax.Array:
    """Per agent: a uniformly random available action with probability epsilon, else the greedy one."""
    k_explore, k_random = jax.random.split(key)
    explore = jax.random.uniform(k_explore, q.shape[:-1]) < epsilon
    return jnp.where(explore, envs.random_actions(k_random, avail), greedy(q, avail))


def linear_epsilon(env_steps: jax.Array, start: jax.Array, finish: jax.Array, anneal_steps: jax.Array) -> jax.Array:
    frac = jnp.minimum(env_steps / anneal_steps, 1.0)
    return start + (finish - start) * frac


def td_lambda_targets(reward: jax.Array, terminated: jax.Array, mask: jax.Array, next_values: jax.Array,
                      gamma: jax.Array | float, lam: jax.Array | float) -> jax.Array:
    """TD(lambda) returns over padded episodes, batch-major [B, T].

    ``next_values[t]`` is the target value of the observation after step t. Walking backwards:
    G_t = r_t + gamma (1 - terminated_t) [(1 - lam) V_{t+1} + lam G_{t+1}], where G_{t+1} is replaced by
    V_{t+1} when step t+1 is not a real step (the episode was truncated at t). Values at padded steps
    are meaningless and must be masked by the caller. Equals pymarl2's ``build_td_lambda_targets`` when
    truncation happens only at the episode limit.
    """
    valid_next = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    cont = 1.0 - terminated.astype(reward.dtype)

    def back(g_next, xs):
        r, c, v, has_next = xs
        g = r + gamma * c * jnp.where(has_next, (1 - lam) * v + lam * g_next, v)
        return g, g

    xs = tuple(jnp.swapaxes(x, 0, 1) for x in (reward, cont, next_values, valid_next))
    _, g = jax.lax.scan(back, jnp.zeros_like(reward[:, 0]), xs, reverse=True)
    return jnp.swapaxes(g, 0, 1)


def crossed_multiple(before: jax.Array, after: jax.Array, period: int) -> jax.Array:
    """Whether a counter going from ``before`` to ``after`` reached a new multiple of ``period``."""
    return after // period > before // period


def copy_target(copy: jax.Array, params: Any, target_params: Any) -> Any:
    """Hard target update: ``params`` where ``copy`` holds, else ``target_params``.

    Not ``optax.periodic_update``: that copies when a step counter is a multiple of the period, while the
    episode-based copy fires when the count of completed episodes *crosses* a multiple, and one update can
    finish several episodes and jump past it (:func:`crossed_multiple`).
    """
    return jax.tree.map(lambda a, b: jnp.where(copy, a, b), params, target_params)


# ----- the learner base -------------------------------------------------------------------------


class OffPolicyLearner:
    """Collection, replay, gradient steps, target copies and evaluation; a subclass supplies
    ``init_params`` and ``loss`` (see the module docstring)."""

    SWEEPABLE: ClassVar[tuple[str, ...]] = ("lr", "gamma", "td_lambda", "eps_start", "eps_finish",
                                            "eps_anneal_steps")
    sweepable: ClassVar[tuple[str, ...]] = SWEEPABLE  # the name jmarl.sweep reads

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.sweepable = cls.SWEEPABLE

    def __init__(self, config: OffPolicyConfig):
        self.config = cfg = config
        self.env = envs.wrap(envs.make(cfg.env))
        spec = self.env.spec
        self.spec = spec
        self.n, self.num_actions = spec.num_agents, spec.num_actions
        self.num_steps = cfg.num_steps or spec.episode_limit
        self.steps_per_update = cfg.num_envs * self.num_steps
        self._check_buffer(cfg, spec)
        self.agent = AgentQNetwork(self.num_actions, cfg.hidden_dim)
        self.input_dim = spec.obs_dim + self.num_actions + self.n
        self.tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.scale_by_adam(eps=cfg.adam_eps))

    @staticmethod
    def _check_buffer(cfg: OffPolicyConfig, spec: envs.EnvSpec) -> None:
        if cfg.buffer_size < max(2 * cfg.num_envs, cfg.batch_size + cfg.num_envs):
            raise ConfigError(
                f"buffer_size ({cfg.buffer_size}) must be at least max(2 x num_envs, batch_size + num_envs) = "
                f"{max(2 * cfg.num_envs, cfg.batch_size + cfg.num_envs)} (num_envs={cfg.num_envs}, "
                f"batch_size={cfg.batch_size}): each env writes into its own slot while batches are drawn "
                f"from complete episodes")
        per_episode = replay.bytes_per_episode(spec, cfg.buffer_dtype)
        gib = cfg.buffer_size * per_episode / 2**30
        if gib > cfg.buffer_limit_gib:
            fits = int(cfg.buffer_limit_gib * 2**30 // per_episode)
            other = "" if cfg.buffer_dtype == "bfloat16" else ", or buffer_dtype='bfloat16' (half the float memory)"
            raise ConfigError(
                f"the replay buffer of {cfg.buffer_size} episodes of {spec.name} needs {gib:.1f} GiB per seed "
                f"({per_episode / 2**20:.2f} MiB per episode), above buffer_limit_gib={cfg.buffer_limit_gib}: "
                f"use buffer_size <= {fits}{other}, or raise buffer_limit_gib if the memory is there")

    # ----- to be supplied by the learner ----------------------------------------------------------

    def init_params(self, key: jax.Array) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, params, target_params, batch: replay.Episodes, hparams: dict[str, jax.Array],
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    # ----- networks over episodes and steps ---------------------------------------------------------

    def init_agent(self, key: jax.Array, network: AgentQNetwork | None = None) -> Any:
        net = network or self.agent
        carry = jnp.zeros((1, self.n, net.hidden_dim))
        return net.init(key, carry, jnp.zeros((1, self.n, self.input_dim)), jnp.zeros((1, self.n), bool))

    def unroll(self, agent_params, inputs: jax.Array, network: AgentQNetwork | None = None,
               keep_hidden: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Agent inputs [B, T+1, N, D] -> Q-values [B, T+1, N, A], the GRU run from zero at t = 0 (the same
        network and inputs as acting); ``keep_hidden`` also returns each step's GRU output [B, T+1, N, H]."""
        net = network or self.agent
        b = inputs.shape[0]
        no_reset = jnp.zeros((b, self.n), bool)

        def step(carry, x):
            carry, q = net.apply(agent_params, carry, x, no_reset)
            return carry, ((q, carry) if keep_hidden else q)

        carry0 = jnp.zeros((b, self.n, net.hidden_dim))
        _, out = jax.lax.scan(step, carry0, jnp.swapaxes(inputs, 0, 1))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)

    def episode_inputs(self, batch: replay.Episodes) -> jax.Array:
        """The agent inputs [B, T+1, N, D] at every stored observation, as acting built them."""
        return agent_inputs(batch.obs, previous_actions(batch.actions), self.num_actions)

    def agent_qs(self, agent_params, batch: replay.Episodes, network: AgentQNetwork | None = None) -> jax.Array:
        """Q-values [B, T+1, N, A] at every stored observation."""
        return self.unroll(agent_params, self.episode_inputs(batch), network)

    def agent_qs_and_hidden(self, agent_params, batch: replay.Episodes,
                            network: AgentQNetwork | None = None) -> tuple[jax.Array, jax.Array]:
        """(Q-values [B, T+1, N, A], GRU outputs [B, T+1, N, H]) at every stored observation."""
        return self.unroll(agent_params, self.episode_inputs(batch), network, keep_hidden=True)

    def init_carry(self, batch: int) -> tuple[jax.Array, jax.Array]:
        return jnp.zeros((batch, self.n, self.config.hidden_dim)), jnp.full((batch, self.n), -1, jnp.int32)

    def act(self, params, carry, obs, avail, reset, key: jax.Array | None = None,
            epsilon: jax.Array | float = 0.0) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        """Decentralised execution for a batch: obs [B, N, D], avail [B, N, A], reset [B];
        carry = (GRU state [B, N, H], previous actions [B, N]). Greedy when ``key`` is None."""
        hidden, last = carry
        last = jnp.where(reset[:, None], -1, last)
        reset_n = jnp.broadcast_to(reset[:, None], reset.shape + (self.n,))
        hidden, q = self.agent.apply(params["agent"], hidden, agent_inputs(obs, last, self.num_actions), reset_n)
        actions = greedy(q, avail) if key is None else epsilon_greedy(key, q, avail, epsilon)
        return (hidden, actions), actions

    def greedy_policy(self, params, batch: int):
        """(initial carry, policy) for ``batch`` parallel episodes in ``evaluate_greedy``'s form: the agent
        Q-network acting greedily on its GRU carry and previous action, for tools that only hold
        parameters (exported policies, rendering) and for :meth:`evaluate`."""
        return self.init_carry(batch), lambda carry, obs, avail, reset: self.act(params, carry, obs, avail, reset)

    # ----- protocol ---------------------------------------------------------------------------------

    def hparams(self) -> dict[str, jax.Array]:
        return {k: jnp.asarray(getattr(self.config, k), jnp.float32) for k in self.SWEEPABLE}

    def init(self, key: jax.Array) -> OffPolicyState:
        cfg = self.config
        k_params, k_env, k_state = jax.random.split(key, 3)
        params = self.init_params(k_params)
        env_state, ts = jax.vmap(self.env.reset)(jax.random.split(k_env, cfg.num_envs))
        hidden, last = self.init_carry(cfg.num_envs)
        zero = jnp.zeros((), jnp.int32)
        buffer = replay.init_buffer(self.spec, cfg.buffer_size, cfg.num_envs, cfg.buffer_dtype)
        return OffPolicyState(params, params, self.tx.init(params), buffer, env_state, ts, hidden, last,
                              jnp.ones(cfg.num_envs, bool), self.hparams(), k_state, zero, zero, zero, zero)

    def collect(self, state: OffPolicyState) -> tuple[OffPolicyState, dict[str, jax.Array]]:
        """``num_steps`` epsilon-greedy steps in every env, streamed into the buffer."""
        cfg, hp = self.config, state.hparams

        def step(carry, xs):
            env_state, ts, hidden, last, start, buffer = carry
            t, key = xs
            k_act, k_env = jax.random.split(key)
            eps = linear_epsilon(state.env_steps + t * cfg.num_envs, hp["eps_start"], hp["eps_finish"],
                                 hp["eps_anneal_steps"])
            (hidden, last), actions = self.act(state.params, (hidden, last), ts.obs, ts.avail_actions, start,
                                               k_act, eps)
            env_state, nxt = jax.vmap(self.env.step)(jax.random.split(k_env, cfg.num_envs), env_state, actions)
            info = nxt.info
            buffer = replay.add_step(buffer, ts.obs, ts.state, ts.avail_actions, actions, nxt.reward,
                                     nxt.terminated, info["final_obs"], info["final_state"],
                                     info["final_avail_actions"], nxt.done)
            out = {"done": nxt.done, "return": info["episode_return"], "epsilon": eps}
            return (env_state, nxt, hidden, last, nxt.done, buffer), out

        key, k_roll = jax.random.split(state.key)
        init = (state.env_state, state.timestep, state.hidden, state.last_action, state.episode_start, state.buffer)
        xs = (jnp.arange(self.num_steps), jax.random.split(k_roll, self.num_steps))
        (env_state, ts, hidden, last, start, buffer), out = jax.lax.scan(step, init, xs)
        finished = out["done"].sum(dtype=jnp.int32)
        done = out["done"].astype(jnp.float32)
        stats = {"episode_return": (out["return"] * done).sum() / jnp.maximum(done.sum(), 1.0),
                 "epsilon": out["epsilon"][-1], "episodes_finished": finished.astype(jnp.float32)}
        state = state.replace(env_state=env_state, timestep=ts, hidden=hidden, last_action=last,
                              episode_start=start, buffer=buffer, key=key,
                              env_steps=state.env_steps + self.steps_per_update, episodes=state.episodes + finished)
        return state, stats

    # ----- schedule: gradient steps per update and target copies (module docstring) -----------------

    @property
    def fixed_steps(self) -> bool:
        """``updates_per_episode = 0``: ``train_steps`` gradient steps every update, known when compiling."""
        return self.config.updates_per_episode == 0

    def gradient_steps_due(self, episodes_before: jax.Array, episodes_after: jax.Array) -> jax.Array:
        """The gradient steps an update owes: floor(k E_after) - floor(k E_before), or ``train_steps``."""
        k = self.config.updates_per_episode
        if self.fixed_steps:
            return jnp.asarray(self.config.train_steps, jnp.int32)
        due = jnp.floor(k * episodes_after.astype(jnp.float32)) - jnp.floor(k * episodes_before.astype(jnp.float32))
        return due.astype(jnp.int32)

    def learn_steps(self, state: OffPolicyState, count: jax.Array) -> tuple[OffPolicyState, dict[str, jax.Array]]:
        """``count`` gradient steps (none until the buffer holds ``batch_size`` complete episodes), each on
        ``batch_size`` sampled episodes; target copies after every ``target_update_updates``-th step."""
        cfg, hp = self.config, state.hparams
        count = jnp.where(state.buffer.num_complete >= cfg.batch_size, count, 0)
        period = cfg.target_update_updates
        key, k_train = jax.random.split(state.key)

        def learn_on_batch(params, opt_state, target, key):
            k_sample, k_loss = jax.random.split(key)
            batch = replay.sample(state.buffer, k_sample, cfg.batch_size)
            params, opt_state, loss, stats, grad_norm = gradient_step(self.loss, self.tx, params, opt_state, target,
                                                                      batch, hp, k_loss, lr=hp["lr"])
            return params, opt_state, {"loss": loss, "grad_norm": grad_norm, **stats}  # norm before clipping

        stat_shapes = jax.eval_shape(learn_on_batch, state.params, state.opt_state, state.target_params, k_train)[2]
        zeros = {k: jnp.zeros(s.shape, s.dtype) for k, s in stat_shapes.items()}

        def body(carry):
            i, params, opt_state, target, steps, copies, sums = carry
            params, opt_state, stats = learn_on_batch(params, opt_state, target, jax.random.fold_in(k_train, i))
            steps = steps + 1
            if period > 0:  # the step counter moves by one, so "a multiple of the period" is exactly optax's rule
                copy = steps % period == 0
                target = optax.periodic_update(params, target, steps, period)
            else:
                copy = jnp.asarray(False)
            sums = {k: sums[k] + stats[k] for k in sums}
            return i + 1, params, opt_state, target, steps, copies + copy.astype(jnp.int32), sums

        init = (jnp.zeros((), jnp.int32), state.params, state.opt_state, state.target_params, state.grad_steps,
                jnp.zeros((), jnp.int32), zeros)
        if self.fixed_steps:  # a scan whose trip count XLA knows (the cond skips the steps of a buffer not ready)
            def fixed(carry, _):
                return jax.lax.cond(carry[0] < count, body, lambda c: c, carry), None

            (_, params, opt_state, target, steps, copies, sums), _ = jax.lax.scan(fixed, init, None, cfg.train_steps)
        else:
            _, params, opt_state, target, steps, copies, sums = jax.lax.while_loop(lambda c: c[0] < count, body, init)
        denom = jnp.maximum(count, 1).astype(jnp.float32)
        stats = {k: v / denom for k, v in sums.items()}
        stats.update(gradient_steps=count.astype(jnp.float32), target_copies=copies.astype(jnp.float32))
        state = state.replace(params=params, opt_state=opt_state, target_params=target, grad_steps=steps, key=key)
        return state, stats

    def update(self, state: OffPolicyState) -> tuple[OffPolicyState, dict[str, jax.Array]]:
        """Collect, take the gradient steps owed, copy targets."""
        episodes_before = state.episodes
        state, collect_stats = self.collect(state)
        state, learn_stats = self.learn_steps(state, self.gradient_steps_due(episodes_before, state.episodes))
        if self.config.target_update_updates == 0:
            copy = crossed_multiple(episodes_before, state.episodes, self.config.target_update_episodes)
            state = state.replace(target_params=copy_target(copy, state.params, state.target_params))
            learn_stats["target_copies"] = copy.astype(jnp.float32)
        state = state.replace(update_count=state.update_count + 1)
        metrics = {**collect_stats, **learn_stats, "buffer_episodes": state.buffer.num_complete.astype(jnp.float32)}
        return state, metrics

    def evaluate(self, state: OffPolicyState) -> dict[str, jax.Array]:
        """Greedy evaluation (jmarl.evaluate's keys), and ``score`` on matrix games."""
        return evaluate_with_score(self.env, functools.partial(self.greedy_policy, state.params),
                                   evaluation_key(state.key), self.config.eval_episodes)
