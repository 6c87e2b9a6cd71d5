"""IDDPG: independent DDPG (Lillicrap et al., 2016, "Continuous control with deep reinforcement learning")
per agent, for continuous actions: DPO's baseline on multi-agent MuJoCo (dpo.md section 4.3 and App. B).

Every agent i is a DDPG learner of its own, on its own observation and the team reward:

- actor mu_i(o_i) -> u_i in [-1, 1]^A (tanh head); the env receives mid + half * u_i, ``mid`` and ``half``
  the centre and half-width of ``spec.action_bounds``. The learner works on the [-1, 1] scale throughout
  (replay, critic input, exploration noise), so one set of hyperparameters fits any bounds;
- critic Q_i(o_i, u_i): its own observation and its own action only (no other agent's), concatenated at the
  input;
- critic target y = r + gamma * (1 - terminated) * Q_i'(o_i', mu_i'(o_i')) with the target networks (primed);
  o_i' is the observation after the step (the terminal one where the episode ended: ``info["final_obs"]``),
  and a time-limit truncation bootstraps (only ``terminated`` stops it). Critic loss: mean squared error;
- actor loss -Q_i(o_i, mu_i(o_i)), the critic just updated (DDPG's order: critic step, actor step, then
  both targets move by a soft update theta' <- tau * theta + (1 - tau) * theta').

By default nothing is shared: each agent has its own actor and critic, parameters stacked on a leading agent
axis and applied with ``jax.vmap``, each with its own gradient-norm clip and Adam moments
(``jmarl.optim``'s ``per_agent``). ``share_params`` gives all agents one actor and one critic, the one-hot agent
id appended to the observation. Agents with fewer action dimensions than ``spec.num_actions`` (``avail_actions``
False on the padded ones) get action 0 there from the actor, the noise and the random warm-up alike, so the
critic always sees 0 on those inputs and the actor's outputs there receive no gradient.

Exploration: uniform random actions while the env-step counter is below ``learning_starts``; afterwards
mu_i(o_i) plus Gaussian noise of standard deviation ``exploration_noise`` on the [-1, 1] scale (a fraction of
the half-width of the bounds), clipped to [-1, 1].

Replay: a flat buffer of transitions, ``flashbax``'s item buffer (a circular array, sampled uniformly with
replacement; pure functions of its state, so it lives in the train state and vmaps over seeds). One sampled
batch of joint transitions serves every agent's update (each reads its own slice).

One update = ``num_steps`` steps in each of ``num_envs`` auto-reset envs, every transition added to the buffer,
then ``train_ratio * num_envs * num_steps`` gradient steps (each: critic, actor, soft target update), skipped
while the env-step counter is below ``learning_starts`` or the buffer holds fewer than ``batch_size``
transitions. The defaults (one env, one step per update, train_ratio 1) are DDPG's schedule: one gradient step
per env step. (A run resumed from a checkpoint without its replay buffer acts with its trained actor at once and
learns again once the new buffer holds a batch.) The gradient steps are a loop of as many steps as are
taken, each batch drawn with ``fold_in(key, step)``: under a vmap over seeds the loop runs as long as the
longest seed's and the others keep their state, so a warm-up shared by all seeds costs no gradient steps.

Defaults. From the paper (App. B): 3-layer MLPs (read as in jmarl's DPO/IPPO, whose networks the same sentence
describes: three hidden ReLU layers of 128) and learning rate 5e-4 for actor and critic. The rest is DDPG as
current implementations run it (TD3's and Stable-Baselines3's DDPG, and the MARL code bases built on them:
FACMAC / pymarl's continuous learners, the MAPPO family's off-policy baselines): gamma 0.99, soft update tau
0.005 (Lillicrap et al.'s paper: 0.001, with rates 1e-4 / 1e-3), Gaussian exploration noise 0.1 (the paper:
Ornstein-Uhlenbeck noise, theta 0.15, sigma 0.2), batch 256 (the paper: 64), replay of 1e6 transitions,
10,000 uniform random steps before learning (TD3's start; the paper: none), final layers initialised uniform
in [-3e-3, 3e-3] (the paper's), no critic weight decay (the paper: 1e-2; its successors dropped it), and
jmarl's per-agent gradient-norm clip of 10 (DDPG has none).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flashbax as fbx
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from jmarl.config import CommonConfig, ConfigError, field
from jmarl.evaluate import evaluate_greedy, evaluation_key
from jmarl.optim import gradient_step


@dataclasses.dataclass(frozen=True)
class IDDPGConfig(CommonConfig):
    """DPO's App. B where it speaks (3-layer MLPs of 128, rates 5e-4), DDPG's usual settings elsewhere."""

    algo: str = "iddpg"
    total_steps: int = field(1_000_000, low=1)
    num_envs: int = field(1, low=1, doc="parallel envs per seed (DDPG: 1)")
    num_steps: int = field(1, low=1, doc="env steps per env per update (DDPG: 1, one step then learning)")
    train_ratio: float = field(1.0, low=0.0, low_open=True,
                               doc="gradient steps per env step (each env copy's step counts once; DDPG: 1); "
                                   "train_ratio * num_envs * num_steps must be a whole number")
    lr: float = field(5e-4, low=0.0, low_open=True, doc="Adam learning rate of actor and critic where lr_actor / "
                                                        "lr_critic are unset (dpo.md App. B: 5e-4 both)")
    lr_actor: float | None = field(None, low=0.0, low_open=True, doc="Adam learning rate of the actors (None: lr)")
    lr_critic: float | None = field(None, low=0.0, low_open=True, doc="Adam learning rate of the critics (None: lr)")
    gamma: float = field(0.99, low=0.0, high=1.0, low_open=True, doc="discount")
    tau: float = field(0.005, low=0.0, high=1.0, low_open=True,
                       doc="soft target update rate per gradient step (TD3 / SB3 / MARL code: 0.005; "
                           "Lillicrap et al.: 0.001)")
    hidden_dim: int = field(128, low=1, doc="hidden units per layer of actor and critic")
    num_layers: int = field(3, low=1, doc="hidden ReLU layers of actor and critic (dpo.md App. B: 3)")
    batch_size: int = field(256, low=1, doc="transitions per gradient step")
    buffer_size: int = field(1_000_000, low=1, doc="replay capacity in transitions (per seed)")
    learning_starts: int = field(10_000, low=0, doc="env steps of uniform random actions before the actor acts "
                                                    "and learning starts (TD3: 10,000)")
    exploration_noise: float = field(0.1, low=0.0, doc="std of the Gaussian action noise on the [-1, 1] scale, "
                                                       "i.e. relative to the half-width of the action bounds")
    max_grad_norm: float = field(10.0, low=0.0, low_open=True, doc="per-agent gradient-norm clip of actor and "
                                                                   "critic (DDPG has none; jmarl's learners 10)")
    share_params: bool = field(False, doc="one actor and one critic for all agents (agent id appended to obs)")
    eval_every: int = field(5_000, low=1, doc="updates between greedy evaluations (= one compiled chunk; by "
                                              "default 5,000 env steps, TD3's evaluation period)")


# The one-step differential game (a test bed, not in the paper): a thousand random one-step episodes before
# learning (not ten thousand), and an evaluation every 500 of them.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "differential_game": {"learning_starts": 1_000, "eval_every": 500},
}

VARIANTS: dict[str, dict[str, Any]] = {"iddpg": {}}


def final_layer_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Uniform in [-3e-3, 3e-3]: Lillicrap et al.'s init of the last layers (near-zero first actions and Qs)."""
    return jax.random.uniform(key, shape, dtype, -3e-3, 3e-3)


