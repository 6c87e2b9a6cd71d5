"""HAPPO: heterogeneous-agent PPO (Kuba et al., 2022, "Trust Region Policy Optimisation in Multi-Agent
Reinforcement Learning"), discrete and continuous actions.

The update. Every update draws a random permutation i_1..i_n of the agents (``fixed_order``: 0..n-1) and
updates the agents' policies one after another in that order, each with its own parameters. Agent i_m
maximises the PPO-clip surrogate of the joint advantage A(s, a) weighted by the factor

    M_m(t) = prod_{k < m} pi_new^{i_k}(a^{i_k}_t | o^{i_k}_t) / pi_old^{i_k}(a^{i_k}_t | o^{i_k}_t),

the probability ratio of the joint action under the agents already updated in this iteration (their
policies after their update), per time step and detached:

    L_m = E[M_m * min(r A, clip(r, 1 - eps, 1 + eps) A)],  r = pi^{i_m} / pi_old^{i_m}.

As in the authors' code (HARL, harl/algorithms/actors/happo.py and harl/runners/on_policy_ha_runner.py;
the same in TRPO-in-MARL's runners/separated/base_runner.py):
- M multiplies the clipped objective from outside; M > 0, so this is min(r M A, clip(r) M A): r is clipped,
  M is not;
- M is computed once per agent, over the whole batch, after the previous agent's epochs x minibatches, then
  stays fixed during the agent's own epochs; M_1 = 1;
- pi_old is the policy that collected the rollout. The authors re-evaluate it before each agent's update;
  since each agent is updated once per iteration, that is the rollout's own log-probability, which is what
  is used here (:func:`sequential_update`).

The critic is one centralised V(s) on the global state (HARL's "EP" state type): one value per env step,
so the advantage is the joint one and every agent sees the same. It is trained as the library's MAPPO
(clipped Huber loss on ValueNorm-normalised targets, its own Adam and gradient clip), after the actors,
for the same epochs x minibatches. The actors are not shared: one parameter set per agent, stacked on a
leading agent axis, applied with a vmap over agents when acting and indexed one agent at a time when
learning (each agent its own Adam moments and gradient-norm clip). The network is the library MAPPO's
(:class:`jmarl.attention.TADNet` without attention): LayerNorm on the input, Dense+ReLU(+LayerNorm), GRU,
LayerNorm, a Dense+ReLU head and a near-zero linear output.

Choices where the code differs from HARL, each documented against it:
- the advantage (in reward units) is normalised per agent over that agent's active steps, as HARL's EP
  path does inside each actor's training, with eps 1e-8 (HARL 1e-5); ``norm_adv=False`` leaves it in
  reward units;
- ValueNorm (beta 0.99999, as HARL) is updated once per update from the rollout's targets, before the
  critic's epochs (HARL updates it in every critic minibatch; this is the library MAPPO's choice);
- a GRU is trained on whole rollouts replayed from the rollout's first carries (HARL: chunks of 10 steps);
  minibatches split the parallel envs;
- HARL's SMAC networks are a 3 x 64 MLP before the GRU with orthogonal init; here the library MAPPO's
  network, so that HAPPO and MAPPO differ in their update only; ``lr`` is both HARL's ``lr`` and
  ``critic_lr`` (equal in every HARL config);
- "FP" states (per-agent global states, per-agent values) are not available: the critic reads the env's
  one global state.
``active_masks`` (HARL's ``use_policy_active_masks``, on) leaves dead agents' steps out of each agent's
surrogate, entropy and advantage statistics; M is a product over all steps (a dead unit has one action,
ratio 1). ``ent_coef_final`` / ``ent_anneal_frac`` (off by default) anneal the entropy bonus linearly.

Continuous actions change only the policy's distribution (:class:`jmarl.distributions.DiagGaussian`): the
actor's output is the mean, each agent has a learned state-independent log-std vector, the log-probability
of an action is the sum over its dimensions (so r and the factor's ratios are products over dimensions,
HARL's ``action_aggregation="prod"``) and the entropy is the Gaussian's. HARL parameterises the std as
0.5 sigmoid(x) (at most 0.5); here it is exp(log_std), unbounded, starting at HARL's initial std,
0.5 sigmoid(1) = 0.366 (``log_std_init``). The sequential update, factor and critic are unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from jmarl import distributions, onpolicy
from jmarl.attention import TADNet
from jmarl.config import CommonConfig, field
from jmarl.evaluate import evaluate_with_score, evaluation_key
from jmarl.masks import mask_actions, masked_mean
from jmarl.optim import gradient_step
from jmarl.returns import ValueNorm, gae


@dataclasses.dataclass(frozen=True)
class HAPPOConfig(CommonConfig):
    """Defaults: HARL's HAPPO for SMAC (harl/configs/algos_cfgs/happo.yaml and tuned_configs/smac/*/happo)."""

    algo: str = "happo"
    total_steps: int = field(1_000_000, low=1)
    num_envs: int = field(20, low=1, doc="parallel envs (HARL n_rollout_threads 20)")
    num_steps: int = field(160, low=1, doc="rollout length per update per env (HARL SMAC episode_length 160)")
    hidden_dim: int = field(64, low=1, doc="hidden units (HARL SMAC hidden_sizes 64)")
    num_layers: int = field(2, low=2, doc="torso layers: Dense then GRU (Dense, Dense if not recurrent)")
    recurrent: bool = field(True, doc="GRU in the torso (HARL SMAC use_recurrent_policy, 7 of 10 maps)")
    layer_norm: bool = field(True, doc="LayerNorm on the input and after the hidden layers (HARL "
                                       "use_feature_normalization and its MLP's LayerNorms)")
    lr: float = field(5e-4, low=0.0, low_open=True, doc="Adam learning rate, actors and critic (HARL lr, critic_lr)")
    adam_eps: float = field(1e-5, low=0.0, low_open=True, doc="Adam eps (HARL opti_eps)")
    gae_lambda: float = field(0.95, low=0.0, high=1.0)
    epochs: int = field(5, low=1, doc="passes over each rollout, per agent and for the critic (HARL ppo_epoch, "
                                      "critic_epoch)")
    num_minibatches: int = field(1, low=1, doc="minibatches per epoch, split over envs (HARL actor_num_mini_batch, "
                                               "critic_num_mini_batch)")
    clip: float = field(0.2, low=0.0, low_open=True, doc="PPO ratio clip (HARL clip_param)")
    value_clip: float = field(0.2, low=0.0, doc="clipped value loss range, 0 = unclipped (HARL clips with clip_param)")
    huber_delta: float = field(10.0, low=0.0, doc="Huber value loss delta, 0 = squared error")
    value_coef: float = field(1.0, low=0.0, doc="weight of the critic's loss (HARL value_loss_coef)")
    value_norm: bool = field(True, doc="normalise value targets by running statistics (HARL use_valuenorm)")
    value_norm_beta: float = field(0.99999, low=0.0, high=1.0, low_open=True)
    ent_coef: float = field(0.01, low=0.0, doc="entropy bonus (HARL entropy_coef)")
    ent_coef_final: float | None = field(None, low=0.0, doc="linear anneal of ent_coef to this (None = fixed)")
    ent_anneal_frac: float = field(1.0, low=0.0, high=1.0, low_open=True, doc="fraction of the run the anneal takes")
    max_grad_norm: float = field(10.0, low=0.0, low_open=True, doc="gradient norm clip, each actor and the critic")
    norm_adv: bool = field(True, doc="normalise the advantage per agent over its active steps (HARL always does)")
    active_masks: bool = field(True, doc="leave dead agents' steps out of their losses and advantage statistics "
                                         "(HARL use_policy_active_masks)")
    fixed_order: bool = field(False, doc="update the agents in the order 0..n-1 instead of a random permutation "
                                         "per update (HARL fixed_order)")
    log_std_init: float = field(-1.0064, doc="continuous actions: the initial log-std of each agent's Gaussian "
                                              "(HARL's initial std 0.5 sigmoid(1) = 0.366)",
                                absent_means_default=True)


