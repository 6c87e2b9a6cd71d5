"""TAD-PPO (tad_ppo.md §5, Algorithm 1-2, eq. 6) and MAPPO as its ablation.

Transformation (TAD-PPO-T). Within one env step the agents decide in a fixed order 0..n-1; agent i
sees a_<i through multi-head attention (queries from an MLP of its torso output h_i, keys and values
from MLPs of the previous actions' one-hots, causal mask). This is PPO on the transformed MDP of
Algorithm 1: virtual state (s, a_<i), virtual discount gamma^(1/n), the team reward on the last
sub-step only, GAE over the n*T virtual steps; termination and truncation belong to the last
sub-step, whose next value is V(s', a_<0) of the next env step (of the terminal observation where
the episode ended, so truncation is bootstrapped exactly).

Speed by design. Only the attention and the heads see a_<i, so the torso (Dense, GRU) runs once per
agent per env step, all agents in parallel. Sampling is a scan over agents through the query's
attention, the head and the new action's key/value only. Training evaluates all agents at once by
teacher forcing the stored actions through the causal mask; the sequential sampler and the parallel
pass share one ``attend`` so their log-probabilities agree.

Distillation (TAD-PPO). A decentralised head pi_E(a_i | tau_i) reads the same torso features and is
trained at the same time as PPO by cross-entropy to the actions the sequential policy sampled (eq. 6).
Evaluation reports both greedy policies: decentralised (``return``) and sequential
(``return_sequential``); on matrix games also the TAD score (``score``, ``score_sequential``).
:func:`decentralise_tabular` is Algorithm 4's deterministic decentralisation for tabular policies.

MAPPO is the same learner with ``attention=False``: one simultaneous decision per env step, gamma
unchanged, per-agent GAE, no distillation head (its policy is already decentralised).

Where the pieces live: the network (``attend``, :class:`~jmarl.attention.TADNet`) in jmarl/attention.py,
the virtual-step GAE and ValueNorm in jmarl/returns.py; this module holds the config, Algorithm 4 and
the learner.

Choices where the paper (and MAPPO's defaults, which it inherits) is silent, each a config field:
- torso: LayerNorm on the input, Dense+ReLU(+LayerNorm), GRU, LayerNorm on the GRU output (MAPPO puts
  its two Dense layers before the GRU; here the second one sits after it, in the head); heads: Dense+ReLU
  then a linear output, the policy output near zero at init (no orthogonal init, see networks.py);
- attention: the query MLP has one hidden layer of width N_h*D (ReLU); keys and values are two linear
  maps of one shared ReLU embedding (width N_h*D) of the previous action's one-hot plus the acting
  agent's id one-hot (``attn_agent_id``: with shared parameters the attention could otherwise not
  tell who did what); widths of N_h*D rather than hidden_dim keep training near MAPPO's cost (the
  paper's implementation is 1.9-2.8x slower, Table 4); a learned null slot that every
  agent may attend to (agent 0 has no previous action; its key/value start as unit normals); no output
  projection (the head's first Dense follows the concatenated heads directly), but a LayerNorm on the
  concatenated heads (with ``layer_norm``) so that the previous actions weigh as much as h_i in the head;
- the critic's attention has the same shape as the actor's; its input is the global state + agent id;
- lambda applies per virtual step (single-agent PPO on the transformed MDP); ``lambda_root`` uses
  lambda^(1/n) to keep MAPPO's per-env-step trace instead;
- distillation: weight ``distill_coef`` 1, it also trains the shared torso (``distill_torso``; the
  paper shares the GRU and representation layer), targets are the sampled sequential actions
  (``distill_target="greedy"`` distils the greedy sequential chain instead, Algorithm 4's
  deterministic coordination policy); all agents, steps and epochs of the batch count;
- ValueNorm (MAPPO's running mean/var with debiasing, beta 0.99999, variance floor 1e-2) is updated
  once per update from the rollout's return targets, before the epochs;
- the GRU is trained on whole rollouts replayed from the rollout's first carries (no data chunks);
  minibatches split the parallel envs; actor and critic have their own gradient-norm clip (10);
- advantages are normalised over the whole batch, and like the surrogate, entropy, value and distillation
  losses and their statistics over the agent-steps the rollout records as active. ``active_masks`` (on:
  MAPPO's reference code masks by default and the paper inherits its defaults) records the env's
  ``TimeStep.active``, so the steps of agents no longer in play (dead SMAX units) drop out; the step on
  which an agent dies still counts. Off, every agent-step is recorded as active. GAE, the virtual chain
  and ValueNorm's statistics run over all steps, as in MAPPO's code;
- ``ent_coef_final`` / ``ent_anneal_frac`` (off by default) anneal the entropy bonus linearly.

The paper does not give its settings for the didactic games. With MAPPO's defaults (normalised
advantages, entropy 0.01) both TAD-PPO and MAPPO settle in local optima there within a few updates;
advantages in reward units with a large entropy bonus annealed to zero reproduce Fig. 2, 3 and 14
(tests/algos/test_tad_ppo_learning.py has the settings).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import envs
from envs.matrix import MatrixGame
from jmarl import onpolicy
from jmarl.attention import TADNet
from jmarl.config import CommonConfig, field
from jmarl.distributions import categorical_entropy
from jmarl.evaluate import evaluate_greedy, evaluation_key
from jmarl.masks import mask_actions, masked_mean
from jmarl.optim import gradient_step
from jmarl.returns import ValueNorm, gae, virtual_gae


@dataclasses.dataclass(frozen=True)
class TADPPOConfig(CommonConfig):
    algo: str = "tad_ppo"
    total_steps: int = field(1_000_000, low=1)
    num_envs: int = field(16, low=1)
    num_steps: int = field(128, low=1, doc="rollout length per update (per env)")
    hidden_dim: int = field(64, low=1)
    num_layers: int = field(2, low=2, doc="torso layers: Dense then GRU (Dense, Dense if not recurrent)")
    recurrent: bool = field(True, doc="GRU in the torso (MAPPO's recurrent policy)")
    layer_norm: bool = field(True, doc="LayerNorm on the input, after the Dense layer and on the GRU output")
    last_action: bool = field(False, doc="append each agent's previous action to its observation")
    lr: float = field(5e-4, low=0.0, low_open=True, doc="Adam learning rate, actor and critic")
    adam_eps: float = field(1e-5, low=0.0, low_open=True)
    gae_lambda: float = field(0.95, low=0.0, high=1.0)
    lambda_root: bool = field(False, doc="lambda^(1/n) per virtual step instead of lambda")
    epochs: int = field(15, low=1, doc="passes over each rollout (per map on SMAX)")
    num_minibatches: int = field(1, low=1, doc="minibatches per epoch (split over envs)")
    clip: float = field(0.2, low=0.0, low_open=True, doc="PPO ratio clip")
    value_clip: float = field(0.2, low=0.0, doc="clipped value loss range (0 = unclipped)")
    huber_delta: float = field(10.0, low=0.0, doc="Huber value loss delta (0 = squared error)")
    value_coef: float = field(1.0, low=0.0)
    value_norm: bool = field(True, doc="normalise value targets by running statistics (ValueNorm)")
    value_norm_beta: float = field(0.99999, low=0.0, high=1.0, low_open=True)
    ent_coef: float = field(0.01, low=0.0)
    ent_coef_final: float | None = field(None, low=0.0, doc="linear anneal of ent_coef to this (None = fixed)")
    ent_anneal_frac: float = field(1.0, low=0.0, high=1.0, low_open=True, doc="fraction of the run the anneal takes")
    max_grad_norm: float = field(10.0, low=0.0, low_open=True, doc="gradient norm clip, actor and critic each")
    norm_adv: bool = field(True, doc="normalise advantages over the batch")
    active_masks: bool = field(True, doc="leave dead agents' steps out of the losses and the advantage statistics "
                                         "(MAPPO's default)")
    attention: bool = field(True, doc="sequential decisions through previous-action attention (False = MAPPO)")
    attn_heads: int = field(4, low=1, doc="attention heads N_h")
    attn_dim: int = field(4, low=1, doc="dimension D of each head's queries, keys and values")
    attn_agent_id: bool = field(True, doc="keys/values also see which agent took the previous action")
    distill_coef: float = field(1.0, low=0.0, doc="weight of the distillation cross-entropy (eq. 6)")
    distill_torso: bool = field(True, doc="the distillation loss also trains the shared torso (GRU)")
    distill_target: str = field("sampled", choices=("sampled", "greedy"),
                                doc="distil the sampled sequential actions (eq. 6) or the greedy chain")


# MAPPO's per-map settings (notes/algorithms.md): epochs 15/10/5, clip 0.05 on two maps, and the
# attention sizes of the paper's App. D.3 (4/4 easy and hard, 3/4 on three super-hard maps).
ENV_DEFAULTS = {
    "smax_5m_vs_6m": {"epochs": 10, "clip": 0.05},
    "smax_10m_vs_11m": {"epochs": 10},
    "smax_3s_vs_5z": {"clip": 0.05},
    "smax_3s5z": {"epochs": 5},
    "smax_3s5z_vs_3s6z": {"epochs": 5, "attn_heads": 3},
    "smax_27m_vs_30m": {"epochs": 5, "attn_heads": 3},
    "smax_6h_vs_8z": {"epochs": 5, "attn_heads": 3},
}

VARIANTS = {
    "tad_ppo": {},
    "mappo": {"attention": False},
}


# ----- Algorithm 4 ----------------------------------------------------------------------------


def decentralise_tabular(policies: list[np.ndarray]) -> np.ndarray:
    """Algorithm 4: greedy coordination policy -> one deterministic action per state and agent.

    ``policies[k]`` holds pi_k(a_k | s, a_<k) with shape [S] + [A]*k + [A]. Agent k's action in state s
    is the argmax of pi_k given the actions chosen before it, which every agent can compute alone from
    s; ties go to the lowest action. Returns int [S, n].
    """
    num_states, n = policies[0].shape[0], len(policies)
    eta = np.zeros((num_states, n), np.int64)
    for s in range(num_states):
        for k in range(n):
            eta[s, k] = int(np.argmax(policies[k][(s, *eta[s, :k])]))
    return eta


# ----- the learner ------------------------------------------------------------------------------


@struct.dataclass
class TrainState:
    params: Any  # {"actor": ..., "critic": ...}
    opt_state: Any
    env_state: Any
    timestep: Any
    carries: Any  # (actor [E, N, H], critic [E, N, H])
    episode_start: jax.Array
    value_norm: ValueNorm
    key: jax.Array
    update_count: jax.Array
    env_steps: jax.Array


class _FixedTask(envs.Wrapper):
    """Resets a matrix game into a given task, so the usual wrappers can build its first observation."""

    def __init__(self, env: MatrixGame, task: jax.Array):
        super().__init__(env)
        self.task = task

    def reset(self, key: jax.Array):
        return self.env.reset_task(key, self.task)


def _choose(logits: jax.Array, key: jax.Array | None, greedy: bool) -> jax.Array:
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits).astype(jnp.int32)


def _take(logp: jax.Array, actions: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logp, actions[..., None], -1)[..., 0]


class TADPPO:
    """TAD-PPO (``attention=True``) or MAPPO (``attention=False``); see the module docstring."""

    # Config keys read only as traced numbers, so a sweep over them is one vmapped program (jmarl/sweep.py).
    sweepable = ("lr", "adam_eps", "max_grad_norm", "gamma", "gae_lambda", "clip", "ent_coef", "ent_coef_final",
                 "value_coef", "value_norm_beta", "distill_coef")

    def __init__(self, config: TADPPOConfig):
        self.config = cfg = config
        onpolicy.check_minibatches(cfg.num_envs, cfg.num_minibatches)
        self.env = envs.wrap(envs.make(cfg.env), agent_id=True, last_action=cfg.last_action)
        spec = self.env.spec
        self.n, self.num_actions = spec.num_agents, spec.num_actions
        self.steps_per_update = cfg.num_envs * cfg.num_steps
        self.sequential = cfg.attention  # virtual steps and a distillation head
        net = dict(num_agents=self.n, num_actions=self.num_actions, hidden_dim=cfg.hidden_dim,
                   num_layers=cfg.num_layers, recurrent=cfg.recurrent, layer_norm=cfg.layer_norm,
                   attention=cfg.attention, heads=cfg.attn_heads, head_dim=cfg.attn_dim,
                   agent_ids=cfg.attn_agent_id)
        self.actor = TADNet(self.num_actions, distill=self.sequential, small_init=True, **net)
        self.critic = TADNet(1, **net)
        self.critic_dim = spec.state_dim + self.n
        part = lambda: optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=cfg.adam_eps))
        labels = lambda p: {name: jax.tree.map(lambda _, name=name: name, sub) for name, sub in p.items()}
        self.tx = optax.multi_transform({"actor": part(), "critic": part()}, labels)
        self.lam = cfg.gae_lambda ** (1.0 / self.n) if (self.sequential and cfg.lambda_root) else cfg.gae_lambda

    # ----- network pieces --------------------------------------------------------------------

    def critic_inputs(self, state: jax.Array) -> jax.Array:
        """[..., state_dim] -> [..., N, state_dim + N]: the global state and each agent's id."""
        lead = state.shape[:-1]
        ids = jnp.broadcast_to(jnp.eye(self.n), lead + (self.n, self.n))
        tiled = jnp.broadcast_to(state[..., None, :], lead + (self.n, state.shape[-1]))
        return jnp.concatenate([tiled, ids], axis=-1)

    def _per_agent(self, reset: jax.Array) -> jax.Array:
        return jnp.broadcast_to(reset[..., None], reset.shape + (self.n,))

    def actor_features(self, params, carry, obs, reset):
        return self.actor.apply(params["actor"], carry, obs, self._per_agent(reset), method=TADNet.features)

    def critic_features(self, params, carry, state, reset):
        return self.critic.apply(params["critic"], carry, self.critic_inputs(state), self._per_agent(reset),
                                 method=TADNet.features)

    def policy_logits(self, params, h: jax.Array, actions: jax.Array, avail: jax.Array) -> jax.Array:
        """Teacher forcing: every agent's logits given the stored a_<i, all agents in one pass."""
        return mask_actions(self.actor.apply(params["actor"], h, actions, method=TADNet.teacher_forced), avail)

    def values(self, params, hc: jax.Array, actions: jax.Array) -> jax.Array:
        """Normalised V(s, a_<i) for every agent i (V(s, id_i) without attention): [..., N]."""
        return self.critic.apply(params["critic"], hc, actions, method=TADNet.teacher_forced)[..., 0]

    def decentralised_logits(self, params, h: jax.Array, avail: jax.Array) -> jax.Array:
        if not self.sequential:  # MAPPO: the policy itself
            return self.policy_logits(params, h, jnp.zeros(h.shape[:-1], jnp.int32), avail)
        return mask_actions(self.actor.apply(params["actor"], h, method=TADNet.decentralised), avail)

    def sample_actions(self, params, h: jax.Array, avail: jax.Array, key: jax.Array | None,
                       greedy: bool = False) -> tuple[jax.Array, jax.Array]:
        """Joint action [..., N] and its logits [..., N, A] from torso features h [..., N, H].

        With attention the agents decide in order: a scan over agents runs agent i's attention over the
        keys/values of a_<i, its head, and the key/value of its new action. Without it, all at once.
        """
        if not self.sequential:
            logits = self.decentralised_logits(params, h, avail)
            return _choose(logits, key, greedy), logits
        ap, net, n = params["actor"], self.actor, self.n
        q = net.apply(ap, h, method=TADNet.queries)  # [..., N, heads, dim]
        buffers = (jnp.zeros(q.shape, q.dtype), jnp.zeros(q.shape, q.dtype))
        keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, n)

        def decide(kv, xs):
            i, h_i, q_i, avail_i, key_i = xs
            k, v = kv
            visible = (jnp.arange(n) < i)[None, :]
            context = net.apply(ap, q_i[..., None, :, :], k, v, visible, method=TADNet.attend)[..., 0, :, :]
            logits = mask_actions(net.apply(ap, h_i, context, method=TADNet.output), avail_i)
            a = _choose(logits, key_i, greedy)
            k_i, v_i = net.apply(ap, a, i, method=TADNet.keys_values)
            return (k.at[..., i, :, :].set(k_i), v.at[..., i, :, :].set(v_i)), (a, logits)

        agent_major = lambda x, axis: jnp.moveaxis(x, axis, 0)  # noqa: E731
        xs = (jnp.arange(n), agent_major(h, -2), agent_major(q, -3), agent_major(avail, -2), keys)
        _, (actions, logits) = jax.lax.scan(decide, buffers, xs)
        return jnp.moveaxis(actions, 0, -1), jnp.moveaxis(logits, 0, -2)

    def init_carries(self, batch: int):
        z = jnp.zeros((batch, self.n, self.config.hidden_dim))
        return (z, z)

    # ----- protocol --------------------------------------------------------------------------

    def init(self, key: jax.Array) -> TrainState:
        cfg = self.config
        k_actor, k_critic, k_env, k_state = jax.random.split(key, 4)
        spec = self.env.spec
        carry = jnp.zeros((1, self.n, cfg.hidden_dim))
        reset, actions = jnp.ones((1, self.n), bool), jnp.zeros((1, self.n), jnp.int32)
        params = {"actor": self.actor.init(k_actor, carry, jnp.zeros((1, self.n, spec.obs_dim)), reset, actions),
                  "critic": self.critic.init(k_critic, carry, jnp.zeros((1, self.n, self.critic_dim)), reset,
                                             actions)}
        env_state, ts = jax.vmap(self.env.reset)(jax.random.split(k_env, cfg.num_envs))
        return TrainState(params, self.tx.init(params), env_state, ts, self.init_carries(cfg.num_envs),
                          jnp.ones(cfg.num_envs, bool), ValueNorm.zeros(), k_state, jnp.zeros((), jnp.int32),
                          jnp.zeros((), jnp.int32))

    def collect(self, state: TrainState):
        """Run ``num_steps`` steps in every env; returns (state, trajectory [T, E, ...])."""
        cfg = self.config
        params = state.params

        def step(carry, key):
            env_state, ts, (actor_carry, critic_carry), start = carry
            k_act, k_env = jax.random.split(key)
            actor_carry, h = self.actor_features(params, actor_carry, ts.obs, start)
            critic_carry, hc = self.critic_features(params, critic_carry, ts.state, start)
            actions, logits = self.sample_actions(params, h, ts.avail_actions, k_act)
            values = self.values(params, hc, actions)
            env_state, next_ts = jax.vmap(self.env.step)(jax.random.split(k_env, cfg.num_envs), env_state, actions)
            # V of the state after this step (the terminal one where the episode ended) with the critic
            # carry after this step: bootstraps truncation exactly. Sub-step 0 needs no previous action.
            _, hc_next = self.critic_features(params, critic_carry, next_ts.info["final_state"],
                                              jnp.zeros_like(start))
            next_values = self.values(params, hc_next, jnp.zeros_like(actions))
            out = onpolicy.step_record(ts, next_ts, start, actions, _take(jax.nn.log_softmax(logits), actions), values,
                                       next_values, cfg.active_masks)
            out["state"] = ts.state
            if self.sequential and cfg.distill_target == "greedy":
                out["distill_actions"] = self.sample_actions(params, h, ts.avail_actions, None, greedy=True)[0]
            return (env_state, next_ts, (actor_carry, critic_carry), next_ts.done), out

        return onpolicy.rollout(state, step, cfg.num_steps, self.steps_per_update)

    def replay(self, params, carries0, traj):
        """Torso features over a trajectory [T, E, ...] from the rollout's first carries (scan over time),
        then every head at once: (policy logits, decentralised logits or None, normalised values)."""

        def step(carries, x):
            actor_carry, h = self.actor_features(params, carries[0], x["obs"], x["reset"])
            critic_carry, hc = self.critic_features(params, carries[1], x["state"], x["reset"])
            return (actor_carry, critic_carry), (h, hc)

        xs = {k: traj[k] for k in ("obs", "state", "reset")}
        _, (h, hc) = jax.lax.scan(step, carries0, xs)
        logits = self.policy_logits(params, h, traj["actions"], traj["avail"])
        values = self.values(params, hc, traj["actions"])
        distill_logits = None
        if self.sequential:
            h_e = h if self.config.distill_torso else jax.lax.stop_gradient(h)
            distill_logits = self.decentralised_logits(params, h_e, traj["avail"])
        return logits, distill_logits, values

    def advantages(self, traj, value_norm: ValueNorm) -> tuple[jax.Array, jax.Array]:
        """(advantages, return targets) [T, E, N] in the env's reward scale."""
        cfg = self.config
        denorm = value_norm.denormalize if cfg.value_norm else (lambda x: x)
        values, next_values = denorm(traj["values"]), denorm(traj["next_values"])
        if self.sequential:
            return virtual_gae(traj["reward"], values, next_values[..., 0], traj["terminated"], traj["done"],
                               cfg.gamma, self.lam)
        return gae(traj["reward"][..., None], values, next_values, traj["terminated"][..., None],
                   traj["done"][..., None], cfg.gamma, self.lam)

    def entropy_coef(self, update_count: jax.Array) -> jax.Array:
        return onpolicy.entropy_coef(self.config, self.steps_per_update, update_count)

    def loss(self, params, carries0, traj, adv, targets, ent_coef: float | jax.Array | None = None):
        """PPO-clip surrogate, entropy bonus, clipped Huber value loss (normalised targets), distillation;
        each a mean over the recorded active agent-steps."""
        cfg = self.config
        ent_coef = cfg.ent_coef if ent_coef is None else ent_coef
        mean = functools.partial(masked_mean, mask=onpolicy.active_steps(traj))
        logits, distill_logits, values = self.replay(params, carries0, traj)
        logp = jax.nn.log_softmax(logits)
        log_ratio = _take(logp, traj["actions"]) - traj["logp"]
        ratio = jnp.exp(log_ratio)
        surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
        policy_loss = -mean(surrogate)
        entropy = mean(categorical_entropy(logp))
        value_err = lambda pred: (optax.huber_loss(pred, targets, delta=cfg.huber_delta) if cfg.huber_delta > 0  # noqa: E731
                                  else 0.5 * jnp.square(pred - targets))
        value_loss = value_err(values)
        if cfg.value_clip > 0:
            old = traj["values"]
            value_loss = jnp.maximum(value_loss, value_err(old + jnp.clip(values - old, -cfg.value_clip,
                                                                          cfg.value_clip)))
        value_loss = mean(value_loss)
        total = policy_loss - ent_coef * entropy + cfg.value_coef * value_loss
        stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                 "approx_kl": mean((ratio - 1) - log_ratio),
                 "clip_frac": mean((jnp.abs(ratio - 1) > cfg.clip).astype(jnp.float32))}
        if self.sequential:
            target = traj["distill_actions"] if cfg.distill_target == "greedy" else traj["actions"]
            distill_loss = -mean(_take(jax.nn.log_softmax(distill_logits), target))
            total = total + cfg.distill_coef * distill_loss
            stats["distill_loss"] = distill_loss
        return total, stats

    def learn(self, state: TrainState, carries0, traj):
        cfg = self.config
        adv, targets = self.advantages(traj, state.value_norm)
        value_norm = state.value_norm
        if cfg.value_norm:
            value_norm = value_norm.update(targets, cfg.value_norm_beta)
            targets = value_norm.normalize(targets)
        if cfg.norm_adv:
            adv = onpolicy.masked_normalise(adv, onpolicy.active_steps(traj))
        ent_coef = self.entropy_coef(state.update_count)

        def minibatch(carry, idx):
            params, opt_state = carry
            take = lambda x: jnp.take(x, idx, axis=1)  # noqa: E731  envs are axis 1 of [T, E, ...]
            c0 = jax.tree.map(lambda c: jnp.take(c, idx, axis=0), carries0)  # carries are [E, N, H]
            params, opt_state, _, stats, grad_norm = gradient_step(
                self.loss, self.tx, params, opt_state, c0, jax.tree.map(take, traj), take(adv), take(targets),
                ent_coef)
            return (params, opt_state), {**stats, "grad_norm": grad_norm}  # norm before clipping, actor and critic

        key, k_epochs = jax.random.split(state.key)
        (params, opt_state), stats = onpolicy.minibatch_epochs(state.params, state.opt_state, k_epochs, cfg.epochs,
                                                               cfg.num_envs, cfg.num_minibatches, minibatch)
        state = state.replace(params=params, opt_state=opt_state, value_norm=value_norm, key=key,
                              update_count=state.update_count + 1)
        return state, {**{k: v.mean() for k, v in stats.items()}, "ent_coef": ent_coef}

    def update(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        return onpolicy.update(self, state)

    def act(self, params, carry, obs, avail, reset, key=None, greedy: bool = True, sequential: bool = False):
        """One env step for a batch: obs [B, N, D], carry [B, N, H], reset [B] -> (carry, actions [B, N]).

        ``sequential=False`` is decentralised execution (pi_E, or MAPPO's policy); ``sequential=True``
        the coordination policy of TAD-PPO-T, agents deciding in order.
        """
        carry, h = self.actor_features(params, carry, obs, reset)
        if sequential:
            return carry, self.sample_actions(params, h, avail, key, greedy)[0]
        return carry, _choose(self.decentralised_logits(params, h, avail), key, greedy)

    def greedy_policy(self, params, batch: int):
        """(initial carry, policy) for ``batch`` parallel episodes in ``evaluate_greedy``'s form: the decentralised
        greedy policy (pi_E; MAPPO's own policy) for tools that only hold parameters (exported policies, rendering)."""
        return self.init_carries(batch)[0], lambda carry, obs, avail, reset: self.act(params, carry, obs, avail, reset)

    def matrix_score(self, params, sequential: bool = False) -> jax.Array:
        """Matrix games: sum over tasks of the payoff of the greedy joint action (TAD's score, optimum 100
        on matrix_tad10)."""
        raw = self.env.unwrapped
        tasks = jnp.arange(raw.num_tasks)

        def first_obs(task):
            env = envs.wrap(_FixedTask(raw, task), agent_id=True, last_action=self.config.last_action,
                            auto_reset=False)
            return env.reset(jax.random.PRNGKey(0))[1]

        ts = jax.vmap(first_obs)(tasks)
        carry = self.init_carries(raw.num_tasks)[0]
        _, joint = self.act(params, carry, ts.obs, ts.avail_actions, jnp.ones(raw.num_tasks, bool),
                            sequential=sequential)
        return raw.score(joint)

    def evaluate(self, state: TrainState) -> dict[str, jax.Array]:
        """Greedy evaluation of the decentralised policy (keys as jmarl.evaluate) and, for TAD-PPO, of the
        sequential one (same keys + ``_sequential``); ``score`` on matrix games."""
        cfg = self.config
        key = evaluation_key(state.key)
        modes = [("", False)] + ([("_sequential", True)] if self.sequential else [])
        out = {}
        for suffix, sequential in modes:
            policy = lambda c, o, a, r, s=sequential: self.act(state.params, c, o, a, r, sequential=s)  # noqa: E731
            evals = evaluate_greedy(self.env, policy, self.init_carries(cfg.eval_episodes)[0], key,
                                    cfg.eval_episodes)
            out.update({k + suffix: v for k, v in evals.items()})
            if isinstance(self.env.unwrapped, MatrixGame):
                out["score" + suffix] = self.matrix_score(state.params, sequential)
        return out
