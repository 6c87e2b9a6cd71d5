"""TAD-DQN: the Transformation And Distillation framework (tad_ppo.md §5, Algorithms 1, 2 and 4) on a
DQN learner (App. D.5: "the off-policy method TAD-DQN based on the single agent algorithm DQN"), on the
shared off-policy core (jmarl.offpolicy).

Transformation. Algorithm 1 turns an env step into n virtual steps: in the virtual state (s, a_<i) agent
i picks a_i; the reward r(s, a) comes on the last virtual step only, the env's transition follows it,
and the virtual discount is gamma' = gamma^(1/n), so n virtual steps discount by gamma (Theorem 5.1: the
transformed values are the original ones times the constant gamma^((1-n)/n)). TAD-DQN is DQN on that
MDP: one sequential Q-network Q_i(tau_i, a_<i, a_i), shared by all agents, regressed to

- agent i < n-1:  y = gamma' Q^-_{i+1}(tau, a_<=i, u*), reward 0, never terminal;
- agent n-1:      y = r_t + gamma' (1 - terminated_t) Q^-_0(tau_{t+1}, u*) (the next env step's first
  virtual step; a truncated episode bootstraps from its last stored observation, padding counts nowhere),

u* the argmax over the next virtual step's available actions of the online network (double DQN,
``double_q``, as pymarl; ``False``: of the target network). Q-values of stored steps are computed for all
agents at once by teacher forcing the stored joint action through the causal attention. ``td_lambda``
> 0 (an extension; DQN is one-step, the default 0) gives pymarl's TD(lambda) over the n*T virtual steps,
lambda per virtual step, by the core's :func:`~jmarl.offpolicy.td_lambda_targets`.

The network is TAD-PPO's :class:`~jmarl.attention.TADNet` with the action count as its output: a torso
run once per agent per env step (pymarl's agent input: observation, the agent's own previous action and
its id; Dense + ReLU, GRU), multi-head attention of a query of the torso output over the one-hot actions
(plus the acting agent's id) of the agents before it in this env step, with a learned null slot that
agent 0 sees alone, and a head (Dense + ReLU, linear) on [torso output, attention]. LayerNorm is off by
default (pymarl's agent has none; ``layer_norm``).

Acting in training (the core's collection calls :meth:`TADDQN.act`): the agents decide in the fixed
order 0..n-1 (TAD-PPO's order; a random order per step is not supported), agent i epsilon-greedy over its
available actions on Q_i given the actions a_<i already chosen in this env step, exploration included (it
is the behaviour policy of the transformed MDP). With epsilon 0 this is the sequential greedy joint action.

Distillation (Algorithm 4 / eq. 6). A decentralised head Q^D_i(tau_i, .) on the same torso features (the
paper shares the GRU and the representation layer) is trained at the same time as the Q-network, with
weight ``distill_coef``, on the replayed valid steps:

- ``distill_target="greedy_target"`` (default): the sequential greedy chain of the *target* network on the
  replayed histories, Algorithm 4's deterministic coordination policy ("if there are multiple, select
  arbitrarily": but the same one for every agent). ``"greedy"``: the online network's chain. Where a game
  has several optimal joint actions of equal value (TAD's matrices 2-4) the online chain's choice among
  them flips from one gradient step to the next, and agents distilled from a mixture of optima pick
  mismatched halves of different ones; the target network moves only at its copies, so the distilled
  agents settle on one. On matrix_tad10 (4 seeds, 10k env steps, one gradient step per episode) the
  decentralised score held 100 on every seed over the last 4k steps with the target's chain; with the
  online one it kept falling back to 70-80 on every seed (80-100 at the end) while the sequential chain
  itself scored 99-100. ``"taken"``: the stored actions (eq. 6's behaviour cloning of the
  acting policy, exploration and stale policies included);
- ``distill_loss="cross_entropy"`` (default, eq. 6): Q^D read as logits over the available actions;
  ``"q_regression"``: 0.5 (Q^D_i(a) - Q_i(tau, a_<i, a))^2 over the available actions, a_<i the target's.
- ``distill_torso`` (default on, as TAD-PPO): the distillation gradient also trains the shared torso.

Execution and evaluation: ``greedy_policy`` (export, rendering, the ``return`` of evaluation) acts
greedily on Q^D alone, decentralised; evaluation also reports the sequential greedy chain with the
suffix ``_sequential`` and, on matrix games, TAD-PPO's ``score`` / ``score_sequential``.

Other choices where the paper is silent (config fields where they matter): 0.5 x squared TD error
(``huber_delta`` > 0: Huber, equal to it within delta), averaged over valid steps and agents, i.e. over
virtual steps; one Adam for all parameters; the schedule and sizes are pymarl2's as in
jmarl.algos.qtran (lr 5e-4, batch 128, buffer 5000 episodes, one gradient step per 8 completed episodes,
target copy every 200 episodes, epsilon 1 -> 0.05 over 100k steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from envs.matrix import MatrixGame
from jmarl import replay
from jmarl.attention import TADNet
from jmarl.config import field
from jmarl.evaluate import evaluate_greedy, evaluation_key, matrix_score
from jmarl.masks import mask_actions, masked_mean
from jmarl.offpolicy import (
    OffPolicyConfig,
    OffPolicyLearner,
    agent_inputs,
    epsilon_greedy,
    greedy,
    take,
    td_lambda_targets,
)


@dataclasses.dataclass(frozen=True)
class TADDQNConfig(OffPolicyConfig):
    """pymarl2's value-learner settings (as jmarl.algos.qtran) plus TAD-PPO's attention sizes."""

    algo: str = "tad_dqn"
    lr: float = field(5e-4, low=0.0, low_open=True, doc="Adam learning rate (pymarl: 5e-4)")
    buffer_size: int = field(5_000, low=1, doc="replay capacity in episodes (per seed)")
    eps_start: float = field(1.0, low=0.0, high=1.0, doc="epsilon at step 0")
    td_lambda: float = field(0.0, low=0.0, high=1.0, doc="lambda of TD(lambda) over virtual steps (DQN: 0, "
                                                         "one-step)")
    updates_per_episode: float = field(0.125, low=0.0, doc="gradient steps per completed episode: pymarl2's one "
                                                           "per 8 (0 = a fixed train_steps per update)")
    double_q: bool = field(True, doc="bootstrap at the online network's argmax (double DQN), else the target's")
    huber_delta: float = field(0.0, low=0.0, doc="Huber TD loss delta (0 = 0.5 x squared error)")
    layer_norm: bool = field(False, doc="TADNet's LayerNorms (input, hidden, GRU output, attention)")
    attn_heads: int = field(4, low=1, doc="attention heads over the previous actions")
    attn_dim: int = field(4, low=1, doc="dimension of each head's queries, keys and values")
    attn_agent_id: bool = field(True, doc="keys/values also see which agent took the previous action")
    distill_coef: float = field(1.0, low=0.0, doc="weight of the distillation loss")
    distill_torso: bool = field(True, doc="the distillation loss also trains the shared torso (GRU)")
    distill_target: str = field("greedy_target", choices=("greedy_target", "greedy", "taken"),
                                doc="distil the sequential greedy chain of the online or the target network on "
                                    "replayed steps, or the stored actions")
    distill_loss: str = field("cross_entropy", choices=("cross_entropy", "q_regression"),
                              doc="cross-entropy of the decentralised head to the target actions, or regression "
                                  "of it to the sequential Q given the target's a_<i")


ENV_DEFAULTS: dict[str, dict[str, Any]] = {}

VARIANTS: dict[str, dict[str, Any]] = {"tad_dqn": {}}


# ----- the chain and the targets as pure functions of arrays -----------------------------------


def sequential_chain(q_of: Callable[[jax.Array, Any], jax.Array], record: Callable[[jax.Array, Any, jax.Array], Any],
                     memory: Any, avail: jax.Array, choose: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                     keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Agents decide in order 0..n-1 (a scan over agents): agent i's Q-values ``q_of(i, memory) [..., A]``
    given what the agents before it chose, its action ``choose(keys[i], q, avail[..., i, :])``, then
    ``memory = record(i, memory, a_i)``. Returns (actions [..., N], each agent's Q-values [..., N, A])."""

    def decide(mem, xs):
        i, avail_i, key_i = xs
        q = q_of(i, mem)
        a = choose(key_i, q, avail_i)
        return record(i, mem, a), (a, q)

    n = avail.shape[-2]
    _, (actions, q) = jax.lax.scan(decide, memory, (jnp.arange(n), jnp.moveaxis(avail, -2, 0), keys))
    return jnp.moveaxis(actions, 0, -1), jnp.moveaxis(q, 0, -2)


