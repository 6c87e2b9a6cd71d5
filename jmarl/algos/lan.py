"""LAN, Local Advantage Networks (lan.md §4, App. B, Algorithm 1), and as configurations of the same
learner IQL (no centralised value) and LAN-mean (App. D).

Each agent acts greedily on its local advantage A_a(tau_a, .): pymarl2's recurrent agent network (input
= observation, previous action, agent id; Dense 64 + ReLU, GRU 64, linear head), shared by all agents.
Training regresses, per agent, the Q-proxy Q~_a = V(s, tau) + A_a(tau_a, u_a) (eq. 1) to the double-DQN
target (eq. 3)

    y_a = r + gamma (1 - terminated) [V_target(s', tau') + A_target^a(tau'_a, argmax_u A^a(tau'_a, u))],

argmax over the available actions of the online network; the loss is the mean of (Q~_a - y_a)^2 over
agents and valid steps, so V gets N terms per transition. ``iql`` drops V: each agent's double DQN on
its own history. ``lan_mean`` subtracts the mean over all actions from A (eq. 6) wherever A is read in
the loss (acting is unchanged: the mean does not move the argmax).

The centralised value :class:`CentralValue` embeds per agent [h_a, o_a, u_a, one-hot a] (GRU output,
observation, previous action) with one shared Dense(128) + ReLU, sums the embeddings over agents (its
size does not grow with N beyond the input widths), concatenates the global state and applies two
hidden layers of 128 (ReLU) and a scalar head. With SMAC's dimensions this gives lan.md Table 3's
counts (56k on 5m_vs_6m, 111k on 27m_vs_30m; tests/algos/test_lan.py).

Schedule (App. B: "2 updates after every episode, target every 200 updates"), on the streaming core
(jmarl.offpolicy: one update = ``num_steps`` steps in each of ``num_envs`` envs, then learning):
- gradient steps per update = floor(k * E_after) - floor(k * E_before), k = ``updates_per_episode``
  (2) and E the count of completed episodes, run as a ``while_loop``: exactly k gradient steps per
  completed episode whatever the episode lengths (steps owed before the buffer holds ``batch_size``
  complete episodes are dropped, as pymarl2 waits for a full batch). ``updates_per_episode = 0`` falls
  back to the core's fixed ``train_steps`` per update.
- the target networks are copied right after every ``target_update_updates``-th gradient step (inside
  the loop, so exactly every 200 gradient steps); 0 falls back to the core's episode-based period.
- defaults 8 envs x 25 steps: about 200 env steps, i.e. a few episodes, between learning phases (the
  paper learns after each single episode); ``eval_every`` 50 updates = the paper's 10k env steps.

Choices where the paper is silent (config fields): V's gradient does not reach the agent GRU by default
(``value_grad_to_agent``); the embedding has a ReLU; LAN-mean averages over all actions (eq. 6's
1/|U_a|), not only the available ones; the squared TD error has no 0.5 factor ("mean square temporal
difference error", Algorithm 1); epsilon decays linearly (App. B; Algorithm 1's multiplicative decay has
no rate).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jmarl import replay
from jmarl.config import field
from jmarl.masks import masked_mean
from jmarl.offpolicy import (
    OffPolicyConfig,
    OffPolicyLearner,
    OffPolicyState,
    agent_inputs,
    copy_target,
    crossed_multiple,
    greedy,
    previous_actions,
    take,
    td_lambda_targets,
)
from jmarl.optim import gradient_step


@dataclasses.dataclass(frozen=True)
class LANConfig(OffPolicyConfig):
    """lan.md App. B: Adam 5e-4, gamma 0.99, clip 10, buffer 5000 episodes, batch 32 episodes, 2 gradient
    steps per episode, target copy every 200 gradient steps, epsilon 1 -> 0.05 over 50k steps, no TD(lambda)."""

    algo: str = "lan"
    lr: float = field(5e-4, low=0.0, low_open=True, doc="Adam learning rate")
    num_steps: int = field(25, low=0, doc="env steps per env per update (0 = the env's episode limit)")
    batch_size: int = field(32, low=1, doc="episodes per gradient step")
    buffer_size: int = field(5_000, low=1, doc="replay capacity in episodes (per seed)")
    td_lambda: float = field(0.0, low=0.0, high=1.0, doc="lambda of the TD(lambda) targets (LAN: 0, one-step)")
    eps_start: float = field(1.0, low=0.0, high=1.0, doc="epsilon at step 0")
    eps_anneal_steps: int = field(50_000, low=1, doc="env steps of the linear epsilon anneal")
    eval_every: int = field(50, low=1, doc="updates between greedy evaluations (50 x 8 x 25 = 10k env steps)")
    updates_per_episode: float = field(2.0, low=0.0, doc="gradient steps per completed episode (0 = a fixed "
                                                         "train_steps per update)")
    target_update_updates: int = field(200, low=0, doc="hard target copy every this many gradient steps (0 = "
                                                       "every target_update_episodes episodes)")
    centralised_value: bool = field(True, doc="learn Q~ = V + A (LAN); False: each agent's own DQN (IQL)")
    value_grad_to_agent: bool = field(False, doc="V's gradient also trains the agent network through h_a")
    lan_mean: bool = field(False, doc="subtract the mean over actions from A (LAN-mean, App. D)")
    value_embed_dim: int = field(128, low=1, doc="width of the shared per-agent embedding of V")
    value_hidden_dim: int = field(128, low=1, doc="width of V's two hidden layers")


# The paper's SMAC budget; everything else keeps the core's defaults.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {"smax_": {"total_steps": 2_000_000}}

VARIANTS: dict[str, dict[str, Any]] = {
    "lan": {},
    "iql": {"centralised_value": False},
    "lan_mean": {"lan_mean": True},
}


class CentralValue(nn.Module):
    """V(s, tau) from per-agent features [..., N, F] = [h_a, o_a, u_a, id] and the state [..., S] -> [...]."""

    embed_dim: int = 128
    hidden_dim: int = 128

    @nn.compact
    def __call__(self, agent_features: jax.Array, state: jax.Array) -> jax.Array:
        joint = nn.relu(nn.Dense(self.embed_dim)(agent_features)).sum(axis=-2)
        x = jnp.concatenate([joint, state], axis=-1)
        x = nn.relu(nn.Dense(self.hidden_dim)(x))
        x = nn.relu(nn.Dense(self.hidden_dim)(x))
        return nn.Dense(1)(x)[..., 0]


# ----- the target and loss as pure functions of arrays ------------------------------------------


def centred(adv: jax.Array) -> jax.Array:
    """Eq. 6: A - mean over all actions (last axis)."""
    return adv - adv.mean(axis=-1, keepdims=True)


def lan_targets(reward: jax.Array, terminated: jax.Array, mask: jax.Array, adv_next: jax.Array,
                adv_next_target: jax.Array, avail_next: jax.Array, v_next_target: jax.Array | None,
                gamma: jax.Array | float, lam: jax.Array | float | None = None) -> jax.Array:
    """Per-agent targets y [B, T, N] (eq. 3), batch-major.

    reward, terminated, mask [B, T]; adv_next / adv_next_target [B, T, N, A]: online / target advantages at
    the observation after each step; avail_next [B, T, N, A]; v_next_target [B, T] the target value there
    (None: IQL). One-step (LAN) when ``lam`` is None: y = r + gamma (1 - terminated) [V_t + A_t(argmax_avail A)];
    otherwise TD(lambda) returns over these bootstrap values (jmarl.offpolicy.td_lambda_targets, per agent).
    """
    boot = take(adv_next_target, greedy(adv_next, avail_next))
    if v_next_target is not None:
        boot = boot + v_next_target[..., None]
    if lam is None:
        return reward[..., None] + gamma * (1.0 - terminated[..., None].astype(boot.dtype)) * boot
    per_agent = jax.vmap(td_lambda_targets, in_axes=(None, None, None, 2, None, None), out_axes=2)
    return per_agent(reward, terminated, mask, boot, gamma, lam)


def lan_td_loss(q_taken: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of (Q~_a - y_a)^2 over agents and valid steps: q_taken, y [B, T, N], mask [B, T]."""
    return masked_mean(jnp.square(q_taken - y), jnp.broadcast_to(mask[..., None], q_taken.shape))


