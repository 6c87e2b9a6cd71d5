"""ReMIX (remix.md §4, Algorithm 1) and, as configurations of the same learner, QMIX, VDN, QPLEX, OW-QMIX
and CW-QMIX (WQMIX), with ReMIX's term ablations.

The learner is pymarl2's value decomposition on the shared off-policy core (jmarl.offpolicy): agent
utilities Q^a from a recurrent agent network, mixed into Q_tot by a mixer (``vdn`` sum, ``qmix``
hypernetwork mixer, or ``qplex`` duplex dueling mixer, jmarl.qplex), regressed with a masked 0.5 * mean
of weighted squared TD errors over valid steps.

- ``weighting="uniform"`` (QMIX, VDN, QPLEX): target y = r + gamma Q_tot^-(s', u') by TD(lambda), u' the online
  agents' greedy actions over available actions, Q_tot^- the target agents + target mixer (double Q).
  QPLEX's mixer also reads the joint action (taken, or u' in the target) and each agent's greedy
  utility (max over available actions, detached; the target agents' in the target), as the QPLEX
  authors' learner; its defaults are pymarl2's ``qplex.yaml`` (4 heads, 2-layer extractors, width 64).
- Weighted variants (WQMIX's learner): an unrestricted Q* (its own recurrent agent network and the
  feed-forward :class:`~jmarl.mixers.CentralMixer`). y = r + gamma Q*^-(s', u') by TD(lambda), u' the
  online QMIX agents' greedy joint action; Q* is regressed to y unweighted; Q_tot with the weights w:
  - ``ow``: w = 1 where Q_tot < y, else ``alpha``;
  - ``cw``: w = 1 where u is the QMIX greedy joint action or y > Q*^-(s, u_greedy), else ``alpha``;
  - ``remix`` (Theorem 1 without d^pi/mu): where Q_tot <= y,
    E = (y - Q_tot) * exp(Q* - Q_tot) * (sum_j (1 - pi^j) / f'_j - 1), elsewhere ``remix_eps``, with
    f'_j = dQ_tot/dQ^j by autodiff through the mixer and pi^j the Boltzmann probability (temperature
    ``temperature``, over available actions) of agent j's taken action under its utilities. Q* is the
    target Q*^- at the taken joint action (the paper's exp(Q*_{k-1} - Q_k): y is built from the same
    network); ``weight_q_star="online"`` uses the Q* regressed in the same step.

Choices where the paper is silent (all config fields):
- Mapping into [w_min, 1] (the paper maps the weights "to a given range" to stand in for the unknown
  normaliser Z*, under E_mu[w] = 1, and shows weights spread over [0.1, 1] in Fig. 3): per batch, over
  valid steps, ``weight_mapping="mean"`` (default) w = clip(E / mean(E), w_min, 1), so before clipping the
  batch mean is 1 and an average transition gets weight 1; ``"max"`` w = w_min + (1 - w_min) E / max(E),
  which one large E collapses to about w_min everywhere else (measured on predator-prey: median 0.102).
  E is handled in log space, so exp(Q* - Q_tot) never overflows; E is floored at ``remix_eps`` (a
  non-positive mixer-gradient term would otherwise give a negative weight), so overestimated transitions
  and such ones get about w_min.
- Schedule: pymarl2's one gradient step per 8 completed episodes (``updates_per_episode`` 0.125,
  jmarl.offpolicy), so that episodes that end early (a good predator-prey policy) bring more gradient
  steps, as in the paper's code.
- Ablations (``remix_bellman``, ``remix_underestimation``, ``remix_gradient`` = False) replace one factor
  by 1 and keep the others; the Q_tot <= y gate stays in every ablation (it is the KKT condition).
- Weights are constants of the loss (no gradient through them); Q* in the weight is detached.
- Both losses carry the 0.5 factor; the two are summed with equal weight, one optimiser for all networks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jmarl import replay
from jmarl.config import ConfigError, field
from jmarl.masks import mask_actions, masked_mean
from jmarl.mixers import CentralMixer, make_mixer, mixer_gradient
from jmarl.offpolicy import (
    AgentQNetwork,
    OffPolicyConfig,
    OffPolicyLearner,
    greedy,
    take,
    td_lambda_targets,
)

TINY = 1e-30  # floor inside logs


@dataclasses.dataclass(frozen=True)
class ReMIXConfig(OffPolicyConfig):
    """remix.md App. D (batch 128, buffer 10000, target every 200 episodes, lr 1e-3, TD(lambda) 0.6,
    epsilon 0.995 -> 0.05 over 100k steps) and pymarl2's QMIX/WQMIX sizes."""

    algo: str = "remix"
    mixer: str = field("qmix", choices=("qmix", "vdn", "qplex"),
                       doc="mixer of the agent utilities (qplex: the duplex dueling mixer, uniform weights only)")
    mixing_embed_dim: int = field(32, low=1, doc="QMIX mixing width")
    hypernet_dim: int = field(64, low=1, doc="QMIX hypernetwork hidden width")
    weighting: str = field("remix", choices=("uniform", "ow", "cw", "remix"),
                           doc="weights of the Q_tot loss (uniform = QMIX/VDN, no Q*)")
    qplex_embed_dim: int = field(64, low=1, absent_means_default=True,
                                 doc="QPLEX: width of the w_i(s) and v_i(s) networks")
    qplex_heads: int = field(4, low=1, absent_means_default=True,
                             doc="QPLEX: attention heads of the importance weights lambda_i(s, a)")
    qplex_layers: int = field(2, low=1, high=3, absent_means_default=True,
                              doc="QPLEX: layers of each importance-weight extractor")
    qplex_adv_embed: int = field(64, low=1, absent_means_default=True,
                                 doc="QPLEX: hidden width of the importance-weight extractors")
    central_embed_dim: int = field(256, low=1, doc="width of the unrestricted Q* mixer (3 layers)")
    central_hidden_dim: int = field(64, low=1, doc="width of Q*'s own agent network")
    alpha: float = field(0.1, low=0.0, high=1.0, doc="OW/CW weight of the down-weighted transitions")
    w_min: float = field(0.1, low=0.0, high=1.0, doc="ReMIX: weights are mapped into [w_min, 1]")
    temperature: float = field(1.0, low=0.0, low_open=True, doc="ReMIX: Boltzmann temperature of pi^j")
    remix_eps: float = field(1e-6, low=0.0, low_open=True, doc="ReMIX: raw weight of overestimated transitions")
    remix_bellman: bool = field(True, doc="ReMIX: keep the Bellman-error factor (y - Q_tot)")
    remix_underestimation: bool = field(True, doc="ReMIX: keep the underestimation factor exp(Q* - Q_tot)")
    remix_gradient: bool = field(True, doc="ReMIX: keep the mixer-gradient factor sum_j (1-pi^j)/f'_j - 1")
    weight_mapping: str = field("mean", choices=("mean", "max"),
                                doc="ReMIX: E / its batch mean clipped to [w_min, 1] (the paper's E_mu[w] = 1), or "
                                    "w_min + (1 - w_min) E / its batch max")
    weight_q_star: str = field("target", choices=("target", "online"),
                               doc="ReMIX: the Q* in exp(Q* - Q_tot): the target Q*_{k-1} (paper) or the online one")
    updates_per_episode: float = field(0.125, low=0.0, doc="gradient steps per completed episode: pymarl2's one "
                                                           "per 8 (0 = a fixed train_steps per update)")


