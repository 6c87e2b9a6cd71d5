"""Bitwise determinism on CPU: one config and seeds give the same final train state (parameters, optimiser,
env states, replay buffer, RNG) and the same metrics (every train and eval metric at every evaluation point)
from two programs compiled independently (separate ``make_train`` calls, separate ``jax.jit``), and from one
executable run twice.

Not bitwise: the same seed trained alone (a run axis of 1) and beside two others (3). XLA:CPU drops the
size-1 run axis and then lays out and orders some reductions differently (e.g. the advantage normalisation
and the weight gradients reduce over (time, env) in the opposite order), and jax 0.10 hands some reductions
to YNNPACK depending on their shape; the first update differs by ~1e-9 in the parameters and training
amplifies it. ``test_seed_alone_equals_seed_beside_others`` records this as an expected failure (strict, so
it reports when XLA changes).

Each learner compiles three programs and every comparison reuses them. DPO runs in the fast suite; the
other learners (TAD-PPO, ReMIX, LAN and the baselines that are presets of them: IPPO, MAPPO, QMIX, IQL)
compile for about as long each and run with ``-m slow``.
"""

import jax
import numpy as np
import pytest

import jmarl
from jmarl.spec import seed_keys

ON_POLICY = dict(num_envs=4, num_steps=16, hidden_dim=16, epochs=2, num_minibatches=2, eval_every=2, eval_episodes=2,
                 total_steps=4 * 16 * 4)  # 4 updates in 2 chunks
OFF_POLICY = dict(num_envs=4, num_steps=25, hidden_dim=16, batch_size=4, buffer_size=16, eval_every=2,
                  eval_episodes=2, total_steps=4 * 25 * 8)  # 8 updates in 4 chunks; episodes end within 100 steps
CONFIGS = {
    "dpo": ON_POLICY,
    "ippo": ON_POLICY,
    "tad_ppo": ON_POLICY,
    "mappo": ON_POLICY,
    "remix": dict(OFF_POLICY, mixing_embed_dim=8, hypernet_dim=16, central_embed_dim=16, central_hidden_dim=16,
                  target_update_episodes=8),
    "qmix": dict(OFF_POLICY, mixing_embed_dim=8, hypernet_dim=16, target_update_episodes=8),
    "lan": dict(OFF_POLICY, value_embed_dim=16, value_hidden_dim=16, updates_per_episode=1.0, target_update_updates=4),
    "iql": dict(OFF_POLICY, updates_per_episode=1.0, target_update_updates=4),
}
# A metric that is zero unless the learner took gradient steps, so the comparison covers learning.
LEARNED = {"dpo": "train/value_loss", "ippo": "train/value_loss", "tad_ppo": "train/value_loss",
           "mappo": "train/value_loss", "remix": "train/loss", "qmix": "train/loss", "lan": "train/loss",
           "iql": "train/loss"}
FAST = ("dpo",)
SEEDS = 3


def leaves(tree):
    """[(path, numpy array)] with typed PRNG keys as their raw data."""
    def raw(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return [(jax.tree_util.keystr(path), raw(x)) for path, x in jax.tree_util.tree_leaves_with_path(tree)]


def first_difference(a, b):
    """None when ``a`` and ``b`` are bitwise identical, else where and by how much they differ."""
    la, lb = leaves(a), leaves(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            diff = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) if x.shape == y.shape else "shape"
            return f"{path}: max |difference| {diff}"
    return None


def seed_slice(tree, i):
    return jax.tree.map(lambda x: x[i:i + 1], tree)


@pytest.fixture(scope="module", params=[pytest.param(a, marks=() if a in FAST else pytest.mark.slow) for a in CONFIGS])
def runs(request):
    """(algo, 3 seeds from program A, the same from program B, A run again, seed 0 alone from program C)."""
    algo = request.param
    config = jmarl.make_config(algo, "hallway", **CONFIGS[algo])
    keys = seed_keys(0, SEEDS)
    # Three separate make_train calls and jits: A and B are the same program compiled twice.
    program_a, program_b, program_c = (jax.jit(jax.vmap(jmarl.make_train(config))) for _ in range(3))
    first = jax.device_get(program_a(keys))
    second = jax.device_get(program_b(keys))
    again = jax.device_get(program_a(keys))
    alone = lambda: jax.device_get(program_c(keys[:1]))  # noqa: E731  compiled only by the (slow) test that uses it
    return algo, first, second, again, alone


def test_two_compilations_agree_bitwise(runs):
    """The same config and seeds from two independently compiled programs: final state and all metrics."""
    algo, first, second, _, _ = runs
    assert first_difference(first, second) is None, (algo, first_difference(first, second))


def test_one_executable_run_twice_is_identical(runs):
    algo, first, _, again, _ = runs
    assert first_difference(first, again) is None, (algo, first_difference(first, again))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="XLA:CPU orders some reductions differently once the size-1 run axis is "
                                       "dropped (module docstring)")
def test_seed_alone_equals_seed_beside_others(runs):
    algo, first, _, _, alone = runs
    alone = alone()
    assert first_difference(alone, seed_slice(first, 0)) is None, (algo, first_difference(alone, seed_slice(first, 0)))


def test_the_comparison_covers_learning_and_distinct_seeds(runs):
    """Guards against a vacuous pass: gradient steps happened, and seeds give different parameters."""
    algo, first, _, _, _ = runs
    state, metrics = first
    learned = np.asarray(metrics[LEARNED[algo]])  # [seeds, evaluation points]
    assert np.all(learned[:, -1] != 0.0), (algo, learned)
    params = [np.concatenate([x[i].ravel() for _, x in leaves(state.params)]) for i in range(SEEDS)]
    assert not np.array_equal(params[0], params[1]) and not np.array_equal(params[1], params[2])
    assert set(metrics) >= {"env_steps", "eval/return"} and any(k.startswith("train/") for k in metrics)
