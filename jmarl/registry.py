"""Algorithm names -> (config class, learner class, preset overrides), and config resolution.

Baselines are named presets of a seed algorithm's config, never separate code. Resolution order:
the config class defaults (the paper's), then the env family's defaults, then the algorithm
preset, then the user's overrides; the result is validated before anything compiles.

This module knows the algorithms and nothing of how runs are planned or compiled: jmarl.core,
jmarl.sweep and jmarl.spec sit above it.
"""

from __future__ import annotations

import functools
from typing import Any

import envs
from jmarl.algos import dpo, happo, iddpg, lan, qtran, remix, tad_dqn, tad_ppo
from jmarl.config import ConfigError, hyperparameters, suggest, validate

# name -> (config class, learner class, env defaults by name prefix, preset overrides, description)
ALGORITHMS: dict[str, tuple[type, type, dict, dict, str]] = {
    name: (dpo.DPOConfig, dpo.DPO, dpo.ENV_DEFAULTS, preset, desc)
    for name, preset, desc in [
        ("dpo", dpo.VARIANTS["dpo"], "decentralised policy optimisation (sqrt-KL + KL, adaptive betas)"),
        ("ippo", dpo.VARIANTS["ippo"], "independent PPO (clip 0.2)"),
        ("ippo_kl", dpo.VARIANTS["ippo_kl"], "independent PPO with an adaptive KL penalty"),
        ("dpo_no_sqrt", dpo.VARIANTS["dpo_no_sqrt"], "DPO without the sqrt(KL) term"),
        ("dpo_no_kl", dpo.VARIANTS["dpo_no_kl"], "DPO without the KL term"),
        ("dpo_author", dpo.VARIANTS["dpo_author"], "DPO as the author code runs it (shared, clamped betas from 1.0; "
                                                   "entropy 0.01, no 1/N; LayerNorm)"),
    ]
}
ALGORITHMS.update({
    name: (tad_ppo.TADPPOConfig, tad_ppo.TADPPO, tad_ppo.ENV_DEFAULTS, preset, desc)
    for name, preset, desc in [
        ("tad_ppo", tad_ppo.VARIANTS["tad_ppo"], "TAD-PPO: sequential PPO over previous-action attention, distilled"),
        ("mappo", tad_ppo.VARIANTS["mappo"], "MAPPO (TAD-PPO without previous-action attention)"),
    ]
})
# ----- value decomposition: ReMIX and its baselines (jmarl/algos/remix.py) -----
ALGORITHMS.update({
    name: (remix.ReMIXConfig, remix.ReMIX, remix.ENV_DEFAULTS, remix.VARIANTS[name], desc)
    for name, desc in [
        ("remix", "ReMIX: QMIX with regret-minimising projection weights over an unrestricted Q*"),
        ("qmix", "QMIX (pymarl2: hypernetwork mixer, TD(lambda), double Q)"),
        ("vdn", "VDN (sum of agent utilities)"),
        ("qplex", "QPLEX (duplex dueling mixer: Q_tot = sum V_i + sum lambda_i(s, a) A_i, IGM by construction)"),
        ("ow_qmix", "optimistically weighted QMIX (WQMIX, alpha 0.1)"),
        ("cw_qmix", "centrally weighted QMIX (WQMIX, alpha 0.1)"),
        ("remix_no_bellman", "ReMIX without the Bellman-error factor"),
        ("remix_no_under", "ReMIX without the underestimation factor"),
        ("remix_no_grad", "ReMIX without the mixer-gradient factor"),
    ]
})
# ----- end value decomposition -----
ALGORITHMS["happo"] = (happo.HAPPOConfig, happo.HAPPO, happo.ENV_DEFAULTS, happo.VARIANTS["happo"],
                       "HAPPO: heterogeneous-agent PPO, agents updated one after another in a random order")
ALGORITHMS["tad_dqn"] = (tad_dqn.TADDQNConfig, tad_dqn.TADDQN, tad_dqn.ENV_DEFAULTS, tad_dqn.VARIANTS["tad_dqn"],
                         "TAD-DQN: sequential DQN over previous-action attention, a decentralised policy distilled")
# ----- QTRAN (jmarl/algos/qtran.py) -----
ALGORITHMS["qtran"] = (qtran.QTRANConfig, qtran.QTRAN, qtran.ENV_DEFAULTS, qtran.VARIANTS["qtran"],
                       "QTRAN-base (pymarl: joint Q_jt and V_jt, TD + opt + nopt-min losses)")