# Predator-prey observations and states are 0/1 grids: bfloat16 stores them exactly, and the paper's
# 10000-episode buffer (6.9 GiB per seed in float32) fits in 3.5 GiB, under buffer_limit_gib.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "predator_prey": {"buffer_dtype": "bfloat16"},
    "predator_prey_": {"buffer_dtype": "bfloat16"},
}

VARIANTS: dict[str, dict[str, Any]] = {
    "remix": {},
    "qmix": {"weighting": "uniform"},
    "vdn": {"weighting": "uniform", "mixer": "vdn"},
    "qplex": {"weighting": "uniform", "mixer": "qplex"},
    "ow_qmix": {"weighting": "ow"},
    "cw_qmix": {"weighting": "cw"},
    "remix_no_bellman": {"remix_bellman": False},
    "remix_no_under": {"remix_underestimation": False},
    "remix_no_grad": {"remix_gradient": False},
}


def ow_weights(q_tot: jax.Array, y: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """Optimistic weighting: 1 where Q_tot underestimates the target, else alpha."""
    return jnp.where(q_tot < y, 1.0, alpha)


def cw_weights(actions: jax.Array, greedy_actions: jax.Array, y: jax.Array, greedy_value: jax.Array,
               alpha: jax.Array | float) -> jax.Array:
    """Central weighting: 1 where the joint action ([..., N]) is the QMIX greedy one or the target exceeds
    Q*^-(s, u_greedy), else alpha."""
    is_greedy = jnp.all(actions == greedy_actions, axis=-1)
    return jnp.where(is_greedy | (y > greedy_value), 1.0, alpha)


def remix_log_terms(q_tot: jax.Array, y: jax.Array, q_star: jax.Array, grads: jax.Array,
                    pi_taken: jax.Array) -> dict[str, jax.Array]:
    """The log of each factor of Theorem 1's weight, per transition [...]:
    ``bellman`` log(y - Q_tot), ``under`` Q* - Q_tot, ``gradient`` log(sum_j (1 - pi^j)/f'_j - 1)
    (grads, pi_taken: [..., N]); factors that are not positive give log(TINY)."""
    grad_term = jnp.sum((1.0 - pi_taken) / jnp.maximum(grads, TINY), axis=-1) - 1.0
    return {"bellman": jnp.log(jnp.maximum(y - q_tot, TINY)),
            "under": q_star - q_tot,
            "gradient": jnp.log(jnp.maximum(grad_term, TINY))}


def remix_weights(terms: dict[str, jax.Array], underestimated: jax.Array, mask: jax.Array, w_min: jax.Array | float,
                  eps: jax.Array | float, bellman: bool = True, under: bool = True, gradient: bool = True,
                  mapping: str = "mean") -> tuple[jax.Array, jax.Array]:
    """(weights in [w_min, 1], log raw weights): E where ``underestimated`` (Q_tot <= y) with the enabled
    factors, else ``eps``; floored at ``eps``; then, over valid (``mask``) transitions, ``mean``: divided by
    its mean and clipped to [w_min, 1]; ``max``: w_min + (1 - w_min) E / max(E)."""
    log_e = jnp.zeros_like(terms["under"])
    for name, keep in (("bellman", bellman), ("under", under), ("gradient", gradient)):
        if keep:
            log_e = log_e + terms[name]
    log_eps = jnp.log(eps)
    log_raw = jnp.where(underestimated, jnp.maximum(log_e, log_eps), log_eps)
    valid = jnp.where(mask, log_raw, -jnp.inf)
    if mapping == "mean":
        log_mean = jax.nn.logsumexp(valid) - jnp.log(jnp.maximum(mask.sum(), 1).astype(log_raw.dtype))
        w = jnp.maximum(jnp.exp(jnp.minimum(log_raw - log_mean, 0.0)), w_min)
    elif mapping == "max":
        w = w_min + (1.0 - w_min) * jnp.exp(jnp.minimum(log_raw - jnp.max(valid), 0.0))
    else:
        raise ValueError(f"unknown weight mapping {mapping!r}; valid: mean, max")
    return w, log_raw


class ReMIX(OffPolicyLearner):
    """The value-decomposition learner; ``weighting`` and ``mixer`` select ReMIX/QMIX/VDN/OW/CW."""

    SWEEPABLE: ClassVar[tuple[str, ...]] = OffPolicyLearner.SWEEPABLE + ("alpha", "w_min", "temperature", "remix_eps")

    def __init__(self, config: ReMIXConfig):
        cfg = config
        if cfg.mixer == "qplex" and cfg.weighting != "uniform":
            raise ConfigError(f"mixer='qplex' trains with uniform weights (QPLEX); the {cfg.weighting!r} weighting "
                              f"is defined for a monotonic mixer (qmix or vdn)")
        super().__init__(config)
        qplex = {"embed_dim": cfg.qplex_embed_dim, "num_heads": cfg.qplex_heads,
                 "adv_hypernet_layers": cfg.qplex_layers, "adv_hypernet_embed": cfg.qplex_adv_embed}
        self.mixer = make_mixer(cfg.mixer, self.n, cfg.mixing_embed_dim, cfg.hypernet_dim, self.num_actions, qplex)
        self.central = cfg.weighting != "uniform"
        if self.central:
            self.central_agent = AgentQNetwork(self.num_actions, cfg.central_hidden_dim)
            self.central_mixer = CentralMixer(cfg.central_embed_dim)

    def init_params(self, key: jax.Array) -> dict[str, Any]:
        k_agent, k_mixer, k_cagent, k_cmixer = jax.random.split(key, 4)
        qs, state = jnp.zeros((1, self.n)), jnp.zeros((1, self.spec.state_dim))
        extra = (jnp.zeros((1, self.n, self.num_actions)), qs) if self.config.mixer == "qplex" else ()
        params = {"agent": self.init_agent(k_agent), "mixer": self.mixer.init(k_mixer, qs, state, *extra)}
        if self.central:
            params["central_agent"] = self.init_agent(k_cagent, self.central_agent)
            params["central_mixer"] = self.central_mixer.init(k_cmixer, qs, state)
        return params

    def mix(self, mixer_params, qs: jax.Array, state: jax.Array, actions: jax.Array, q_all: jax.Array,
            avail: jax.Array) -> jax.Array:
        """Q_tot [B, T] of the utilities ``qs`` [B, T, N] taken at ``actions``; QPLEX also reads the joint
        action and each agent's greedy utility over its available actions (from ``q_all`` [B, T, N, A],
        detached as QPLEX's learner does; 0 where no action is available, on padded steps)."""
        if self.config.mixer != "qplex":
            return self.mixer.apply(mixer_params, qs, state)
        q_all = jax.lax.stop_gradient(q_all)
        max_qs = jnp.where(avail.any(-1), jnp.max(mask_actions(q_all, avail), axis=-1), 0.0)
        onehot = jax.nn.one_hot(actions, self.num_actions, dtype=qs.dtype)
        return self.mixer.apply(mixer_params, qs, state, onehot, max_qs)

    def central_qs(self, params, batch: replay.Episodes) -> jax.Array:
        """Q*'s agent outputs [B, T+1, N, A] (its own GRU from zero)."""
        return self.agent_qs(params["central_agent"], batch, self.central_agent)

    def loss(self, params, target_params, batch: replay.Episodes, hparams: dict[str, jax.Array],
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        mask = batch.mask
        q = self.agent_qs(params["agent"], batch)  # [B, T+1, N, A]
        u_next = greedy(jax.lax.stop_gradient(q), batch.avail)  # online greedy actions [B, T+1, N]
        chosen = take(q[:, :-1], batch.actions)  # [B, T, N]
        state_now, state_all = batch.state[:, :-1], batch.state
        q_tot = self.mix(params["mixer"], chosen, state_now, batch.actions, q[:, :-1], batch.avail[:, :-1])  # [B, T]

        if self.central:
            cq_target = self.central_qs(target_params, batch)
            boot = self.central_mixer.apply(target_params["central_mixer"], take(cq_target, u_next), state_all)
        else:
            q_target = self.agent_qs(target_params["agent"], batch)
            boot = self.mix(target_params["mixer"], take(q_target, u_next), state_all, u_next, q_target, batch.avail)
        y = jax.lax.stop_gradient(td_lambda_targets(batch.reward, batch.terminated, mask, boot[:, 1:],
                                                    hparams["gamma"], hparams["td_lambda"]))
        td = q_tot - y
        stats: dict[str, jax.Array] = {}
        total = 0.0
        if self.central:
            cq = self.central_qs(params, batch)
            q_star = self.central_mixer.apply(params["central_mixer"], take(cq[:, :-1], batch.actions), state_now)
            central_loss = 0.5 * masked_mean(jnp.square(q_star - y), mask)
            total = total + central_loss
            stats["central_loss"] = central_loss
            sg = jax.lax.stop_gradient
            if self.config.weight_q_star == "target":  # Q*_{k-1}: the network y is built from
                q_star_w = self.central_mixer.apply(target_params["central_mixer"],
                                                    take(cq_target[:, :-1], batch.actions), state_now)
            else:
                q_star_w = q_star
            w = sg(self.weights(sg(params), sg(q), sg(chosen), sg(q_tot), y, sg(q_star_w), u_next, batch, hparams,
                                target_params, cq_target))
        else:
            w = jnp.ones_like(td)
        qmix_loss = 0.5 * masked_mean(w * jnp.square(td), mask)
        total = total + qmix_loss
        stats.update(qmix_loss=qmix_loss, td_abs=masked_mean(jnp.abs(td), mask),
                     q_taken=masked_mean(q_tot, mask), target=masked_mean(y, mask), weight=masked_mean(w, mask))
        return total, stats

    def weights(self, params, q, chosen, q_tot, y, q_star, u_next, batch, hparams, target_params, cq_target):
        """Per-transition weights [B, T] of the Q_tot loss for ow / cw / remix."""
        cfg = self.config
        if cfg.weighting == "ow":
            return ow_weights(q_tot, y, hparams["alpha"])
        if cfg.weighting == "cw":
            u_greedy = u_next[:, :-1]
            greedy_value = self.central_mixer.apply(target_params["central_mixer"], take(cq_target[:, :-1], u_greedy),
                                                    batch.state[:, :-1])
            return cw_weights(batch.actions, u_greedy, y, greedy_value, hparams["alpha"])
        grads = mixer_gradient(self.mixer, params["mixer"], chosen, batch.state[:, :-1])
        # MASKED, not -inf: padded steps have no available action, and a softmax over only -inf is NaN,
        # whose gradient (NaN * 0) would reach the agents and mixer through w * td^2 despite the mask
        logits = mask_actions(q[:, :-1] / hparams["temperature"], batch.avail[:, :-1])
        pi_taken = take(jax.nn.softmax(logits, axis=-1), batch.actions)
        terms = remix_log_terms(q_tot, y, q_star, grads, pi_taken)
        w, _ = remix_weights(terms, q_tot <= y, batch.mask, hparams["w_min"], hparams["remix_eps"], cfg.remix_bellman,
                             cfg.remix_underestimation, cfg.remix_gradient, cfg.weight_mapping)
        return w
