"""Flax modules shared by the algorithms.

Initialisers avoid ``orthogonal()``: under a vmap over seeds on CPU its batched QR can deadlock
XLA's intra-op pool (seen with jax 0.10). Hidden layers use LeCun-normal (Flax's default), GRU cells
:func:`gru_cell` (Flax's GRUCell defaults to an orthogonal recurrent kernel); policy heads a
small-scale variance-scaling init so that initial policies are close to uniform.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmarl.distributions import gaussian_params
from jmarl.masks import mask_actions

SMALL_HEAD = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")


def gru_cell(hidden_dim: int) -> nn.GRUCell:
    """Flax's GRU cell with a LeCun-normal recurrent kernel in place of its default orthogonal one,
    whose QR hung 32-seed SMAX training on CPU (tests/test_no_qr.py keeps QR out of every init)."""
    return nn.GRUCell(hidden_dim, recurrent_kernel_init=nn.initializers.lecun_normal())


class Torso(nn.Module):
    """Layers ``first``..``num_layers - 1`` of a stack of Dense+ReLU layers; with ``recurrent`` layer 1 is
    a GRU cell. The default (``first`` 0) is the whole stack; a later ``first`` continues a trunk that
    another Torso computed (so actor and critic can share their first layers).

    Called one time step at a time: (carry [..., H], x [..., D], reset [...]) -> (carry, features).
    ``reset`` zeroes the carry where an episode starts, before the cell reads it. The input LayerNorm
    belongs to the torso that starts at layer 0.
    """

    hidden_dim: int = 128
    num_layers: int = 3
    recurrent: bool = False
    layer_norm: bool = False
    first: int = 0

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array, reset: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.LayerNorm()(obs) if self.layer_norm and self.first == 0 else obs
        for i in range(self.first, self.num_layers):
            if self.recurrent and i == 1:
                carry = jnp.where(reset[..., None], jnp.zeros_like(carry), carry)
                carry, x = gru_cell(self.hidden_dim)(carry, x)
            else:
                x = nn.relu(nn.Dense(self.hidden_dim)(x))
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return carry, x


class ActorCritic(nn.Module):
    """One agent's policy and value networks behind one apply.

    By default actor and critic have separate torsos (parameters ``Torso_0`` and ``Torso_1``). With
    ``shared_layers`` k > 0 they share their first k layers (``Torso_0``, fed the actor's input; the
    critic's input is then unused) and continue with their own layers ``Torso_1`` / ``Torso_2``, as most
    PPO code and jaxmarl's IPPO-RNN do (k = 2: Dense and GRU). A GRU inside the shared layers keeps one
    carry, returned in both slots of the carry pair.

    Returns (new carries, policy head, value). For discrete actions the head is the action logits with
    unavailable actions masked (:data:`jmarl.masks.MASKED`, large and finite, so that probabilities and KLs
    stay finite). With ``continuous`` it is a diagonal Gaussian's ``concat(mean, log_std)``
    (:class:`jmarl.distributions.DiagGaussian`): the log-std is one learned vector per agent
    (state-independent, MAPPO's DiagGaussian) or a second linear output (``state_dependent_std``), and
    dimensions the agent does not control (``avail`` false) are pinned to mean 0, log-std 0.
    """

    num_actions: int
    hidden_dim: int = 128
    num_layers: int = 3
    recurrent: bool = False
    layer_norm: bool = False
    shared_layers: int = 0
    continuous: bool = False
    state_dependent_std: bool = False
    log_std_init: float = 0.0

    @nn.compact
    def __call__(self, carries, actor_obs, critic_obs, avail, reset):
        k = self.shared_layers
        torso = lambda first=0, last=self.num_layers: Torso(  # noqa: E731
            self.hidden_dim, last, self.recurrent, self.layer_norm, first)
        if k == 0:
            actor_carry, a = torso()(carries[0], actor_obs, reset)
            critic_carry, c = torso()(carries[1], critic_obs, reset)
        else:
            gru_shared = self.recurrent and k > 1
            carry, x = torso(0, k)(carries[0], actor_obs, reset)
            actor_carry, a = torso(k)(carry if gru_shared else carries[0], x, reset)  # no GRU: carry passes
            critic_carry, c = torso(k)(carry if gru_shared else carries[1], x, reset)
        head = nn.Dense(self.num_actions, kernel_init=SMALL_HEAD)(a)
        head = gaussian_head(self, head, a, avail) if self.continuous else mask_actions(head, avail)
        value = nn.Dense(1)(c)[..., 0]
        return (actor_carry, critic_carry), head, value


def gaussian_head(module: nn.Module, mean: jax.Array, features: jax.Array, avail: jax.Array) -> jax.Array:
    """``concat(mean, log_std)`` of a diagonal Gaussian policy inside ``module``'s compact call; the log-std is
    a learned vector (``module.state_dependent_std`` false) or a linear output of ``features``, starting at
    ``module.log_std_init``. Dimensions with ``avail`` false are pinned to mean 0, log-std 0."""
    if module.state_dependent_std:
        log_std = nn.Dense(mean.shape[-1], kernel_init=SMALL_HEAD,
                           bias_init=nn.initializers.constant(module.log_std_init), name="log_std_head")(features)
    else:
        log_std = module.param("log_std", nn.initializers.constant(module.log_std_init), (mean.shape[-1],))
    return gaussian_params(mean, log_std, avail)