# ----- LAN and its ablations (jmarl/algos/lan.py) -----
ALGORITHMS.update({
    name: (lan.LANConfig, lan.LAN, lan.ENV_DEFAULTS, lan.VARIANTS[name], desc)
    for name, desc in [
        ("lan", "LAN: local advantages + a centralised value (Q-proxy V + A_a), double DQN"),
        ("iql", "IQL (LAN without the centralised value: each agent's double DQN on its own history)"),
        ("lan_mean", "LAN with mean-zero advantages (LAN-mean, lan.md App. D)"),
    ]
})
# ----- end LAN -----
# ----- IDDPG: continuous actions (jmarl/algos/iddpg.py) -----
ALGORITHMS["iddpg"] = (iddpg.IDDPGConfig, iddpg.IDDPG, iddpg.ENV_DEFAULTS, iddpg.VARIANTS["iddpg"],
                       "IDDPG: independent DDPG per agent (own actor and critic on own obs; continuous actions)")


def algorithm_names() -> list[str]:
    return sorted(ALGORITHMS)


def _lookup(algo: str):
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algo!r}{suggest(algo, algorithm_names())}; "
                          f"valid: {', '.join(algorithm_names())}")
    return ALGORITHMS[algo]


def config_class(algo: str) -> type:
    return _lookup(algo)[0]


def learner_class(algo: str) -> type:
    return _lookup(algo)[1]


def env_defaults(algo: str, env: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix, values in _lookup(algo)[2].items():
        if env == prefix or (prefix.endswith("_") and env.startswith(prefix)):
            out.update(values)
    return out


def make_config(algo: str, env: str, **overrides: Any) -> Any:
    """Resolve and validate a config; unknown names or bad values raise ConfigError."""
    cls, _, _, preset, _ = _lookup(algo)
    if env not in envs.names():
        raise ConfigError(f"unknown environment {env!r}{suggest(env, envs.names())}; valid: {', '.join(envs.names())}")
    valid = hyperparameters(cls)
    for key in overrides:
        if key not in valid:
            raise ConfigError(f"unknown hyperparameter {key!r} for {algo}{suggest(key, valid)}; "
                              f"valid: {', '.join(valid)}")
    values = {**env_defaults(algo, env), **preset, **overrides, "algo": algo, "env": env}
    return validate(cls(**values))


def make_algorithm(config: Any) -> Any:
    """The learner of ``config``, validated first (the library entry; jmarl.spec validates once itself and
    calls :func:`build_learner`)."""
    return build_learner(validate(config))


def build_learner(config: Any) -> Any:
    """The learner of an already validated ``config``."""
    check_action_kind(config.algo, config.env)
    try:
        return learner_class(config.algo)(config)
    except TypeError:
        check_env_builds(config.env)  # an env that needs constructor arguments says so as a ConfigError
        raise


def action_kinds(algo: str) -> tuple[str, ...]:
    """The action spaces a learner handles: its ``action_kinds`` attribute, discrete only by default."""
    return getattr(learner_class(algo), "action_kinds", ("discrete",))


@functools.cache
def env_action_kind(env: str) -> str:
    try:
        return "continuous" if envs.make(env).spec.continuous else "discrete"
    except TypeError:  # an env that needs constructor arguments: check_env_builds says so
        return "discrete"


def check_action_kind(algo: str, env: str) -> None:
    """One line, before anything compiles, when ``algo`` cannot act in ``env``'s action space."""
    kind = env_action_kind(env)
    if kind not in action_kinds(algo):
        able = [a for a in algorithm_names() if kind in action_kinds(a)]
        raise ConfigError(f"{algo} needs {' or '.join(action_kinds(algo))} actions; {env} has {kind} actions "
                          f"(algorithms for {kind} actions: {', '.join(able)})")


@functools.cache
def check_env_builds(env: str) -> None:
    """Raise ConfigError when ``env`` cannot be built from its name alone (e.g. the generic ``matrix``
    needs a payoff table: library users pass it to ``envs.make``; the runner only has the name)."""
    try:
        envs.make(env)
    except TypeError as err:
        raise ConfigError(f"environment {env!r} cannot be built from its name alone ({err}); it is for "
                          f"envs.make({env!r}, ...) in code. Named variants: "
                          f"{', '.join(n for n in envs.names() if n.startswith(env + '_')) or 'none'}") from None
