"""QTRAN-base (Son et al., 2019, "QTRAN: Learning to Factorize with Transformation for Cooperative
Multi-Agent Reinforcement Learning"), as pymarl's ``qtran_learner`` with the ``qtran_base`` mixer, on the
shared off-policy core (jmarl.offpolicy).

Networks:

- the agents: the core's recurrent :class:`~jmarl.offpolicy.AgentQNetwork` (utilities Q_i(tau_i, .)),
  which act greedily; the core's ``agent_qs_and_hidden`` also returns each step's GRU output h_i.
- the joint action-value Q_jt(s, u) (:class:`JointQ`): with ``qtran_arch="qtran_paper"`` every agent's
  [h_i, one-hot u_i] goes through one shared encoder (Dense(H + A) + ReLU + Dense(H + A), H the agent
  width, A the action count: pymarl's width, not the embed width), the encodings are summed over agents
  and concatenated after the state; with ``"coma_critic"`` the input is [s, one-hot u_1 .. u_N] and no
  hidden state. Then an MLP: ``network_size="small"`` two hidden layers of ``mixing_embed_dim`` (ReLU),
  ``"big"`` three, and a scalar head.
- the state value V_jt(s) (:class:`StateValue`): the same MLP on the state alone.

Loss = td_loss + ``opt_loss`` * opt_loss + ``nopt_min_loss`` * nopt_loss, each a masked mean of squares
over valid steps (no 0.5 factor, as pymarl), with ū the online agents' greedy actions over available
actions:

- td: Q_jt(s_t, h_t, u_t) regressed to y_t = r_t + gamma (1 - terminated_t) Q_jt^-(s_{t+1}, h^-_{t+1},
  u'_{t+1}), y detached. Q_jt^- is the target joint network fed the *target* agents' hidden states h^-;
  u' = ū (the online agents' greedy actions, ``double_q``, pymarl's default) or, with ``double_q=False``,
  the target agents' greedy actions. pymarl's qtran learner uses one-step targets: hence ``td_lambda`` =
  0 by default (the core's TD(lambda) with lambda 0 is exactly that one-step target; a positive lambda is
  an extension).
- opt: (sum_i Q_i(tau_i, ū_i) - Q_jt(s, h, ū) + V_jt(s))^2 with Q_jt the *online* joint network at the
  greedy joint action (pymarl: online, not target, networks here), detached;
- nopt_min: (min(sum_i Q_i(tau_i, u_i) - Q_jt(s, h, u) + V_jt(s), 0))^2 at the taken actions, Q_jt
  (online, taken actions: the td term's prediction) detached.

Gradients (pymarl's): Q_jt learns from the td term only; V_jt from opt and nopt only; the agents from
opt and nopt through their utilities (the greedy utility is max_a Q_i, so its gradient reaches the
argmax entry) and from the td term through the hidden states that Q_jt reads (not detached in pymarl;
none with ``coma_critic``). The hidden state at step t is the GRU output after observation t.

Defaults are pymarl2's ``qtran.yaml`` (8 parallel envs, Adam, batch 128, buffer 5000 episodes, epsilon
1 -> 0.05 over 100k steps, one gradient step per 8 completed episodes, target copy every 200 episodes,
``mixing_embed_dim`` 64, ``qtran_paper``, ``small``, loss weights 1 and 0.1, double Q) over pymarl's
``default.yaml`` (lr 5e-4, gamma 0.99, clip 10, GRU 64). pymarl's original ``qtran.yaml`` differs in
RMSprop, batch 32, one env (one gradient step per episode) and a 50k-step anneal.
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
class QTRANConfig(OffPolicyConfig):
    """pymarl2's qtran.yaml over pymarl's default.yaml where they differ from the core (module docstring)."""

    algo: str = "qtran"
    lr: float = field(5e-4, low=0.0, low_open=True, doc="Adam learning rate (pymarl: 5e-4)")
    buffer_size: int = field(5_000, low=1, doc="replay capacity in episodes (per seed)")
    eps_start: float = field(1.0, low=0.0, high=1.0, doc="epsilon at step 0")
    td_lambda: float = field(0.0, low=0.0, high=1.0, doc="lambda of the TD(lambda) targets (pymarl's QTRAN: 0, "
                                                         "one-step)")
    mixing_embed_dim: int = field(64, low=1, doc="width of the Q_jt and V_jt MLPs")
    qtran_arch: str = field("qtran_paper", choices=("qtran_paper", "coma_critic"),
                            doc="Q_jt input: summed per-agent encodings of [h_i, u_i] (qtran_paper) or the one-hot "
                                "joint action (coma_critic), each with the state")
    network_size: str = field("small", choices=("small", "big"), doc="hidden layers of Q_jt and V_jt: 2 or 3")
    opt_loss: float = field(1.0, low=0.0, doc="weight of the opt loss (greedy joint action)")
    nopt_min_loss: float = field(0.1, low=0.0, doc="weight of the nopt-min loss (taken joint action)")
    double_q: bool = field(True, doc="bootstrap at the online agents' greedy actions (else the target agents')")
    updates_per_episode: float = field(0.125, low=0.0, doc="gradient steps per completed episode: pymarl2's one "
                                                           "per 8 (0 = a fixed train_steps per update)")


ENV_DEFAULTS: dict[str, dict[str, Any]] = {}

VARIANTS: dict[str, dict[str, Any]] = {"qtran": {}}


class MLP(nn.Module):
    """``layers`` hidden Dense + ReLU layers of ``width``, then a scalar head: [..., D] -> [...]."""

    width: int
    layers: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.layers):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(1)(x)[..., 0]


class JointQ(nn.Module):
    """Q_jt(s, u): state [..., S], agent hidden states [..., N, H] (unused by ``coma_critic``) and one-hot
    actions [..., N, A] -> [...]."""

    embed_dim: int = 64
    layers: int = 2
    arch: str = "qtran_paper"

    @nn.compact
    def __call__(self, state: jax.Array, hidden: jax.Array, actions_onehot: jax.Array) -> jax.Array:
        if self.arch == "coma_critic":
            joint = actions_onehot.reshape(actions_onehot.shape[:-2] + (-1,))
        else:
            x = jnp.concatenate([hidden, actions_onehot], axis=-1)
            width = x.shape[-1]
            joint = nn.Dense(width)(nn.relu(nn.Dense(width)(x))).sum(axis=-2)
        return MLP(self.embed_dim, self.layers)(jnp.concatenate([state, joint], axis=-1))


class StateValue(nn.Module):
    """V_jt(s): state [..., S] -> [...]."""

    embed_dim: int = 64
    layers: int = 2

    @nn.compact
    def __call__(self, state: jax.Array) -> jax.Array:
        return MLP(self.embed_dim, self.layers)(state)


# ----- the losses as pure functions of arrays ---------------------------------------------------


def opt_error(q_sum_greedy: jax.Array, q_jt_greedy: jax.Array, v: jax.Array) -> jax.Array:
    """sum_i Q_i(ū_i) - Q_jt(s, ū) + V_jt(s), with Q_jt detached."""
    return q_sum_greedy - jax.lax.stop_gradient(q_jt_greedy) + v


def nopt_error(q_sum_taken: jax.Array, q_jt_taken: jax.Array, v: jax.Array) -> jax.Array:
    """min(sum_i Q_i(u_i) - Q_jt(s, u) + V_jt(s), 0), with Q_jt detached: only a negative slack is penalised."""
    return jnp.minimum(q_sum_taken - jax.lax.stop_gradient(q_jt_taken) + v, 0.0)


# ----- the learner ------------------------------------------------------------------------------


class QTRAN(OffPolicyLearner):
    """QTRAN-base on the shared off-policy core; see the module docstring."""

    SWEEPABLE: ClassVar[tuple[str, ...]] = OffPolicyLearner.SWEEPABLE + ("opt_loss", "nopt_min_loss")

    def __init__(self, config: QTRANConfig):
        super().__init__(config)
        layers = 2 if config.network_size == "small" else 3
        self.joint_q = JointQ(config.mixing_embed_dim, layers, config.qtran_arch)
        self.value = StateValue(config.mixing_embed_dim, layers)

    def init_params(self, key: jax.Array) -> dict[str, Any]:
        k_agent, k_joint, k_value = jax.random.split(key, 3)
        state = jnp.zeros((1, self.spec.state_dim))
        hidden = jnp.zeros((1, self.n, self.config.hidden_dim))
        onehot = jnp.zeros((1, self.n, self.num_actions))
        return {"agent": self.init_agent(k_agent), "joint_q": self.joint_q.init(k_joint, state, hidden, onehot),
                "value": self.value.init(k_value, state)}

    def joint(self, params, state: jax.Array, hidden: jax.Array, actions: jax.Array) -> jax.Array:
        """Q_jt at integer joint actions [..., N]."""
        onehot = jax.nn.one_hot(actions, self.num_actions, dtype=hidden.dtype)
        return self.joint_q.apply(params["joint_q"], state, hidden, onehot)

    def terms(self, params, target_params, batch: replay.Episodes,
              hparams: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The three losses (scalars) and the per-step quantities [B, T] they are built from."""
        mask, state = batch.mask, batch.state
        q, h = self.agent_qs_and_hidden(params["agent"], batch)  # [B, T+1, N, A], [B, T+1, N, H]
        u_greedy = greedy(jax.lax.stop_gradient(q), batch.avail)  # online greedy actions [B, T+1, N]
        q_t, h_t = self.agent_qs_and_hidden(target_params["agent"], batch)
        u_next = u_greedy if self.config.double_q else greedy(q_t, batch.avail)
        boot = self.joint(target_params, state[:, 1:], h_t[:, 1:], u_next[:, 1:])  # [B, T]
        y = jax.lax.stop_gradient(td_lambda_targets(batch.reward, batch.terminated, mask, boot, hparams["gamma"],
                                                    hparams["td_lambda"]))

        q_jt = self.joint(params, state[:, :-1], h[:, :-1], batch.actions)  # taken actions
        q_jt_greedy = self.joint(params, state[:, :-1], h[:, :-1], u_greedy[:, :-1])
        v = self.value.apply(params["value"], state[:, :-1])
        q_sum_taken = take(q[:, :-1], batch.actions).sum(-1)
        q_sum_greedy = take(q[:, :-1], u_greedy[:, :-1]).sum(-1)

        td = q_jt - y
        opt = opt_error(q_sum_greedy, q_jt_greedy, v)
        nopt = nopt_error(q_sum_taken, q_jt, v)
        return {"td_loss": masked_mean(jnp.square(td), mask), "opt_loss": masked_mean(jnp.square(opt), mask),
                "nopt_loss": masked_mean(jnp.square(nopt), mask), "td": td, "y": y, "q_jt": q_jt, "v": v,
                "opt": opt, "nopt": nopt}

    def loss(self, params, target_params, batch: replay.Episodes, hparams: dict[str, jax.Array],
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        t = self.terms(params, target_params, batch, hparams)
        mask = batch.mask
        total = t["td_loss"] + hparams["opt_loss"] * t["opt_loss"] + hparams["nopt_min_loss"] * t["nopt_loss"]
        stats = {"td_loss": t["td_loss"], "opt_loss": t["opt_loss"], "nopt_loss": t["nopt_loss"],
                 "td_abs": masked_mean(jnp.abs(t["td"]), mask), "q_taken": masked_mean(t["q_jt"], mask),
                 "target": masked_mean(t["y"], mask), "value": masked_mean(t["v"], mask)}
        return total, stats