class Actor(nn.Module):
    """mu(o): [..., D] -> [..., A] in [-1, 1] (tanh head)."""

    action_dim: int
    hidden_dim: int = 128
    num_layers: int = 3

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        for _ in range(self.num_layers):
            x = nn.relu(nn.Dense(self.hidden_dim)(x))
        return jnp.tanh(nn.Dense(self.action_dim, kernel_init=final_layer_init, bias_init=final_layer_init)(x))


class Critic(nn.Module):
    """Q(o, u): observation [..., D] and action [..., A] concatenated at the input -> [...]."""

    hidden_dim: int = 128
    num_layers: int = 3

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        for _ in range(self.num_layers):
            x = nn.relu(nn.Dense(self.hidden_dim)(x))
        return nn.Dense(1, kernel_init=final_layer_init, bias_init=final_layer_init)(x)[..., 0]


# ----- pure pieces, tested on their own ----------------------------------------------------------


def critic_targets(reward: jax.Array, terminated: jax.Array, next_q: jax.Array, gamma: jax.Array | float) -> jax.Array:
    """y = r + gamma * (1 - terminated) * Q'(o', mu'(o')): reward and terminated [B], next_q [B, N] -> [B, N].
    A truncated step is not terminated: it bootstraps."""
    cont = 1.0 - terminated.astype(next_q.dtype)
    return reward[:, None] + gamma * cont[:, None] * next_q


