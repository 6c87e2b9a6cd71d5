"""No learner's initialisation contains a QR decomposition.

Flax's orthogonal initialiser (the default recurrent kernel of ``nn.GRUCell``) runs a QR; vmapped over
seeds on XLA:CPU that batched QR can wedge the intra-op thread pool, and 32-seed DPO on smax_3m hung
that way. Checked on the traced program (no compiling, nothing that could hang), on an env where every
learner uses its GRU.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jmarl

QR_PRIMITIVES = {"qr", "geqrf", "geqp3", "householder_product"}


def primitives(jaxpr) -> set[str]:
    """Names of every primitive in a closed jaxpr, sub-jaxprs (pjit, scan, cond, custom rules) included."""
    names = set()
    for eqn in jaxpr.jaxpr.eqns if hasattr(jaxpr, "jaxpr") else jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    names |= primitives(sub)
    return names


def init_primitives(init, num_seeds: int = 2) -> set[str]:
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return primitives(jax.make_jaxpr(jax.vmap(init))(keys))


def test_the_check_sees_flax_default_gru():
    """The detector finds the QR of Flax's default GRU cell, so the test below can fail."""
    cell = nn.GRUCell(8)
    init = lambda key: cell.init(key, jnp.zeros((1, 8)), jnp.zeros((1, 4)))  # noqa: E731
    assert init_primitives(init) & QR_PRIMITIVES


# one algorithm per set of networks: the baselines are configurations of these (same modules, other flags)
NETWORK_FAMILIES = ("dpo", "mappo", "tad_ppo", "qmix", "qplex", "remix", "lan", "qtran", "tad_dqn", "happo")
# learners of continuous actions (feed-forward): checked on the differential game
CONTINUOUS_FAMILIES = ("iddpg",)


def test_the_families_cover_every_learner_class():
    classes = {jmarl.ALGORITHMS[name][0] for name in jmarl.algorithm_names()}
    assert {jmarl.ALGORITHMS[name][0] for name in NETWORK_FAMILIES + CONTINUOUS_FAMILIES} == classes


@pytest.mark.parametrize("algo", NETWORK_FAMILIES)
def test_init_has_no_qr(algo):
    learner = jmarl.make_algorithm(jmarl.make_config(algo, "smax_3m"))  # SMAX: every learner has a GRU
    found = init_primitives(learner.init)
    assert "logistic" in found  # a GRU's gates ran, so its initialisers are in the trace
    assert not found & QR_PRIMITIVES, f"{algo}: init runs {sorted(found & QR_PRIMITIVES)}"


@pytest.mark.parametrize("algo", CONTINUOUS_FAMILIES + ("dpo", "happo"))
def test_continuous_init_has_no_qr(algo):
    learner = jmarl.make_algorithm(jmarl.make_config(algo, "differential_game"))
    found = init_primitives(learner.init)
    assert not found & QR_PRIMITIVES, f"{algo}: init runs {sorted(found & QR_PRIMITIVES)}"