# HARL's tuned SMAC configs (tuned_configs/smac/<map>/happo/config.json) on the maps SMAX has: clip_param,
# which also clips the value loss, gamma, ppo_epoch, mini-batches and recurrence where they differ from the
# defaults (25m and 3s5z use the defaults).
ENV_DEFAULTS = {
    "smax_5m_vs_6m": {"clip": 0.05, "value_clip": 0.05, "gamma": 0.95},
    "smax_10m_vs_11m": {"clip": 0.05, "value_clip": 0.05, "gamma": 0.95},
    "smax_27m_vs_30m": {"clip": 0.05, "value_clip": 0.05, "gamma": 0.95},
    "smax_3s5z_vs_3s6z": {"clip": 0.1, "value_clip": 0.1, "gamma": 0.95, "num_minibatches": 2},
    "smax_6h_vs_8z": {"clip": 0.05, "value_clip": 0.05, "gamma": 0.95, "epochs": 10, "num_minibatches": 2,
                      "recurrent": False},
    # HARL's tuned multi-agent MuJoCo configs (Hopper-v2-3x1 and the others): a 3 x 128 MLP, clip 0.05, 10
    # epochs, no entropy bonus, 20 envs x 200 steps (HARL's linear lr decay is not built: lr stays 5e-4)
    **dict.fromkeys(("mamujoco", "mamujoco_"), {
        "recurrent": False, "num_layers": 3, "hidden_dim": 128, "clip": 0.05, "value_clip": 0.05, "epochs": 10,
        "ent_coef": 0.0, "num_envs": 20, "num_steps": 200}),
}

