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

Schedule (App. B: "2 updates after every episode, target every 200 updates"): the core's
(jmarl.offpolicy) ``updates_per_episode = 2`` (exactly 2 gradient steps per completed episode, whatever
the episode lengths) and ``target_update_updates = 200`` (a copy right after every 200th gradient step).
Defaults 8 envs x 25 steps: about 200 env steps, i.e. a few episodes, between learning phases (the paper
learns after each single episode); ``eval_every`` 50 updates = the paper's 10k env steps.

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

from jmarl import replay
from jmarl.config import field
from jmarl.masks import masked_mean
from jmarl.offpolicy import (
    OffPolicyConfig,
    OffPolicyLearner,
    greedy,
    take,
    td_lambda_targets,
)


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

    def networks(self, params, batch: replay.Episodes) -> tuple[jax.Array, jax.Array | None]:
        """(advantages [B, T+1, N, A] (centred with ``lan_mean``), V [B, T+1] or None) at every stored
        observation."""
        cfg = self.config
        inputs = self.episode_inputs(batch)
        adv, h = self.unroll(params["agent"], inputs, keep_hidden=True)
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
