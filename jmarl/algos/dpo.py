"""DPO: fully decentralised policy optimisation (dpo.md eq. 20-21), and IPPO / IPPO-KL / ablations.

Discrete actions use a categorical policy, continuous ones (multi-agent MuJoCo) a diagonal Gaussian
(:mod:`jmarl.distributions`): the same objective, with log-probabilities, the KL and the entropy in the
Gaussian's closed form.

Each agent i maximises, on its own data,

    (1/N) E[ratio * A_i] - beta1_i E[sqrt(KL_s)] - beta2_i E[KL_s] + c_ent E[entropy],

with KL_s = KL(pi_old(.|o) || pi(.|o)) computed exactly from the stored old action distribution,
and after each update adapts its betas: both are multiplied by omega when the mean KL exceeds
d_target * delta and divided by omega when it is below d_target / delta (eq. 21).

Baselines are settings of the same learner: IPPO clips the ratio (clip=0.2) with no KL terms;
IPPO-KL has the adaptive KL term only (no sqrt term, no 1/N); DPO w/o sqrt and DPO w/o kl drop one
term each. By default nothing is shared: every agent has its own actor and critic (parameters
stacked on a leading agent axis and applied with vmap), and its critic sees only its own
observation (``centralised_critic`` and ``share_params`` are options; ``shared_layers`` lets actor and
critic share their first layers, as jaxmarl's IPPO does).

Every mean of the update (surrogate, KL terms, entropy, value loss, advantage normalisation, the KL
that adapts the betas) runs over the agent-steps the rollout records as active. ``active_masks`` (off
by default: dpo.md App. B bans MAPPO's SMAC tricks) records the env's ``TimeStep.active``, so the
steps of agents no longer in play (a dead SMAX unit, a removed predator) drop out; the step on which
an agent dies still counts, it acted. Off, every agent-step is recorded as active.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from jmarl import distributions, onpolicy
from jmarl.config import CommonConfig, ConfigError, field
from jmarl.evaluate import evaluate_greedy, evaluation_key
from jmarl.masks import masked_mean
from jmarl.networks import ActorCritic
from jmarl.optim import gradient_step
from jmarl.returns import gae


@dataclasses.dataclass(frozen=True)
class DPOConfig(CommonConfig):
    algo: str = "dpo"
    total_steps: int = field(1_000_000, low=1)
    num_envs: int = field(16, low=1)
    num_steps: int = field(128, low=1, doc="rollout length per update (per env)")
    lr: float = field(5e-4, low=0.0, low_open=True, doc="Adam learning rate, actor and critic")
    gae_lambda: float = field(0.95, low=0.0, high=1.0)
    epochs: int = field(15, low=1, doc="passes over each rollout")
    num_minibatches: int = field(1, low=1, doc="minibatches per epoch (split over envs)")
    hidden_dim: int = field(128, low=1)
    num_layers: int = field(3, low=1, doc="hidden layers of actor and critic")
    recurrent: bool = field(False, doc="GRU in place of the second hidden layer (partial observability)")
    layer_norm: bool = field(False, doc="LayerNorm on the input and after each hidden layer (author code)")
    share_params: bool = field(False, doc="one network for all agents (agent id appended to obs)")
    shared_layers: int = field(0, low=0, doc="first torso layers shared by actor and critic (0 = separate "
                                             "networks; jaxmarl's IPPO-RNN shares 2, its Dense and GRU)")
    centralised_critic: bool = field(False, doc="critics see the global state (+ agent id) instead of own obs")
    ent_coef: float = field(0.0, low=0.0, doc="entropy bonus (eq. 20 has none; IPPO and IPPO-KL keep MAPPO's 0.01; "
                                               "the author code adds 0.01 to DPO too, without the 1/N)")
    max_grad_norm: float = field(10.0, low=0.0, low_open=True, doc="per-agent gradient norm clip")
    value_clip: float = field(0.2, low=0.0, doc="clipped value loss range (0 = plain MSE)")
    clip: float = field(0.0, low=0.0, doc="PPO ratio clip (0 = none: DPO; 0.2 = IPPO)")
    use_sqrt: bool = field(True, doc="beta1 * sqrt(KL) term")
    use_kl: bool = field(True, doc="beta2 * KL term")
    inv_n: bool = field(True, doc="the 1/N factor on the surrogate (eq. 20)")
    beta_init: float = field(0.01, low=0.0, doc="initial beta1 and beta2 (paper 0.01; author code 1.0)")
    d_target: float = field(0.01, low=0.0, low_open=True, doc="KL target (per env family by default)")
    delta: float = field(1.5, low=1.0, doc="tolerance factor of the beta rule")
    omega: float = field(2.0, low=1.0, doc="multiplier of the beta rule")
    adapt_betas: bool = field(True, doc="adapt betas by eq. 21 after each update")
    final_kl: bool = field(True, doc="replay the policy after the epochs for the kl_final metric (one more "
                                     "forward pass; always done while betas adapt, which need it)")
    beta_shared: bool = field(False, doc="one adaptation from the mean KL of all agents (author code)")
    sqrt_target: bool = field(False, doc="adapt beta1 from mean sqrt(KL) against sqrt(d_target) (author code)")
    beta_min: float = field(0.0, low=0.0, doc="clamp betas from below (author code 1e-3)")
    beta_max: float = field(1e9, low=0.0, low_open=True, doc="clamp betas from above (author code 1e3)")
    kl_floor: float = field(1e-6, low=0.0, low_open=True, doc="sqrt(KL + floor) keeps the gradient finite at KL=0")
    active_masks: bool = field(False, doc="leave dead agents' steps out of losses, statistics and beta adaptation "
                                          "(MAPPO's SMAC trick; off: the paper bans it)")
    state_dependent_std: bool = field(False, doc="continuous actions: the Gaussian's log-std is an output of the "
                                                 "actor (off: one learned vector per agent, MAPPO's DiagGaussian)",
                                     absent_means_default=True)
    log_std_init: float = field(0.0, doc="continuous actions: the initial log-std (0: std 1, MAPPO's DiagGaussian)",
                                absent_means_default=True)


# The paper's d_target per env family, and recurrence where the env is partially observable.
ENV_DEFAULTS = {
    "stochastic_game": {"d_target": 0.1},
    "mpe_": {"d_target": 0.01},
    "smax_": {"d_target": 0.02, "recurrent": True},
    "mamujoco": {"d_target": 0.001},
    "mamujoco_": {"d_target": 0.001},
}

VARIANTS = {
    "dpo": {},
    "ippo": {"clip": 0.2, "use_sqrt": False, "use_kl": False, "inv_n": False, "adapt_betas": False,
             "final_kl": False, "ent_coef": 0.01},
    "ippo_kl": {"use_sqrt": False, "inv_n": False, "ent_coef": 0.01},
    "dpo_no_sqrt": {"use_sqrt": False},
    "dpo_no_kl": {"use_kl": False},
    # The author code's DPO (PKU-RL/DPO) where it departs from the paper, critic kept decentralised as the
    # paper's: the code's centralised V would give DPO information IPPO lacks (an option of its own).
    "dpo_author": {"beta_init": 1.0, "beta_shared": True, "sqrt_target": True, "beta_min": 1e-3, "beta_max": 1e3,
                   "inv_n": False, "ent_coef": 0.01, "layer_norm": True},
}


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    env_state: Any
    timestep: Any
    carries: Any
    episode_start: jax.Array
    betas: jax.Array  # [N, 2]: (beta1 for sqrt(KL), beta2 for KL)
    key: jax.Array
    update_count: jax.Array
    env_steps: jax.Array


class DPO:
    """The decentralised on-policy learner; see the module docstring for the objectives."""

    action_kinds = ("discrete", "continuous")  # categorical or diagonal Gaussian policies

    # Config keys read only as traced numbers, so a sweep over them is one vmapped program (jmarl/sweep.py).
    sweepable = ("lr", "max_grad_norm", "gamma", "gae_lambda", "ent_coef", "beta_init", "d_target", "delta", "omega",
                 "beta_min", "beta_max", "kl_floor")

    def __init__(self, config: DPOConfig):
        self.config = config
        onpolicy.check_minibatches(config.num_envs, config.num_minibatches)
        if config.shared_layers and config.centralised_critic:
            raise ConfigError("shared_layers > 0 feeds the critic the actor's input through the shared layers; "
                              "it cannot be combined with centralised_critic")
        self.env = envs.wrap(envs.make(config.env), agent_id=config.share_params)
        spec = self.env.spec
        self.n, self.num_actions = spec.num_agents, spec.num_actions
        self.steps_per_update = config.num_envs * config.num_steps
        self.dist = distributions.for_spec(spec)
        self.net = ActorCritic(spec.num_actions, config.hidden_dim, config.num_layers, config.recurrent,
                               config.layer_norm, config.shared_layers, spec.continuous, config.state_dependent_std,
                               config.log_std_init)
        self.tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr, eps=1e-5))
        # parameters: shared -> one tree (in_axes None); independent -> stacked on axis 0
        self.param_axis = None if config.share_params else 0
        critic_dim = spec.state_dim + spec.num_agents if config.centralised_critic else spec.obs_dim
        self.critic_dim = critic_dim

    # ----- networks over agents -------------------------------------------------------------

    def critic_inputs(self, ts) -> jax.Array:
        """[..., N, critic_dim]: own obs (decentralised) or global state + agent id."""
        if not self.config.centralised_critic:
            return ts.obs
        return self._state_with_ids(ts.state)

    def _state_with_ids(self, state: jax.Array) -> jax.Array:
        ids = jnp.broadcast_to(jnp.eye(self.n), state.shape[:-1] + (self.n, self.n))
        tiled = jnp.broadcast_to(state[..., None, :], state.shape[:-1] + (self.n, state.shape[-1]))
        return jnp.concatenate([tiled, ids], axis=-1)

    def apply(self, params, carries, obs, critic_obs, avail, reset):
        """Batched over envs: obs [E, N, D] ... -> carries, policy heads [E, N, A] (Gaussian: [E, N, 2A]),
        values [E, N]."""
        to_agent = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731  [E, N, ...] -> [N, E, ...]
        reset_n = jnp.broadcast_to(reset[None], (self.n,) + reset.shape)
        f = jax.vmap(self.net.apply, in_axes=(self.param_axis, 0, 0, 0, 0, 0))
        carries, logits, values = f(params, carries, to_agent(obs), to_agent(critic_obs), to_agent(avail), reset_n)
        return carries, to_agent(logits), to_agent(values)

    def init_carries(self, batch: int):
        h = self.config.hidden_dim
        return (jnp.zeros((self.n, batch, h)), jnp.zeros((self.n, batch, h)))

    # ----- protocol ------------------------------------------------------------------------

    def init(self, key: jax.Array) -> TrainState:
        cfg = self.config
        k_params, k_env, k_state = jax.random.split(key, 3)
        spec = self.env.spec
        dummy = (jnp.zeros((1, cfg.hidden_dim)), jnp.zeros((1, cfg.hidden_dim)))
        init_one = lambda k: self.net.init(  # noqa: E731
            k, dummy, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, self.critic_dim)),
            jnp.ones((1, self.num_actions), bool), jnp.zeros((1,), bool))
        if cfg.share_params:
            params = init_one(k_params)
            opt_state = self.tx.init(params)
        else:
            params = jax.lax.map(init_one, jax.random.split(k_params, self.n))
            opt_state = jax.vmap(self.tx.init)(params)
        env_state, ts = jax.vmap(self.env.reset)(jax.random.split(k_env, cfg.num_envs))
        betas = jnp.stack([jnp.full(self.n, cfg.beta_init * cfg.use_sqrt),
                           jnp.full(self.n, cfg.beta_init * cfg.use_kl)], axis=1)
        return TrainState(params, opt_state, env_state, ts, self.init_carries(cfg.num_envs),
                          jnp.ones(cfg.num_envs, bool), betas, k_state, jnp.zeros((), jnp.int32),
                          jnp.zeros((), jnp.int32))

    def collect(self, state: TrainState):
        """Run ``num_steps`` steps in every env; returns (state, trajectory [T, E, ...])."""
        cfg = self.config

        def step(carry, key):
            env_state, ts, carries, start = carry
            k_act, k_env = jax.random.split(key)
            new_carries, head, values = self.apply(
                params, carries, ts.obs, self.critic_inputs(ts), ts.avail_actions, start)
            policy = self.dist.from_head(head)
            actions = distributions.sample_actions(self.dist, k_act, policy, ts.avail_actions)
            env_state, next_ts = jax.vmap(self.env.step)(jax.random.split(k_env, cfg.num_envs), env_state, actions)
            # V of the observation after this step (the terminal one where the episode ended),
            # from the critic carry after this step: bootstraps truncation exactly.
            final = next_ts.replace(obs=next_ts.info["final_obs"], state=next_ts.info["final_state"],
                                    avail_actions=next_ts.info["final_avail_actions"])
            _, _, next_values = self.apply(params, new_carries, final.obs, self.critic_inputs(final),
                                           final.avail_actions, jnp.zeros_like(start))
            # "logp" holds the behaviour policy's whole distribution (log-probabilities, or the Gaussian's
            # mean and log-std), so the KL terms are exact
            out = onpolicy.step_record(ts, next_ts, start, actions, policy, values, next_values, cfg.active_masks)
            if cfg.centralised_critic:  # a decentralised critic reads obs: stored once, gathered once
                out["critic_obs"] = self.critic_inputs(ts)
            return (env_state, next_ts, new_carries, next_ts.done), out

        params = state.params
        return onpolicy.rollout(state, step, cfg.num_steps, self.steps_per_update)

    @staticmethod
    def _critic_obs(traj: dict[str, jax.Array]) -> jax.Array:
        """The critic's recorded input: the world state where the critic is centralised, else the observation."""
        return traj.get("critic_obs", traj["obs"])

    def _replay(self, params, carries0, traj):
        """Recompute the policy's distribution parameters and values over a trajectory [T, E, ...] from the
        rollout's first carries.

        A feed-forward network carries nothing from step to step, so it evaluates all T x E steps in one
        batched pass (on CPU 2.4x faster learning than a scan over T); a GRU is scanned step by step.
        """
        if not self.config.recurrent:
            t, e = traj["obs"].shape[:2]
            flat = lambda x: x.reshape((t * e,) + x.shape[2:])  # noqa: E731
            _, head, values = self.apply(params, carries0, flat(traj["obs"]), flat(self._critic_obs(traj)),
                                         flat(traj["avail"]), flat(traj["reset"]))
            unflat = lambda x: x.reshape((t, e) + x.shape[1:])  # noqa: E731
            return unflat(self.dist.from_head(head)), unflat(values)

        def step(carries, x):
            carries, head, values = self.apply(params, carries, x["obs"], self._critic_obs(x), x["avail"],
                                               x["reset"])
            return carries, (self.dist.from_head(head), values)

        _, (logp, values) = jax.lax.scan(step, carries0, traj)
        return logp, values

    def loss(self, params, betas, carries0, traj, adv, targets):
        """Sum over agents of the negated objectives, plus the value losses; per-agent stats."""
        cfg = self.config
        active = onpolicy.active_steps(traj)
        policy, values = self._replay(params, carries0, traj)  # [T, E, N, A] (Gaussian 2A), [T, E, N]
        avail = traj["avail"]
        logp_a = self.dist.log_prob(policy, traj["actions"], avail)
        logp_old_a = self.dist.log_prob(traj["logp"], traj["actions"], avail)
        ratio = jnp.exp(logp_a - logp_old_a)
        kl = self.dist.kl(traj["logp"], policy, avail)  # exact, per state: [T, E, N]
        mean = lambda x: masked_mean(x, active, axis=(0, 1))  # noqa: E731  -> per agent [N]
        if cfg.clip > 0:
            surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
        else:
            surrogate = ratio * adv
        if cfg.inv_n:
            surrogate = surrogate / self.n
        entropy = mean(self.dist.entropy(policy, avail))
        objective = (mean(surrogate) - betas[:, 0] * mean(jnp.sqrt(kl + cfg.kl_floor)) - betas[:, 1] * mean(kl)
                     + cfg.ent_coef * entropy)
        old_v = traj["values"]
        v_err = jnp.square(values - targets)
        if cfg.value_clip > 0:
            clipped = old_v + jnp.clip(values - old_v, -cfg.value_clip, cfg.value_clip)
            v_err = jnp.maximum(v_err, jnp.square(clipped - targets))
        value_loss = 0.5 * mean(v_err)
        total = jnp.sum(-objective + value_loss)
        return total, {"value_loss": value_loss.mean(), "kl": masked_mean(kl, active),
                       "entropy": entropy.mean()}

    def adapt_betas(self, betas: jax.Array, kl_per_state: jax.Array, active: jax.Array | None = None) -> jax.Array:
        """Eq. 21 (per agent by default): x omega above d_target*delta, / omega below d_target/delta.

        With ``active`` [T, E, N] the mean KL is over each agent's active steps; an agent with none keeps
        its betas (no evidence either way), and the shared rule averages the agents that had some.
        """
        cfg = self.config
        if not cfg.adapt_betas:
            return betas
        kl_mean = masked_mean(kl_per_state, active, axis=(0, 1))  # [N]
        sqrt_mean = masked_mean(jnp.sqrt(kl_per_state + cfg.kl_floor), active, axis=(0, 1))
        seen = None if active is None else active.any(axis=(0, 1))  # [N]: agents with an active step
        if cfg.beta_shared:
            kl_mean, sqrt_mean = (jnp.full_like(m, masked_mean(m, seen)) for m in (kl_mean, sqrt_mean))
            seen = None if seen is None else jnp.full_like(seen, seen.any())
        measure = jnp.stack([sqrt_mean if cfg.sqrt_target else kl_mean, kl_mean], axis=1)
        target = jnp.array([jnp.sqrt(cfg.d_target) if cfg.sqrt_target else cfg.d_target, cfg.d_target])
        factor = jnp.where(measure > target * cfg.delta, cfg.omega, jnp.where(measure < target / cfg.delta,
                                                                               1.0 / cfg.omega, 1.0))
        if seen is not None:
            factor = jnp.where(seen[:, None], factor, 1.0)
        new = jnp.clip(betas * factor, cfg.beta_min, cfg.beta_max)
        enabled = jnp.array([cfg.use_sqrt, cfg.use_kl], jnp.float32)
        return new * enabled

    def learn(self, state: TrainState, carries0, traj):
        cfg = self.config
        adv, targets = gae(traj["reward"][..., None], traj["values"], traj["next_values"],
                           traj["terminated"][..., None], traj["done"][..., None], cfg.gamma, cfg.gae_lambda)
        active = onpolicy.active_steps(traj)
        adv = onpolicy.masked_normalise(adv, active, axis=(0, 1))  # per agent over the (active) batch

        def minibatch(carry, idx):
            params, opt_state = carry
            take = lambda x: jnp.take(x, idx, axis=1)  # noqa: E731  envs are axis 1 of [T, E, ...]
            c0 = jax.tree.map(lambda c: jnp.take(c, idx, axis=1), carries0)  # carries are [N, E, H]
            # independent parameters: per-agent clipping and Adam, so agents stay independent learners
            params, opt_state, _, stats, grad_norm = gradient_step(
                self.loss, self.tx, params, opt_state, state.betas, c0, jax.tree.map(take, traj), take(adv),
                take(targets), per_agent=not cfg.share_params)
            return (params, opt_state), {**stats, "grad_norm": grad_norm}  # norm before clipping, all agents

        key, k_epochs = jax.random.split(state.key)
        (params, opt_state), stats = onpolicy.minibatch_epochs(state.params, state.opt_state, k_epochs, cfg.epochs,
                                                               cfg.num_envs, cfg.num_minibatches, minibatch)
        metrics = {k: v.mean() for k, v in stats.items()}
        betas = state.betas
        if cfg.final_kl or cfg.adapt_betas:
            policy_new, _ = self._replay(params, carries0, traj)
            kl_final = self.dist.kl(traj["logp"], policy_new, traj["avail"])
            betas = self.adapt_betas(state.betas, kl_final, active)
            metrics["kl_final"] = masked_mean(kl_final, active)
        metrics.update(beta_sqrt=betas[:, 0].mean(), beta_kl=betas[:, 1].mean())
        state = state.replace(params=params, opt_state=opt_state, betas=betas, key=key,
                              update_count=state.update_count + 1)
        return state, metrics

    def update(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        return onpolicy.update(self, state)

    def act(self, params, carries, obs, avail, reset, key=None, greedy: bool = True):
        """Decentralised execution: each agent from its own observation; obs [E, N, D]."""
        dummy_critic = jnp.zeros(obs.shape[:-1] + (self.critic_dim,))
        carries, head, _ = self.apply(params, carries, obs, dummy_critic, avail, reset)
        policy = self.dist.from_head(head)
        if greedy:
            return carries, self.dist.mode(policy)
        return carries, distributions.sample_actions(self.dist, key, policy, avail)

    def greedy_policy(self, params, batch: int):
        """(initial carry, policy) for ``batch`` parallel episodes in ``evaluate_greedy``'s form: decentralised
        greedy execution for tools that only hold parameters (exported policies, rendering)."""
        return self.init_carries(batch), lambda carry, obs, avail, reset: self.act(params, carry, obs, avail, reset)

    def evaluate(self, state: TrainState) -> dict[str, jax.Array]:
        cfg = self.config
        key = evaluation_key(state.key)

        def policy(carries, obs, avail, reset):
            return self.act(state.params, carries, obs, avail, reset, greedy=True)

        return evaluate_greedy(self.env, policy, self.init_carries(cfg.eval_episodes), key, cfg.eval_episodes)