def next_virtual(x: jax.Array) -> jax.Array:
    """Per-agent values at every stored observation [B, T+1, N, ...] -> [B, T, N, ...]: for the virtual step
    (t, i), the value at the next virtual step, (t, i+1) for i < n-1 and (t+1, 0) for the last agent."""
    return jnp.concatenate([x[:, :-1, 1:], x[:, 1:, :1]], axis=2)


def virtual_targets(reward: jax.Array, terminated: jax.Array, mask: jax.Array, next_values: jax.Array,
                    gamma: jax.Array | float, lam: jax.Array | float) -> jax.Array:
    """Targets y [B, T, N] of the n*T virtual steps: reward and termination [B, T] on each env step's last
    virtual step only, ``next_values`` [B, T, N] the bootstrap value of each virtual step's successor, the
    virtual discount gamma^(1/n); TD(lambda) over the virtual sequence (one-step when lam = 0)."""
    b, t, n = next_values.shape
    last = jnp.arange(n) == n - 1
    flat = lambda x: x.reshape(b, t * n)  # noqa: E731  virtual order: (t, 0), ..., (t, n-1), (t+1, 0), ...
    r = flat(jnp.where(last, reward[..., None], 0.0))
    term = flat(last & terminated[..., None])
    valid = flat(jnp.broadcast_to(mask[..., None], (b, t, n)))
    y = td_lambda_targets(r, term, valid, flat(next_values), gamma ** (1.0 / n), lam)
    return y.reshape(b, t, n)