VARIANTS = {"happo": {}}


def happo_surrogate(ratio: jax.Array, adv: jax.Array, factor: jax.Array, clip: float | jax.Array) -> jax.Array:
    """M * min(r A, clip(r, 1 - eps, 1 + eps) A), elementwise: HAPPO's objective per sample (to maximise)."""
    return factor * jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv)


def sequential_update(order: jax.Array, carry: Any, factor0: jax.Array,
                      update_agent: Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array, Any]]):
    """The agents' updates one after another in ``order`` (a scan over positions).

    ``update_agent(carry, agent, factor, position) -> (carry, log_ratio, stats)`` updates one agent with the
    factor M of the agents before it and returns log(pi_new / pi_old) of that agent's taken actions after its
    update (shaped like ``factor0``); the next agent's factor is M * exp(log_ratio), detached. Returns
    (carry, the factor each position trained with [n, ...], stats stacked by position).
    """

    def body(c, xs):
        carry, factor = c
        position, agent = xs
        carry, log_ratio, stats = update_agent(carry, agent, factor, position)
        return (carry, factor * jnp.exp(jax.lax.stop_gradient(log_ratio))), (factor, stats)

    positions = jnp.arange(order.shape[0])
    (carry, _), (factors, stats) = jax.lax.scan(body, (carry, factor0), (positions, order))
    return carry, factors, stats


@struct.dataclass
class TrainState:
    params: Any  # {"actor": stacked on a leading agent axis, "critic": ...}
    opt_state: Any  # {"actor": per agent, stacked, "critic": ...}
    env_state: Any
    timestep: Any
    carries: Any  # (actor [E, N, H], critic [E, H])
    episode_start: jax.Array
    value_norm: ValueNorm
    key: jax.Array
    update_count: jax.Array
    env_steps: jax.Array