def soft_update(params: Any, target_params: Any, tau: jax.Array | float) -> Any:
    """theta' <- tau * theta + (1 - tau) * theta', leaf by leaf."""
    return optax.incremental_update(params, target_params, tau)


def explore(key: jax.Array, mu: jax.Array, avail: jax.Array, noise: jax.Array | float, random: jax.Array) -> jax.Array:
    """Behaviour actions on the [-1, 1] scale: uniform where ``random``, else mu + N(0, noise^2) clipped to
    [-1, 1]; 0 on padded dimensions (``avail`` False). ``random`` broadcasts against mu's leading axes."""
    k_noise, k_uniform = jax.random.split(key)
    noisy = jnp.clip(mu + noise * jax.random.normal(k_noise, mu.shape, mu.dtype), -1.0, 1.0)
    uniform = jax.random.uniform(k_uniform, mu.shape, mu.dtype, -1.0, 1.0)
    random = jnp.reshape(random, jnp.shape(random) + (1,) * (mu.ndim - jnp.ndim(random)))
    return jnp.where(avail, jnp.where(random, uniform, noisy), 0.0)


@struct.dataclass
class TrainState:
    params: Any  # {"actor": ..., "critic": ...}, stacked on a leading agent axis unless shared
    target_params: Any
    opt_state: Any  # {"actor": ..., "critic": ...}
    buffer: Any  # flashbax item buffer state of transitions
    env_state: Any
    timestep: Any
    last_return: jax.Array  # [E] return of each env's latest finished episode (0 before the first)
    key: jax.Array
    env_steps: jax.Array
    update_count: jax.Array
    grad_steps: jax.Array  # gradient steps taken (none before learning starts)