class _TorsoView:
    """TADNet's torso in the form the core's ``unroll`` runs over episodes: apply(params, carry, x, reset)
    -> (carry, features)."""

    def __init__(self, net: TADNet):
        self.net, self.hidden_dim = net, net.hidden_dim

    def apply(self, params, carry, x, reset):
        return self.net.apply(params, carry, x, reset, method=TADNet.features)


# ----- the learner ------------------------------------------------------------------------------


class TADDQN(OffPolicyLearner):
    """TAD-DQN on the shared off-policy core; see the module docstring."""

    SWEEPABLE: ClassVar[tuple[str, ...]] = OffPolicyLearner.SWEEPABLE + ("distill_coef",)

    def __init__(self, config: TADDQNConfig):
        super().__init__(config)
        cfg = config
        self.agent = TADNet(self.num_actions, self.n, self.num_actions, hidden_dim=cfg.hidden_dim, num_layers=2,
                            recurrent=True, layer_norm=cfg.layer_norm, attention=True, heads=cfg.attn_heads,
                            head_dim=cfg.attn_dim, agent_ids=cfg.attn_agent_id, distill=True)
        self.torso = _TorsoView(self.agent)

    def init_params(self, key: jax.Array) -> dict[str, Any]:
        carry = jnp.zeros((1, self.n, self.config.hidden_dim))
        x = jnp.zeros((1, self.n, self.input_dim))
        return {"agent": self.agent.init(key, carry, x, jnp.ones((1, self.n), bool),
                                         jnp.zeros((1, self.n), jnp.int32))}

    # ----- network pieces ----------------------------------------------------------------------

    def features(self, agent_params, batch: replay.Episodes) -> jax.Array:
        """Torso outputs [B, T+1, N, H] at every stored observation (GRU from zero, inputs as acting)."""
        return self.unroll(agent_params, self.episode_inputs(batch), self.torso)

    def teacher_forced(self, agent_params, h: jax.Array, actions: jax.Array) -> jax.Array:
        """Q_i(tau_i, a_<i, .) [..., N, A] for every agent at once, a_<i read from the joint action [..., N]."""
        return self.agent.apply(agent_params, h, actions, method=TADNet.teacher_forced)

    def decentralised(self, agent_params, h: jax.Array) -> jax.Array:
        """Q^D_i(tau_i, .) [..., N, A]: the distilled head on the torso features alone."""
        return self.agent.apply(agent_params, h, method=TADNet.decentralised)

    def chain(self, agent_params, h: jax.Array, avail: jax.Array, key: jax.Array | None = None,
              epsilon: jax.Array | float = 0.0) -> tuple[jax.Array, jax.Array]:
        """The sequential decision from torso features h [..., N, H]: (joint action [..., N], each agent's
        Q-values given the actions chosen before it [..., N, A]); greedy when ``key`` is None, else each
        agent epsilon-greedy. Keys and values of a chosen action are computed once, when it is chosen."""
        net, p, n = self.agent, agent_params, self.n
        queries = net.apply(p, h, method=TADNet.queries)  # [..., N, heads, dim]

        def q_of(i, kv):
            q_i = jnp.take(queries, i, axis=-3)[..., None, :, :]
            visible = (jnp.arange(n) < i)[None, :]
            context = net.apply(p, q_i, kv[0], kv[1], visible, method=TADNet.attend)[..., 0, :, :]
            return net.apply(p, jnp.take(h, i, axis=-2), context, method=TADNet.output)

        def record(i, kv, a):
            k_i, v_i = net.apply(p, a, i, method=TADNet.keys_values)
            return kv[0].at[..., i, :, :].set(k_i), kv[1].at[..., i, :, :].set(v_i)

        if key is None:
            choose = lambda _, q, av: greedy(q, av)  # noqa: E731
            keys = jax.random.split(jax.random.PRNGKey(0), n)
        else:
            choose = lambda k, q, av: epsilon_greedy(k, q, av, epsilon)  # noqa: E731
            keys = jax.random.split(key, n)
        memory = (jnp.zeros_like(queries), jnp.zeros_like(queries))
        return sequential_chain(q_of, record, memory, avail, choose, keys)

    # ----- the loss ----------------------------------------------------------------------------

    def loss(self, params, target_params, batch: replay.Episodes, hparams: dict[str, jax.Array],
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        cfg = self.config
        sg = jax.lax.stop_gradient
        mask, avail = batch.mask, batch.avail
        actions = batch.actions.astype(jnp.int32)
        # the stored joint action at every observation (the one after the last step is never read: agent 0
        # of the next env step sees no previous action)
        forced = jnp.concatenate([actions, jnp.zeros_like(actions[:, :1])], axis=1)
        h = self.features(params["agent"], batch)
        q = self.teacher_forced(params["agent"], h, forced)  # [B, T+1, N, A]
        h_target = self.features(target_params["agent"], batch)
        q_target = self.teacher_forced(target_params["agent"], h_target, forced)

        q_next, q_next_target, avail_next = next_virtual(q), next_virtual(q_target), next_virtual(avail)
        u_next = greedy(sg(q_next) if cfg.double_q else q_next_target, avail_next)
        y = sg(virtual_targets(batch.reward, batch.terminated, mask, take(q_next_target, u_next), hparams["gamma"],
                               hparams["td_lambda"]))
        q_taken = take(q[:, :-1], actions)  # [B, T, N]
        td = q_taken - y
        mask_n = jnp.broadcast_to(mask[..., None], td.shape)
        err = optax.huber_loss(td, delta=cfg.huber_delta) if cfg.huber_delta > 0 else 0.5 * jnp.square(td)
        td_loss = masked_mean(err, mask_n)

        distill_loss, agree = self.distillation(params, target_params, batch, h[:, :-1], h_target[:, :-1], q[:, :-1])
        total = td_loss + hparams["distill_coef"] * distill_loss
        stats = {"td_loss": td_loss, "distill_loss": distill_loss, "distill_agree": agree,
                 "td_abs": masked_mean(jnp.abs(td), mask_n), "q_taken": masked_mean(q_taken, mask_n),
                 "target": masked_mean(y, mask_n)}
        return total, stats

    def distillation(self, params, target_params, batch: replay.Episodes, h: jax.Array, h_target: jax.Array,
                     q_taken_prefix: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(distillation loss, share of valid agent-steps whose decentralised greedy action is the target's)
        from the torso features [B, T, N, H] of the valid steps (online h, target network h_target) and the
        online Q given the stored a_<i [B, T, N, A]."""
        cfg = self.config
        sg = jax.lax.stop_gradient
        avail = batch.avail[:, :-1]
        if cfg.distill_target == "greedy":
            target, target_q = sg(self.chain(params["agent"], h, avail))
        elif cfg.distill_target == "greedy_target":
            target, target_q = sg(self.chain(target_params["agent"], h_target, avail))
        else:
            target, target_q = batch.actions.astype(jnp.int32), sg(q_taken_prefix)
        out = self.decentralised(params["agent"], h if cfg.distill_torso else sg(h))
        mask_n = jnp.broadcast_to(batch.mask[..., None], target.shape)
        if cfg.distill_loss == "cross_entropy":
            err = -take(jax.nn.log_softmax(mask_actions(out, avail)), target)
            loss = masked_mean(err, mask_n)
        else:
            loss = masked_mean(0.5 * jnp.square(out - target_q), mask_n[..., None] & avail)
        agree = masked_mean((greedy(sg(out), avail) == target).astype(jnp.float32), mask_n)
        return loss, agree

    # ----- acting and evaluation ---------------------------------------------------------------

    def act(self, params, carry, obs, avail, reset, key: jax.Array | None = None,
            epsilon: jax.Array | float = 0.0, sequential: bool = True):
        """One env step for a batch: obs [B, N, D], avail [B, N, A], reset [B]; carry = (GRU state [B, N, H],
        previous actions [B, N]). ``sequential`` (what the core's collection runs): the agents decide in order,
        each epsilon-greedy on Q_i given a_<i (greedy when ``key`` is None); else the decentralised head."""
        hidden, last = carry
        last = jnp.where(reset[:, None], -1, last)
        reset_n = jnp.broadcast_to(reset[:, None], reset.shape + (self.n,))
        hidden, h = self.torso.apply(params["agent"], hidden, agent_inputs(obs, last, self.num_actions), reset_n)
        if sequential:
            actions, _ = self.chain(params["agent"], h, avail, key, epsilon)
        else:
            q = self.decentralised(params["agent"], h)
            actions = greedy(q, avail) if key is None else epsilon_greedy(key, q, avail, epsilon)
        return (hidden, actions), actions

    def greedy_policy(self, params, batch: int):
        """(initial carry, policy) in ``evaluate_greedy``'s form: the decentralised head acting greedily (what
        exported policies, rendering and the evaluation's ``return`` run)."""
        return self.init_carry(batch), lambda carry, obs, avail, reset: self.act(params, carry, obs, avail, reset,
                                                                                 sequential=False)

    def evaluate(self, state) -> dict[str, jax.Array]:
        """Greedy evaluation of the decentralised head (jmarl.evaluate's keys) and of the sequential chain (the
        same keys + ``_sequential``); ``score`` / ``score_sequential`` on matrix games."""
        cfg = self.config
        key = evaluation_key(state.key)
        out = {}
        for suffix, sequential in (("", False), ("_sequential", True)):
            policy = lambda c, o, a, r, s=sequential: self.act(state.params, c, o, a, r, sequential=s)  # noqa: E731
            evals = evaluate_greedy(self.env, policy, self.init_carry(cfg.eval_episodes), key, cfg.eval_episodes)
            out.update({k + suffix: v for k, v in evals.items()})
            if isinstance(self.env.unwrapped, MatrixGame):
                out["score" + suffix] = matrix_score(self.env, lambda b, p=policy: (self.init_carry(b), p))
        return out