class HAPPO:
    """Heterogeneous-agent PPO; see the module docstring."""

    action_kinds = ("discrete", "continuous")  # categorical or diagonal Gaussian policies

    # Config keys read only as traced numbers, so a sweep over them is one vmapped program (jmarl/sweep.py).
    sweepable = ("lr", "adam_eps", "max_grad_norm", "gamma", "gae_lambda", "clip", "ent_coef", "ent_coef_final",
                 "value_coef", "value_norm_beta")

    def __init__(self, config: HAPPOConfig):
        self.config = cfg = config
        onpolicy.check_minibatches(cfg.num_envs, cfg.num_minibatches)
        self.env = envs.wrap(envs.make(cfg.env))  # own parameters per agent: no agent id needed
        spec = self.env.spec
        self.n, self.num_actions = spec.num_agents, spec.num_actions
        self.dist = distributions.for_spec(spec)
        self.steps_per_update = cfg.num_envs * cfg.num_steps
        net = dict(num_agents=self.n, num_actions=self.num_actions, hidden_dim=cfg.hidden_dim,
                   num_layers=cfg.num_layers, recurrent=cfg.recurrent, layer_norm=cfg.layer_norm, attention=False)
        self.actor = TADNet(self.num_actions, small_init=True, **net)  # one agent's policy
        self.critic = TADNet(1, **net)  # V(s)
        # one transformation for every actor (applied to one agent at a time) and for the critic
        self.tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=cfg.adam_eps))

    # ----- networks -----------------------------------------------------------------------------

    def actor_step(self, p, carry, obs, reset, avail):
        """One agent's policy on its own parameters: carry [..., H], obs [..., D], reset [...] -> (carry, the
        distribution's parameters: log-probabilities [..., A] with unavailable actions at 0 probability, or
        the Gaussian's mean and log-std [..., 2A]). A continuous actor's parameters are {"net", "log_std"}."""
        net = p["net"] if self.dist.continuous else p
        carry, h = self.actor.apply(net, carry, obs, reset, method=TADNet.features)
        out = self.actor.apply(net, h, None, method=TADNet.output)
        if self.dist.continuous:
            return carry, distributions.gaussian_params(out, p["log_std"], avail)
        return carry, self.dist.from_head(mask_actions(out, avail))

    def policy(self, actor_params, carry, obs, reset, avail):
        """Every agent on its own parameters (vmap over the agent axis): carry [B, N, H], obs [B, N, D],
        reset [B], avail [B, N, A] -> (carry, distribution parameters [B, N, A or 2A])."""
        return jax.vmap(self.actor_step, in_axes=(0, 1, 1, None, 1), out_axes=1)(actor_params, carry, obs, reset,
                                                                                  avail)

    def value_step(self, p, carry, state, reset):
        """V(s), normalised: carry [..., H], state [..., S] -> (carry, value [...])."""
        carry, h = self.critic.apply(p, carry, state, reset, method=TADNet.features)
        return carry, self.critic.apply(p, h, None, method=TADNet.output)[..., 0]

    def _over_time(self, step, carry0, xs):
        """``step(carry, *x) -> (carry, y)`` over a [T, E, ...] trajectory from the first carry: scanned with a
        GRU, one batched call without (a feed-forward torso passes the carry through unread)."""
        if not self.config.recurrent:
            return step(carry0, *xs)[1]
        return jax.lax.scan(lambda c, x: step(c, *x), carry0, xs)[1]

    def agent_policy(self, p, carry0, data):
        """One agent's distribution parameters [T, E, A or 2A] over its trajectory ``data`` (:meth:`agent_data`)."""
        return self._over_time(functools.partial(self.actor_step, p), carry0,
                               (data["obs"], data["reset"], data["avail"]))

    def replay_values(self, p, carry0, state, reset):
        """V(s) [T, E] over a trajectory."""
        return self._over_time(functools.partial(self.value_step, p), carry0, (state, reset))

    def init_carries(self, batch: int):
        h = self.config.hidden_dim
        return (jnp.zeros((batch, self.n, h)), jnp.zeros((batch, h)))

    # ----- protocol ------------------------------------------------------------------------------

    def init(self, key: jax.Array) -> TrainState:
        cfg = self.config
        k_actor, k_critic, k_env, k_state = jax.random.split(key, 4)
        spec = self.env.spec
        carry, reset, action = jnp.zeros((1, cfg.hidden_dim)), jnp.ones(1, bool), jnp.zeros(1, jnp.int32)
        init_net = lambda k: self.actor.init(k, carry, jnp.zeros((1, spec.obs_dim)), reset, action)  # noqa: E731
        if self.dist.continuous:
            log_std = jnp.full(self.num_actions, cfg.log_std_init, jnp.float32)
            init_actor = lambda k: {"net": init_net(k), "log_std": log_std}  # noqa: E731
        else:
            init_actor = init_net
        params = {"actor": jax.lax.map(init_actor, jax.random.split(k_actor, self.n)),
                  "critic": self.critic.init(k_critic, carry, jnp.zeros((1, spec.state_dim)), reset, action)}
        opt_state = {"actor": jax.vmap(self.tx.init)(params["actor"]), "critic": self.tx.init(params["critic"])}
        env_state, ts = jax.vmap(self.env.reset)(jax.random.split(k_env, cfg.num_envs))
        return TrainState(params, opt_state, env_state, ts, self.init_carries(cfg.num_envs),
                          jnp.ones(cfg.num_envs, bool), ValueNorm.zeros(), k_state, jnp.zeros((), jnp.int32),
                          jnp.zeros((), jnp.int32))

    def collect(self, state: TrainState):
        """Run ``num_steps`` steps in every env; returns (state, trajectory [T, E, ...])."""
        cfg = self.config
        params = state.params

        def step(carry, key):
            env_state, ts, (actor_carry, critic_carry), start = carry
            k_act, k_env = jax.random.split(key)
            actor_carry, policy = self.policy(params["actor"], actor_carry, ts.obs, start, ts.avail_actions)
            critic_carry, values = self.value_step(params["critic"], critic_carry, ts.state, start)
            actions = distributions.sample_actions(self.dist, k_act, policy, ts.avail_actions)
            env_state, next_ts = jax.vmap(self.env.step)(jax.random.split(k_env, cfg.num_envs), env_state, actions)
            # V of the state after this step (the terminal one where the episode ended) with the critic carry
            # after this step: bootstraps truncation exactly.
            _, next_values = self.value_step(params["critic"], critic_carry, next_ts.info["final_state"],
                                             jnp.zeros_like(start))
            out = onpolicy.step_record(ts, next_ts, start, actions,
                                       self.dist.log_prob(policy, actions, ts.avail_actions), values, next_values,
                                       cfg.active_masks)
            out["state"] = ts.state
            return (env_state, next_ts, (actor_carry, critic_carry), next_ts.done), out

        return onpolicy.rollout(state, step, cfg.num_steps, self.steps_per_update)

    def advantages(self, traj, value_norm: ValueNorm) -> tuple[jax.Array, jax.Array]:
        """Joint (advantages, return targets) [T, E] in the env's reward scale, GAE on V(s)."""
        cfg = self.config
        denorm = value_norm.denormalize if cfg.value_norm else (lambda x: x)
        return gae(traj["reward"], denorm(traj["values"]), denorm(traj["next_values"]), traj["terminated"],
                   traj["done"], cfg.gamma, cfg.gae_lambda)

    def agent_advantages(self, adv: jax.Array, traj) -> jax.Array:
        """The joint advantage [T, E] for every agent [T, E, N], normalised per agent over its active steps."""
        adv = jnp.broadcast_to(adv[..., None], adv.shape + (self.n,))
        if self.config.norm_adv:
            adv = onpolicy.masked_normalise(adv, onpolicy.active_steps(traj), axis=(0, 1))
        return adv

    def entropy_coef(self, update_count: jax.Array) -> jax.Array:
        return onpolicy.entropy_coef(self.config, self.steps_per_update, update_count)

    def agent_order(self, key: jax.Array) -> jax.Array:
        """The order of this update's agent updates: a permutation drawn from ``key`` (0..n-1 if fixed)."""
        if self.config.fixed_order:
            return jnp.arange(self.n)
        return jax.random.permutation(key, self.n)

    @staticmethod
    def agent_data(traj, agent: jax.Array) -> dict[str, jax.Array]:
        """Agent ``agent``'s slice [T, E, ...] of the trajectory (``agent`` may be traced)."""
        out = {k: jnp.take(traj[k], agent, axis=2) for k in ("obs", "avail", "actions", "logp")}
        out["reset"] = traj["reset"]
        if onpolicy.active_steps(traj) is not None:
            out["active"] = jnp.take(traj["active"], agent, axis=2)
        return out

    def actor_loss(self, p, carry0, data, adv, factor, ent_coef):
        """One agent's negated HAPPO objective and entropy bonus, means over its active steps."""
        cfg = self.config
        mean = functools.partial(masked_mean, mask=data.get("active"))
        policy = self.agent_policy(p, carry0, data)
        log_ratio = self.dist.log_prob(policy, data["actions"], data["avail"]) - data["logp"]
        ratio = jnp.exp(log_ratio)
        policy_loss = -mean(happo_surrogate(ratio, adv, factor, cfg.clip))
        entropy = mean(self.dist.entropy(policy, data["avail"]))
        stats = {"policy_loss": policy_loss, "entropy": entropy, "approx_kl": mean((ratio - 1) - log_ratio),
                 "clip_frac": mean((jnp.abs(ratio - 1) > cfg.clip).astype(jnp.float32))}
        return policy_loss - ent_coef * entropy, stats

    def update_agent(self, actor_params, actor_opt, agent, factor, key, carries0, traj, adv, ent_coef):
        """Agent ``agent``'s epochs x minibatches with factor M [T, E]; only its slice of the stacked actor
        parameters and optimiser state changes. ``carries0`` [E, N, H], ``adv`` [T, E, N]. Returns (actor
        params, actor optimiser state, log-probabilities [T, E] of its taken actions after the update, stats)."""
        cfg = self.config
        pick = lambda tree: jax.tree.map(lambda x: x[agent], tree)  # noqa: E731
        put = lambda tree, sub: jax.tree.map(lambda x, y: x.at[agent].set(y), tree, sub)  # noqa: E731
        data, a, c0 = self.agent_data(traj, agent), jnp.take(adv, agent, axis=2), jnp.take(carries0, agent, axis=1)

        def minibatch(carry, idx):
            p, o = carry
            take = lambda x: jnp.take(x, idx, axis=1)  # noqa: E731  envs are axis 1 of [T, E, ...]
            p, o, _, stats, grad_norm = gradient_step(self.actor_loss, self.tx, p, o, jnp.take(c0, idx, axis=0),
                                                      jax.tree.map(take, data), take(a), take(factor), ent_coef)
            return (p, o), {**stats, "grad_norm": grad_norm}

        (p, o), stats = onpolicy.minibatch_epochs(pick(actor_params), pick(actor_opt), key, cfg.epochs, cfg.num_envs,
                                                  cfg.num_minibatches, minibatch)
        new_logp = self.dist.log_prob(self.agent_policy(p, c0, data), data["actions"], data["avail"])
        return put(actor_params, p), put(actor_opt, o), new_logp, stats

    def critic_loss(self, p, carry0, traj, targets):
        """Clipped Huber loss of V(s) against the normalised targets, mean over all steps."""
        cfg = self.config
        values = self.replay_values(p, carry0, traj["state"], traj["reset"])
        err = lambda pred: (optax.huber_loss(pred, targets, delta=cfg.huber_delta) if cfg.huber_delta > 0  # noqa: E731
                            else 0.5 * jnp.square(pred - targets))
        loss = err(values)
        if cfg.value_clip > 0:
            old = traj["values"]
            loss = jnp.maximum(loss, err(old + jnp.clip(values - old, -cfg.value_clip, cfg.value_clip)))
        value_loss = loss.mean()
        return cfg.value_coef * value_loss, {"value_loss": value_loss}

    def learn_critic(self, params, opt_state, key, carry0, traj, targets):
        cfg = self.config
        data = {k: traj[k] for k in ("state", "reset", "values")}

        def minibatch(carry, idx):
            p, o = carry
            take = lambda x: jnp.take(x, idx, axis=1)  # noqa: E731
            p, o, _, stats, grad_norm = gradient_step(self.critic_loss, self.tx, p, o, jnp.take(carry0, idx, axis=0),
                                                      jax.tree.map(take, data), take(targets))
            return (p, o), {**stats, "critic_grad_norm": grad_norm}

        return onpolicy.minibatch_epochs(params, opt_state, key, cfg.epochs, cfg.num_envs, cfg.num_minibatches,
                                         minibatch)

    def learn(self, state: TrainState, carries0, traj):
        cfg = self.config
        adv, targets = self.advantages(traj, state.value_norm)
        value_norm = state.value_norm
        if cfg.value_norm:
            value_norm = value_norm.update(targets, cfg.value_norm_beta)
            targets = value_norm.normalize(targets)
        adv = self.agent_advantages(adv, traj)
        ent_coef = self.entropy_coef(state.update_count)
        key, k_order, k_actors, k_critic = jax.random.split(state.key, 4)
        order = self.agent_order(k_order)
        actor_keys = jax.random.split(k_actors, self.n)  # by position in the order

        def update_agent(carry, agent, factor, position):
            params, opt = carry
            params, opt, new_logp, stats = self.update_agent(params, opt, agent, factor, actor_keys[position],
                                                             carries0[0], traj, adv, ent_coef)
            return (params, opt), new_logp - jnp.take(traj["logp"], agent, axis=2), stats

        (actor_params, actor_opt), factors, actor_stats = sequential_update(
            order, (state.params["actor"], state.opt_state["actor"]), jnp.ones(traj["reward"].shape), update_agent)
        (critic_params, critic_opt), critic_stats = self.learn_critic(
            state.params["critic"], state.opt_state["critic"], k_critic, carries0[1], traj, targets)
        state = state.replace(params={"actor": actor_params, "critic": critic_params},
                              opt_state={"actor": actor_opt, "critic": critic_opt}, value_norm=value_norm, key=key,
                              update_count=state.update_count + 1)
        metrics = {k: v.mean() for k, v in {**actor_stats, **critic_stats}.items()}
        metrics.update(ent_coef=ent_coef, factor_mean=factors.mean(), factor_max=factors.max())
        return state, metrics

    def update(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        return onpolicy.update(self, state)

    def act(self, params, carry, obs, avail, reset, key=None, greedy: bool = True):
        """Decentralised execution, each agent from its own observation and parameters: obs [B, N, D],
        carry [B, N, H], reset [B] -> (carry, actions [B, N])."""
        carry, policy = self.policy(params["actor"], carry, obs, reset, avail)
        if greedy:
            return carry, self.dist.mode(policy)
        return carry, distributions.sample_actions(self.dist, key, policy, avail)

    def greedy_policy(self, params, batch: int):
        """(initial carry, policy) for ``batch`` parallel episodes in ``evaluate_greedy``'s form: decentralised
        greedy execution for tools that only hold parameters (exported policies, rendering)."""
        return self.init_carries(batch)[0], lambda carry, obs, avail, reset: self.act(params, carry, obs, avail, reset)

    def evaluate(self, state: TrainState) -> dict[str, jax.Array]:
        """Greedy decentralised evaluation (keys as jmarl.evaluate: ``return``, ``won`` where the env has
        wins); ``score`` on matrix games."""
        return evaluate_with_score(self.env, functools.partial(self.greedy_policy, state.params),
                                   evaluation_key(state.key), self.config.eval_episodes)
