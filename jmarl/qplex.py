"""QPLEX's duplex dueling mixer (Wang et al., 2021), ``mixer.apply(params, qs, state, actions_onehot, max_qs)``.

QMIX forces Q_tot to be monotone in every utility, which restricts the joint values it can represent.
QPLEX keeps the Individual-Global-Max property (the greedy joint action of Q_tot is the tuple of per-agent
greedy actions) without that restriction, by mixing dueling quantities instead of raw utilities:

1. Transformation. Positive per-agent weights ``w_i(s) = |hyper_w_final(s)| + 1e-10`` and biases
   ``v_i(s) = V(s)_i`` (both state -> ``embed_dim`` -> N, ReLU between) map each agent's utility to
   ``Q_i = w_i q_i + v_i`` and its greedy utility to ``V_i = w_i max_q_i + v_i``; ``A_i = Q_i - V_i
   = w_i (q_i - max_q_i) <= 0``, zero exactly at the agent's greedy action.
2. Duplex dueling. ``Q_tot = sum_i Q_i + sum_i (lambda_i(s, a) - 1) A_i = sum_i V_i + sum_i lambda_i A_i``
   with importance weights ``lambda_i > 0`` that see the state and the joint action. Since every A_i <= 0
   and lambda_i > 0, Q_tot <= sum_i V_i with equality at the greedy joint action: IGM holds for any
   parameters.
3. The importance weights (the reference's "SI weight"): ``num_heads`` heads, each with three extractors,
   a key ``k_h(s)`` (state -> 1), an agent term ``g_h(s)`` (state -> N) and an action term
   ``c_h(s, a)`` ([state, flattened one-hot joint action] -> N);
   ``lambda_i = sum_h (|k_h| + 1e-10) * sigmoid(g_h)_i * sigmoid(c_h)_i``. Each extractor has
   ``adv_hypernet_layers`` Dense layers (1, 2 or 3), ReLU between, hidden width ``adv_hypernet_embed``.

Reference: the authors' code (wjh720/QPLEX, ``modules/mixers/dmaq_general.py`` and ``dmaq_si_weight.py``,
reproduced unchanged in hijkzzz/pymarl2). The defaults are pymarl2's ``config/algs/qplex.yaml``:
``hypernet_embed: 64`` (``embed_dim``), ``num_kernel: 4`` (``num_heads``), ``adv_hypernet_layers: 2``,
``adv_hypernet_embed: 64``, ``is_minus_one: True``. The authors' ``qplex_sc2.yaml`` uses 1 layer and 4
heads; their matrix-game ``qplex.yaml`` 3 layers and 10 heads. ``mixing_embed_dim`` appears in those
configs but this mixer never reads it.

Choices, and where they come from:

- One call. The reference calls the mixer twice, ``is_v=True`` for ``sum_i Q_i`` and ``is_v=False`` for
  the advantage term, and adds the two. ``__call__`` returns the sum; :meth:`QPLEXMixer.sum_q` and
  :meth:`QPLEXMixer.advantage_term` are the two halves, for callers that want them apart.
- ``detach_advantage`` (default True, as the reference, whose ``calc_adv`` detaches ``adv_q``): the
  advantage term uses ``stop_gradient(A_i)``, so its gradient only trains the importance weights; the
  utilities, w and v learn through ``sum_i Q_i`` alone (dQ_tot/dq_i = w_i). Without it,
  dQ_tot/dq_i = lambda_i w_i (or (1 + lambda_i) w_i with ``minus_one=False``). The forward value is the
  same either way. ``max_qs`` is expected to be computed from detached utilities, as the reference does.
- ``minus_one=False`` follows the reference literally: the advantage term becomes ``sum_i lambda_i A_i``
  and is still added to ``sum_i Q_i``, so Q_tot = sum_i V_i + sum_i (1 + lambda_i) A_i. IGM holds too.
- The reference's ``weighted_head`` flag (apply w, v or not) is True in every QPLEX config; the
  transformation is always applied here. The Qatten-weighted variant (``dmaq_qatten``, the authors'
  online SMAC config) is not implemented.
- The ``+ 1e-10`` offsets on |w| and |k| are the reference's. Initialisation is Flax's default (LeCun
  normal kernels, zero biases), as the other mixers here, not PyTorch's uniform one; each head's
  extractors are separate networks (stacked parameters, leading axis ``num_heads``), as in the reference.
- The paper leaves the extractor sizes, the number of heads and the 1e-10 offsets unspecified; they are
  all the reference's.

Parameter count, S = state size, N agents, A actions, h = ``embed_dim``, e = ``adv_hypernet_embed``,
H = ``num_heads``, 2 layers: ``2 (S h + h + h N + N)`` for w and v, plus per head
``(S e + e + e + 1) + (S e + e + e N + N) + ((S + N A) e + e + e N + N)``. With the defaults, N = 5,
S = 80, A = 11: 11,018 + 4 x 19,787 = 90,166. At 5m_vs_6m's size (N = 5, S = 98, A = 12) it is 107,574,
and 18,878 with the authors' SMAC config (1 layer); QMIX's mixer there has 31,521. lan.md Table 1 gives
43k for QPLEX on 5m_vs_6m: that is the authors' Qatten-weighted online variant (4 query nets of
8,384 + 4 keys of 128 + V of 3,201 + a 1-layer SI weight of 5,556 = 42,805), not this mixer.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

EPS = 1e-10  # the reference's offset on |w_i| and |k_h|: both stay strictly positive


class _Extractor(nn.Module):
    """``layers`` Dense layers, ReLU between, hidden width ``hidden``, output ``features``."""

    features: int
    layers: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.layers - 1):
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.features)(x)


class QPLEXMixer(nn.Module):
    """QPLEX's mixer: Q_tot = sum_i V_i + sum_i lambda_i A_i (module docstring)."""

    num_agents: int
    num_actions: int
    embed_dim: int = 64
    num_heads: int = 4
    adv_hypernet_layers: int = 2
    adv_hypernet_embed: int = 64
    minus_one: bool = True
    detach_advantage: bool = True

    def setup(self):
        if self.adv_hypernet_layers not in (1, 2, 3):
            raise ValueError(f"adv_hypernet_layers must be 1, 2 or 3, got {self.adv_hypernet_layers}")
        n, h = self.num_agents, self.embed_dim
        self.hyper_w_final = nn.Sequential([nn.Dense(h), nn.relu, nn.Dense(n)])
        self.value = nn.Sequential([nn.Dense(h), nn.relu, nn.Dense(n)])
        # one network per head, parameters stacked on a leading head axis; outputs [B, H, features]
        heads = nn.vmap(_Extractor, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                        out_axes=1, axis_size=self.num_heads)
        layers, e = self.adv_hypernet_layers, self.adv_hypernet_embed
        self.head_key = heads(1, layers, e)
        self.head_agent = heads(n, layers, e)
        self.head_action = heads(n, layers, e)

    def transform(self, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The per-agent transformation of the state: w [..., N] > 0 and v [..., N]."""
        lead, flat = state.shape[:-1], state.reshape(-1, state.shape[-1])
        w = jnp.abs(self.hyper_w_final(flat)) + EPS
        return w.reshape(lead + (self.num_agents,)), self.value(flat).reshape(lead + (self.num_agents,))

    def importance_weights(self, state: jax.Array, actions_onehot: jax.Array) -> jax.Array:
        """lambda_i(s, a) [..., N] > 0 from the state and the one-hot joint action [..., N, A]."""
        lead, flat = state.shape[:-1], state.reshape(-1, state.shape[-1])
        joint = actions_onehot.reshape(-1, self.num_agents * self.num_actions).astype(flat.dtype)
        key = jnp.abs(self.head_key(flat)) + EPS  # [B, H, 1]
        agent = nn.sigmoid(self.head_agent(flat))  # [B, H, N]
        action = nn.sigmoid(self.head_action(jnp.concatenate([flat, joint], axis=-1)))  # [B, H, N]
        return (key * agent * action).sum(1).reshape(lead + (self.num_agents,))

    def sum_q(self, qs: jax.Array, state: jax.Array) -> jax.Array:
        """sum_i Q_i = sum_i (w_i q_i + v_i) [...]: the reference's ``is_v=True`` call."""
        w, v = self.transform(state)
        return (w * qs + v).sum(-1)

    def advantage_term(self, qs: jax.Array, state: jax.Array, actions_onehot: jax.Array,
                       max_qs: jax.Array) -> jax.Array:
        """sum_i (lambda_i - 1) A_i (``minus_one``) or sum_i lambda_i A_i [...]: the ``is_v=False`` call."""
        w, _ = self.transform(state)
        return self._advantage_term(w, qs, state, actions_onehot, max_qs)

    def _advantage_term(self, w, qs, state, actions_onehot, max_qs):
        adv = w * (qs - max_qs)  # A_i = Q_i - V_i; v_i cancels
        if self.detach_advantage:
            adv = jax.lax.stop_gradient(adv)
        lam = self.importance_weights(state, actions_onehot)
        return ((lam - 1.0 if self.minus_one else lam) * adv).sum(-1)

    def __call__(self, qs: jax.Array, state: jax.Array, actions_onehot: jax.Array,
                 max_qs: jax.Array) -> jax.Array:
        """Q_tot [...] from the chosen utilities qs [..., N], the state [..., S], the one-hot joint action
        [..., N, A] and each agent's greedy utility max_qs [..., N]."""
        w, v = self.transform(state)
        return (w * qs + v).sum(-1) + self._advantage_term(w, qs, state, actions_onehot, max_qs)