class IDDPG:
    """Independent DDPG learners, one per agent; see the module docstring."""

    # Config keys read only as traced numbers (jmarl/sweep.py): optimiser rates and clip, targets, exploration.
    sweepable = ("lr", "lr_actor", "lr_critic", "gamma", "tau", "exploration_noise", "max_grad_norm",
                 "learning_starts")
    action_kinds = ("continuous",)  # a deterministic actor of real vectors (jmarl.registry checks the env)

    def __init__(self, config: IDDPGConfig):
        self.config = cfg = config
        self.env = envs.wrap(envs.make(cfg.env), agent_id=cfg.share_params)
        spec = self.env.spec
        if not spec.continuous:
            raise ConfigError(f"iddpg needs continuous actions; {cfg.env} has discrete actions ({spec.num_actions} "
                              f"per agent): use a continuous-action env (e.g. differential_game, mamujoco_*) or a "
                              f"discrete learner (iql, ippo, dpo)")
        self.n, self.action_dim, self.obs_dim = spec.num_agents, spec.num_actions, spec.obs_dim
        low, high = spec.action_bounds
        self.mid, self.half = (high + low) / 2.0, (high - low) / 2.0
        self.steps_per_update = cfg.num_envs * cfg.num_steps
        grad_steps = cfg.train_ratio * self.steps_per_update
        if grad_steps < 1 or not math.isclose(grad_steps, round(grad_steps)):
            raise ConfigError(f"train_ratio * num_envs * num_steps = {cfg.train_ratio} * {cfg.num_envs} * "
                              f"{cfg.num_steps} = {grad_steps:g} gradient steps per update; it must be a whole "
                              f"number >= 1 (e.g. train_ratio=1 gives one per env step)")
        self.grad_steps_per_update = int(round(grad_steps))
        self.actor = Actor(self.action_dim, cfg.hidden_dim, cfg.num_layers)
        self.critic = Critic(cfg.hidden_dim, cfg.num_layers)
        lr_actor = cfg.lr if cfg.lr_actor is None else cfg.lr_actor
        lr_critic = cfg.lr if cfg.lr_critic is None else cfg.lr_critic
        self.tx_actor = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr_actor))
        self.tx_critic = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr_critic))
        self.param_axis = None if cfg.share_params else 0
        self.replay = fbx.make_item_buffer(max_length=cfg.buffer_size, min_length=1,
                                           sample_batch_size=cfg.batch_size, add_batches=True)

    # ----- networks over agents -------------------------------------------------------------

    def _over_agents(self, apply, params, *xs: jax.Array, vector: bool) -> jax.Array:
        """Apply a per-agent network to inputs [..., N, F] (agent axis second from last); outputs [..., N, A]
        where ``vector``, else [..., N]."""
        moved = [jnp.moveaxis(x, -2, 0) for x in xs]
        out = jax.vmap(apply, in_axes=(self.param_axis,) + (0,) * len(xs))(params, *moved)
        return jnp.moveaxis(out, 0, -2 if vector else -1)

    def mu(self, actor_params, obs: jax.Array, avail: jax.Array) -> jax.Array:
        """Deterministic actions on the [-1, 1] scale: obs [..., N, D] -> [..., N, A], 0 on padded dims."""
        return jnp.where(avail, self._over_agents(self.actor.apply, actor_params, obs, vector=True), 0.0)

    def q(self, critic_params, obs: jax.Array, u: jax.Array) -> jax.Array:
        """Q_i(o_i, u_i): obs [..., N, D], u [..., N, A] -> [..., N]."""
        return self._over_agents(self.critic.apply, critic_params, obs, u, vector=False)

    def env_actions(self, u: jax.Array, avail: jax.Array) -> jax.Array:
        """[-1, 1] scale -> the env's bounds; padded dims 0."""
        return jnp.where(avail, self.mid + self.half * u, 0.0)

    # ----- losses ------------------------------------------------------------------------

    def critic_loss(self, critic_params, target_params, batch: dict[str, jax.Array], gamma):
        """Sum over agents of each agent's mean squared TD error on the batch; per-agent stats averaged."""
        next_u = self.mu(target_params["actor"], batch["next_obs"], batch["next_avail"])
        next_q = self.q(target_params["critic"], batch["next_obs"], next_u)
        y = jax.lax.stop_gradient(critic_targets(batch["reward"], batch["terminated"], next_q, gamma))
        q = self.q(critic_params, batch["obs"], batch["action"])  # [B, N]
        per_agent = jnp.mean(jnp.square(q - y), axis=0)
        return per_agent.sum(), {"critic_loss": per_agent.mean(), "q": q.mean(), "target": y.mean()}

    def actor_loss(self, actor_params, critic_params, batch: dict[str, jax.Array]):
        """Sum over agents of -mean_B Q_i(o_i, mu_i(o_i)); only the actors are differentiated."""
        u = self.mu(actor_params, batch["obs"], batch["avail"])
        per_agent = -jnp.mean(self.q(critic_params, batch["obs"], u), axis=0)
        return per_agent.sum(), {"actor_loss": per_agent.mean()}

    def learn_on_batch(self, params, target_params, opt_state, batch: dict[str, jax.Array]):
        """One DDPG gradient step on a batch: critic, actor (on the new critic), soft target update."""
        cfg = self.config
        per_agent = not cfg.share_params
        critic, opt_critic, _, c_stats, c_norm = gradient_step(
            self.critic_loss, self.tx_critic, params["critic"], opt_state["critic"], target_params, batch, cfg.gamma,
            per_agent=per_agent)
        actor, opt_actor, _, a_stats, a_norm = gradient_step(
            self.actor_loss, self.tx_actor, params["actor"], opt_state["actor"], critic, batch, per_agent=per_agent)
        params = {"actor": actor, "critic": critic}
        target_params = soft_update(params, target_params, cfg.tau)
        stats = {**c_stats, **a_stats, "critic_grad_norm": c_norm, "actor_grad_norm": a_norm}
        return params, target_params, {"actor": opt_actor, "critic": opt_critic}, stats

    # ----- protocol ------------------------------------------------------------------------

    def init_params(self, key: jax.Array) -> dict[str, Any]:
        obs, u = jnp.zeros((1, self.obs_dim)), jnp.zeros((1, self.action_dim))
        k_actor, k_critic = jax.random.split(key)
        init_actor = lambda k: self.actor.init(k, obs)  # noqa: E731
        init_critic = lambda k: self.critic.init(k, obs, u)  # noqa: E731
        if self.config.share_params:
            return {"actor": init_actor(k_actor), "critic": init_critic(k_critic)}
        return {"actor": jax.lax.map(init_actor, jax.random.split(k_actor, self.n)),
                "critic": jax.lax.map(init_critic, jax.random.split(k_critic, self.n))}

    def transition_example(self) -> dict[str, jax.Array]:
        """One stored transition (shapes and dtypes); actions on the [-1, 1] scale."""
        n, d, a = self.n, self.obs_dim, self.action_dim
        return {"obs": jnp.zeros((n, d)), "action": jnp.zeros((n, a)), "reward": jnp.zeros(()),
                "next_obs": jnp.zeros((n, d)), "terminated": jnp.zeros((), bool), "avail": jnp.zeros((n, a), bool),
                "next_avail": jnp.zeros((n, a), bool)}

    def init(self, key: jax.Array) -> TrainState:
        cfg = self.config
        k_params, k_env, k_state = jax.random.split(key, 3)
        params = self.init_params(k_params)
        init_opt = (lambda tx, p: tx.init(p)) if cfg.share_params else (lambda tx, p: jax.vmap(tx.init)(p))
        opt_state = {"actor": init_opt(self.tx_actor, params["actor"]),
                     "critic": init_opt(self.tx_critic, params["critic"])}
        env_state, ts = jax.vmap(self.env.reset)(jax.random.split(k_env, cfg.num_envs))
        zero = jnp.zeros((), jnp.int32)
        buffer = self.replay.init(self.transition_example())
        return TrainState(params, jax.tree.map(jnp.copy, params), opt_state, buffer, env_state, ts,
                          jnp.zeros(cfg.num_envs, jnp.float32), k_state, zero, zero, zero)

    def collect(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """``num_steps`` steps in every env, each transition added to the replay buffer."""
        cfg = self.config

        def step(carry, key):
            env_state, ts, last_return, env_steps = carry
            k_act, k_env = jax.random.split(key)
            mu = self.mu(state.params["actor"], ts.obs, ts.avail_actions)  # [E, N, A]
            u = explore(k_act, mu, ts.avail_actions, cfg.exploration_noise, env_steps < cfg.learning_starts)
            env_state, next_ts = jax.vmap(self.env.step)(jax.random.split(k_env, cfg.num_envs), env_state,
                                                         self.env_actions(u, ts.avail_actions))
            record = {"obs": ts.obs, "action": u, "reward": next_ts.reward, "next_obs": next_ts.info["final_obs"],
                      "terminated": next_ts.terminated, "avail": ts.avail_actions,
                      "next_avail": next_ts.info["final_avail_actions"]}
            last_return = jnp.where(next_ts.done, next_ts.info["episode_return"], last_return)
            return (env_state, next_ts, last_return, env_steps + cfg.num_envs), record

        key, k_roll = jax.random.split(state.key)
        init = (state.env_state, state.timestep, state.last_return, state.env_steps)
        keys = jax.random.split(k_roll, cfg.num_steps)
        (env_state, ts, last_return, env_steps), traj = jax.lax.scan(step, init, keys)
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), traj)  # [T * E, ...], time-major
        buffer = self.replay.add(state.buffer, flat)
        state = state.replace(buffer=buffer, env_state=env_state, timestep=ts, last_return=last_return, key=key,
                              env_steps=env_steps)
        return state, {"episode_return": last_return.mean()}

    def buffer_size(self, buffer) -> jax.Array:
        """Transitions held."""
        return jnp.where(buffer.is_full, self.config.buffer_size, buffer.current_index)

    def learn(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """``grad_steps_per_update`` gradient steps, each on a fresh uniform batch, once learning has started."""
        cfg = self.config
        ready = (state.env_steps >= cfg.learning_starts) & (self.buffer_size(state.buffer) >= cfg.batch_size)
        key, k_learn = jax.random.split(state.key)

        taken = ready.astype(jnp.int32) * self.grad_steps_per_update

        def step(i, carry):
            params, target, opt_state, _ = carry
            batch = self.replay.sample(state.buffer, jax.random.fold_in(k_learn, i)).experience
            return self.learn_on_batch(params, target, opt_state, batch)

        def step_and_sum(i, carry):
            params, target, opt_state, stats = step(i, carry)
            return params, target, opt_state, jax.tree.map(jnp.add, carry[3], stats)

        # A loop of ``taken`` steps (a count XLA cannot see), each batch drawn with a key that depends on the step.
        # A scan of known length under a cond let XLA fuse this update's replay write into the batch gathers and
        # then write the buffer into a fresh copy, twice per update once seeds are vmapped (about 460 MB per env
        # step on hopper at 1e6); a batch that does not depend on the step is hoisted out of the loop, the same.
        carry = (state.params, state.target_params, state.opt_state)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(step, 0, carry + (None,))[3])
        params, target, opt_state, total = jax.lax.fori_loop(0, taken, step_and_sum, carry + (zeros,))
        metrics = {k: v / jnp.maximum(taken, 1) for k, v in total.items()}  # means over the steps taken
        metrics["gradient_steps"] = taken.astype(jnp.float32)
        state = state.replace(params=params, target_params=target, opt_state=opt_state, key=key,
                              grad_steps=state.grad_steps + taken)
        return state, metrics

    def update(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        state, collect_stats = self.collect(state)
        state, metrics = self.learn(state)
        state = state.replace(update_count=state.update_count + 1)
        return state, {**collect_stats, **metrics,
                       "buffer_transitions": self.buffer_size(state.buffer).astype(jnp.float32)}

    def act(self, params, obs: jax.Array, avail: jax.Array) -> jax.Array:
        """Greedy decentralised execution: each agent's actor on its own observation; env-scale actions."""
        return self.env_actions(self.mu(params["actor"], obs, avail), avail)

    def greedy_policy(self, params, batch: int):
        """(initial carry, policy) in ``evaluate_greedy``'s form; the networks carry nothing between steps."""
        del batch
        return (), lambda carry, obs, avail, reset: (carry, self.act(params, obs, avail))

    def evaluate(self, state: TrainState) -> dict[str, jax.Array]:
        carry, policy = self.greedy_policy(state.params, self.config.eval_episodes)
        return evaluate_greedy(self.env, policy, carry, evaluation_key(state.key), self.config.eval_episodes)