# ----- the learner ------------------------------------------------------------------------------


class LAN(OffPolicyLearner):
    """LAN / IQL / LAN-mean on the shared off-policy core; see the module docstring."""

    # td_lambda is read in Python (0 = the one-step targets without a scan), so it is not traced.
    SWEEPABLE: ClassVar[tuple[str, ...]] = tuple(k for k in OffPolicyLearner.SWEEPABLE if k != "td_lambda")

    def __init__(self, config: LANConfig):
        super().__init__(config)
        self.value = CentralValue(config.value_embed_dim, config.value_hidden_dim) if config.centralised_value else None

    def init_params(self, key: jax.Array) -> dict[str, Any]:
        k_agent, k_value = jax.random.split(key)
        params = {"agent": self.init_agent(k_agent)}
        if self.value is not None:
            features = jnp.zeros((1, self.n, self.config.hidden_dim + self.input_dim))
            params["value"] = self.value.init(k_value, features, jnp.zeros((1, self.spec.state_dim)))
        return params

    # ----- networks over an episode batch -------------------------------------------------------

    def hidden_and_advantages(self, agent_params, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Agent inputs [B, T+1, N, D] -> (GRU outputs h [B, T+1, N, H], advantages [B, T+1, N, A]), the GRU
        run from zero at t = 0 (the same network and inputs as acting)."""
        b = inputs.shape[0]
        no_reset = jnp.zeros((b, self.n), bool)

        def step(carry, x):
            carry, adv = self.agent.apply(agent_params, carry, x, no_reset)
            return carry, (carry, adv)

        carry0 = jnp.zeros((b, self.n, self.agent.hidden_dim))
        _, (h, adv) = jax.lax.scan(step, carry0, jnp.swapaxes(inputs, 0, 1))
        return jnp.swapaxes(h, 0, 1), jnp.swapaxes(adv, 0, 1)

    def networks(self, params, batch: replay.Episodes) -> tuple[jax.Array, jax.Array | None]:
        """(advantages [B, T+1, N, A] (centred with ``lan_mean``), V [B, T+1] or None) at every stored
        observation."""
        cfg = self.config
        inputs = agent_inputs(batch.obs, previous_actions(batch.actions), self.num_actions)
        h, adv = self.hidden_and_advantages(params["agent"], inputs)
        if cfg.lan_mean:
            adv = centred(adv)
        if self.value is None:
            return adv, None
        h_in = h if cfg.value_grad_to_agent else jax.lax.stop_gradient(h)
        v = self.value.apply(params["value"], jnp.concatenate([h_in, inputs], axis=-1), batch.state)
        return adv, v

    def q_proxy(self, params, batch: replay.Episodes) -> jax.Array:
        """Q~_a(s, tau, u) = V + A_a [B, T+1, N, A] (A alone for IQL)."""
        adv, v = self.networks(params, batch)
        return adv if v is None else adv + v[..., None, None]

    def loss(self, params, target_params, batch: replay.Episodes, hparams: dict[str, jax.Array],
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        adv, v = self.networks(params, batch)
        adv_t, v_t = self.networks(target_params, batch)
        y = lan_targets(batch.reward, batch.terminated, batch.mask, jax.lax.stop_gradient(adv[:, 1:]), adv_t[:, 1:],
                        batch.avail[:, 1:], None if v_t is None else v_t[:, 1:], hparams["gamma"],
                        self.config.td_lambda or None)
        y = jax.lax.stop_gradient(y)
        q_taken = take(adv[:, :-1], batch.actions)
        if v is not None:
            q_taken = q_taken + v[:, :-1, None]
        loss = lan_td_loss(q_taken, y, batch.mask)
        mask_n = jnp.broadcast_to(batch.mask[..., None], q_taken.shape)
        stats = {"td_abs": masked_mean(jnp.abs(q_taken - y), mask_n), "q_taken": masked_mean(q_taken, mask_n),
                 "target": masked_mean(y, mask_n)}
        if v is not None:
            stats["value"] = masked_mean(v[:, :-1], batch.mask)
        return loss, stats

    # ----- schedule: k gradient steps per completed episode, target copies every C steps ---------

    @property
    def fixed_steps(self) -> bool:
        """``updates_per_episode = 0``: ``train_steps`` gradient steps every update, known when compiling."""
        return self.config.updates_per_episode == 0

    def gradient_steps_due(self, episodes_before: jax.Array, episodes_after: jax.Array) -> jax.Array:
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
