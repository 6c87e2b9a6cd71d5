"""Mixers: how agent utilities Q^a become a joint value, ``mixer.apply(params, qs [..., N], state [..., S])``.

- :class:`VDNMixer`: the sum (no parameters).
- :class:`QMixer`: pymarl2's monotonic QMIX mixer. Hypernetworks of the state give a two-layer network
  over the utilities: ``W1 = |hyper_w1(s)|`` (state -> 64 -> N*32, ReLU between), ``b1 = hyper_b1(s)``
  (state -> 32), ``W2 = |hyper_w2(s)|`` (state -> 64 -> 32) and ``V(s)`` (state -> 32 -> 1) in place of
  the last bias; ``Q_tot = ELU(Q W1 + b1) . W2 + V(s)``. Absolute weights make it monotone in every Q^a.
- :class:`jmarl.qplex.QPLEXMixer`: QPLEX's duplex dueling mixer, which also reads the joint action and
  each agent's greedy utility (``mixer.apply(params, qs, state, actions_onehot, max_qs)``).
- :class:`CentralMixer`: WQMIX's unrestricted Q* mixer, a feed-forward net over [state, utilities]
  (3 x 256, ReLU) plus V(s) (state -> 256 -> 1). Not monotone, so it can represent any joint value.

:func:`mixer_gradient` is dQ_tot/dQ^a by autodiff, the f'_j of ReMIX's weights (Lemma 1 gives its
closed form for the two-layer mixer: tests compare the two).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmarl.qplex import QPLEXMixer


class VDNMixer(nn.Module):
    """Q_tot = sum_a Q^a."""

    @nn.compact
    def __call__(self, qs: jax.Array, state: jax.Array) -> jax.Array:
        return qs.sum(-1)


class QMixer(nn.Module):
    """The monotonic hypernetwork mixer (pymarl2's ``qmix`` with 2 hypernet layers)."""

    num_agents: int
    embed_dim: int = 32
    hypernet_dim: int = 64

    def setup(self):
        e, h = self.embed_dim, self.hypernet_dim
        self.hyper_w1 = nn.Sequential([nn.Dense(h), nn.relu, nn.Dense(e * self.num_agents)])
        self.hyper_w2 = nn.Sequential([nn.Dense(h), nn.relu, nn.Dense(e)])
        self.hyper_b1 = nn.Dense(e)
        self.value = nn.Sequential([nn.Dense(e), nn.relu, nn.Dense(1)])

    def weights(self, state: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """The state's mixing network: W1 [..., N, E] >= 0, b1 [..., E], W2 [..., E] >= 0, V [...]."""
        w1 = jnp.abs(self.hyper_w1(state)).reshape(state.shape[:-1] + (self.num_agents, self.embed_dim))
        return w1, self.hyper_b1(state), jnp.abs(self.hyper_w2(state)), self.value(state)[..., 0]

    def __call__(self, qs: jax.Array, state: jax.Array) -> jax.Array:
        w1, b1, w2, v = self.weights(state)
        # products and sums rather than tiny batched matmuls (N x E per transition)
        hidden = nn.elu((qs[..., None] * w1).sum(-2) + b1)
        return (hidden * w2).sum(-1) + v


class CentralMixer(nn.Module):
    """WQMIX's unrestricted Q*: MLP over [state, utilities] plus V(s)."""

    embed_dim: int = 256
    num_layers: int = 3

    @nn.compact
    def __call__(self, qs: jax.Array, state: jax.Array) -> jax.Array:
        x = jnp.concatenate([state, qs], axis=-1)
        for _ in range(self.num_layers):
            x = nn.relu(nn.Dense(self.embed_dim)(x))
        advantage = nn.Dense(1)(x)[..., 0]
        value = nn.Dense(1)(nn.relu(nn.Dense(self.embed_dim)(state)))[..., 0]
        return advantage + value


MIXERS = ("qmix", "vdn", "qplex")


def make_mixer(name: str, num_agents: int, embed_dim: int = 32, hypernet_dim: int = 64, num_actions: int = 0,
               qplex: dict | None = None) -> nn.Module:
    """The mixer ``name``; ``qplex`` holds :class:`~jmarl.qplex.QPLEXMixer`'s size fields."""
    if name == "vdn":
        return VDNMixer()
    if name == "qmix":
        return QMixer(num_agents, embed_dim, hypernet_dim)
    if name == "qplex":
        return QPLEXMixer(num_agents, num_actions, **(qplex or {}))
    raise ValueError(f"unknown mixer {name!r}; valid: {', '.join(MIXERS)}")


def mixer_gradient(mixer: nn.Module, params, qs: jax.Array, state: jax.Array) -> jax.Array:
    """dQ_tot/dQ^a for every transition: [..., N]. Each transition's Q_tot depends only on its own
    utilities, so the gradient of the sum is the per-transition gradient."""
    return jax.grad(lambda q: mixer.apply(params, q, state).sum())(qs)


def num_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
