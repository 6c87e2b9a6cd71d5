"""IDDPG: the critic target and both losses against a NumPy reference of the same MLP weights (terminated,
truncated and ongoing transitions), the soft update by hand, the actor's step toward a hand-built quadratic
critic's argmax, padded action dimensions (zero, ignored), exploration (uniform before ``learning_starts``,
clipped Gaussian noise after), truncation in the collected transitions, determinism, seeds vmapped against
separate runs, and learning on the differential game."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_no_qr import QR_PRIMITIVES, init_primitives

import envs
import jmarl
from envs.differential_game import BOUND, BUMPS
from jmarl.algos.iddpg import IDDPG, IDDPGConfig, critic_targets, explore, soft_update
from jmarl.config import ConfigError, validate
from jmarl.optim import gradient_step
from jmarl.spec import seed_keys
from jmarl.sweep import bind

SMALL = dict(hidden_dim=8, num_layers=2, batch_size=4, buffer_size=16, learning_starts=0, eval_episodes=2)


def make(**overrides) -> IDDPG:
    return IDDPG(validate(IDDPGConfig(env="differential_game", **{**SMALL, **overrides})))


# ----- config and refusals ----------------------------------------------------------------------


def test_defaults_registry_and_sweepable_keys():
    cfg = validate(IDDPGConfig(env="differential_game"))
    assert (cfg.lr, cfg.lr_actor, cfg.lr_critic, cfg.hidden_dim, cfg.num_layers) == (5e-4, None, None, 128, 3)
    assert (cfg.gamma, cfg.tau, cfg.batch_size, cfg.buffer_size, cfg.exploration_noise) == (0.99, 0.005, 256,
                                                                                           1_000_000, 0.1)
    assert (cfg.learning_starts, cfg.num_envs, cfg.num_steps, cfg.train_ratio, cfg.share_params) == (10_000, 1, 1,
                                                                                                     1.0, False)
    algo = IDDPG(cfg)
    assert (algo.steps_per_update, algo.grad_steps_per_update) == (1, 1)  # DDPG: one gradient step per env step
    assert jmarl.registry.learner_class("iddpg") is IDDPG and "iddpg" in jmarl.algorithm_names()
    resolved = jmarl.make_config("iddpg", "differential_game")  # the differential game's env defaults
    assert (resolved.lr_actor, resolved.learning_starts, resolved.eval_every) == (None, 1_000, 500)
    assert set(IDDPG.sweepable) == {"lr", "lr_actor", "lr_critic", "gamma", "tau", "exploration_noise",
                                    "max_grad_norm", "learning_starts"}
    for bad, needle in [(dict(tau=0.0), "tau must be > 0.0"), (dict(tau=1.5), "tau must be <= 1.0"),
                        (dict(exploration_noise=-0.1), "exploration_noise must be >= 0.0"),
                        (dict(batch_size=32, buffer_size=16), "batch_size .* must be <= buffer_size")]:
        with pytest.raises(ConfigError, match=needle):
            validate(dataclasses.replace(cfg, **bad))


def test_every_declared_key_can_be_traced():
    """All sweepable keys traced at once through init and one update, lr_actor / lr_critic unset (None) in the
    config: shapes only, nothing compiled."""
    algo = make(num_envs=2, num_steps=2)
    hp = {k: jax.ShapeDtypeStruct((2,), np.int32 if k == "learning_starts" else np.float32) for k in IDDPG.sweepable}

    def update(key, hparams):
        learner = bind(algo, hparams)
        return learner.update(learner.init(key))

    state, _ = jax.eval_shape(jax.vmap(update), jax.ShapeDtypeStruct((2, 2), np.uint32), hp)
    assert state.env_steps.shape == (2,)


def test_shared_parameters_are_one_network_fed_agent_ids():
    shared, separate = make(share_params=True), make()
    assert shared.obs_dim == separate.obs_dim + 2  # one-hot ids of the two agents
    state = jax.eval_shape(shared.update, jax.eval_shape(shared.init, jax.random.PRNGKey(0)))[0]
    kernel = state.params["actor"]["params"]["Dense_0"]["kernel"]
    assert kernel.shape == (3, 8)  # no agent axis
    stacked = jax.eval_shape(separate.init_params, jax.random.PRNGKey(0))["actor"]["params"]["Dense_0"]["kernel"]
    assert stacked.shape == (2, 1, 8)  # agent axis first


def test_init_has_no_qr():
    """tests/test_no_qr.py's check on this learner (its families list only the discrete learners)."""
    found = init_primitives(make().init)
    assert "dot_general" in found or "mul" in found
    assert not found & QR_PRIMITIVES


def test_discrete_envs_are_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        jmarl.make_algorithm(jmarl.make_config("iddpg", "matrix_dpo4"))
    message = str(err.value)
    assert message.startswith("iddpg needs continuous actions; matrix_dpo4 has discrete actions")
    assert "\n" not in message
    with pytest.raises(ConfigError, match="^iddpg needs continuous actions; hallway has discrete actions"):
        IDDPG(validate(IDDPGConfig(env="hallway")))  # built directly, past the registry's check
    with pytest.raises(ConfigError, match="must be a whole number >= 1"):
        make(train_ratio=0.5)  # half a gradient step per update of one env step
    assert make(train_ratio=0.5, num_envs=4).grad_steps_per_update == 2


# ----- the pure pieces by hand ------------------------------------------------------------------


def test_critic_targets_by_hand():
    """Rows: terminated (no bootstrap), truncated (terminated False: bootstraps), ongoing."""
    reward = jnp.array([1.0, 2.0, 3.0])
    terminated = jnp.array([True, False, False])
    next_q = jnp.array([[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]])
    y = critic_targets(reward, terminated, next_q, 0.5)
    np.testing.assert_allclose(y, [[1.0, 1.0], [5.5, 6.0], [7.5, 8.0]])


def test_soft_update_by_hand():
    params = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(3.0)}}
    target = {"a": jnp.array([3.0, 4.0]), "b": {"c": jnp.array(5.0)}}
    out = soft_update(params, target, 0.25)  # 0.25 * params + 0.75 * target
    np.testing.assert_allclose(out["a"], [2.5, 3.5])
    np.testing.assert_allclose(out["b"]["c"], 4.5)
    assert soft_update(params, target, 1.0)["b"]["c"] == 3.0


# ----- NumPy reference of the networks and losses -----------------------------------------------


def np_mlp(tree, i, x, layers: int, tanh: bool) -> np.ndarray:
    """Agent i's Dense_0..Dense_{layers-1} + ReLU, then the head Dense_{layers}, from stacked parameters."""
    p = tree["params"]
    for k in range(layers):
        x = np.maximum(x @ np.asarray(p[f"Dense_{k}"]["kernel"][i]) + np.asarray(p[f"Dense_{k}"]["bias"][i]), 0.0)
    out = x @ np.asarray(p[f"Dense_{layers}"]["kernel"][i]) + np.asarray(p[f"Dense_{layers}"]["bias"][i])
    return np.tanh(out) if tanh else out[..., 0]


def np_losses(params, target, batch, gamma: float, layers: int) -> tuple[float, float]:
    """(critic loss, actor loss), each the sum over agents of the agent's batch mean, by loops over agents."""
    b = {k: np.asarray(v, np.float64) for k, v in batch.items()}
    n = b["obs"].shape[1]
    critic_loss = actor_loss = 0.0
    for i in range(n):
        next_u = np_mlp(target["actor"], i, b["next_obs"][:, i], layers, True) * b["next_avail"][:, i]
        next_q = np_mlp(target["critic"], i, np.concatenate([b["next_obs"][:, i], next_u], -1), layers, False)
        y = b["reward"] + gamma * (1.0 - b["terminated"]) * next_q
        q = np_mlp(params["critic"], i, np.concatenate([b["obs"][:, i], b["action"][:, i]], -1), layers, False)
        critic_loss += np.mean((q - y) ** 2)
        u = np_mlp(params["actor"], i, b["obs"][:, i], layers, True) * b["avail"][:, i]
        actor_loss += -np.mean(np_mlp(params["critic"], i, np.concatenate([b["obs"][:, i], u], -1), layers, False))
    return critic_loss, actor_loss


def random_params(algo: IDDPG, seed: int):
    """The learner's parameter shapes with weights large enough for every layer to matter."""
    shapes = jax.eval_shape(algo.init_params, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, 0.7, x.shape), jnp.float32), shapes)


def hand_batch(n: int, d: int, a: int, avail: np.ndarray) -> dict[str, jnp.ndarray]:
    """B=3: a terminated transition, a truncated one (terminated False, next_obs the final observation) and an
    ongoing one; padded action dimensions (``avail`` False) hold 0 as the learner stores them."""
    rng = np.random.default_rng(3)
    avail = np.broadcast_to(avail, (3, n, a))
    return {"obs": jnp.asarray(rng.normal(size=(3, n, d)), jnp.float32),
            "action": jnp.asarray(rng.uniform(-1, 1, (3, n, a)) * avail, jnp.float32),
            "reward": jnp.array([1.5, -2.0, 0.5]), "next_obs": jnp.asarray(rng.normal(size=(3, n, d)), jnp.float32),
            "terminated": jnp.array([True, False, False]), "avail": jnp.asarray(avail),
            "next_avail": jnp.asarray(avail)}


def test_losses_match_the_numpy_reference():
    algo = make(num_layers=2, hidden_dim=5)
    params, target = random_params(algo, 0), random_params(algo, 1)
    batch = hand_batch(2, 1, 1, np.ones((2, 1), bool))
    critic_loss = jax.jit(lambda c, t, b: algo.critic_loss(c, t, b, 0.9)[0])
    critic = critic_loss(params["critic"], target, batch)
    actor, _ = jax.jit(algo.actor_loss)(params["actor"], params["critic"], batch)
    ref_critic, ref_actor = np_losses(params, target, batch, 0.9, 2)
    np.testing.assert_allclose([critic, actor], [ref_critic, ref_actor], rtol=2e-5)
    # the terminated row's target is its reward alone: other target networks give the same loss there
    only_terminated = {k: v[:1] for k, v in batch.items()}
    ref = np_losses(params, target, only_terminated, 0.9, 2)[0]
    assert float(critic_loss(params["critic"], random_params(algo, 5), only_terminated)) == pytest.approx(ref, rel=2e-5)


def test_the_actor_step_moves_mu_toward_the_critics_argmax():
    """A hand-built quadratic critic Q_i(o, u) = -(u - c_i)^2 stands in for the networks: a few actor steps
    move each agent's mu toward its own c_i, and the critic's parameters are not touched by the actor loss."""
    algo = make(lr_actor=1e-2, hidden_dim=16)
    centre = jnp.array([[0.6], [-0.4]])  # per agent
    algo.q = lambda critic_params, obs, u: -jnp.sum(jnp.square(u - centre), axis=-1)
    params = jax.jit(algo.init_params)(jax.random.PRNGKey(0))
    opt = jax.jit(jax.vmap(algo.tx_actor.init))(params["actor"])
    batch = hand_batch(2, 1, 1, np.ones((2, 1), bool))
    obs, avail = batch["obs"], batch["avail"]
    mu = jax.jit(algo.mu)
    start = np.abs(np.asarray(mu(params["actor"], obs, avail) - centre))
    actor = params["actor"]
    step = jax.jit(lambda p, o: gradient_step(algo.actor_loss, algo.tx_actor, p, o, None, batch, per_agent=True)[:2])
    for _ in range(40):
        actor, opt = step(actor, opt)
    end = np.abs(np.asarray(mu(actor, obs, avail) - centre))
    assert (end < start).all() and end.mean() < 0.3 * start.mean(), (start, end)


# ----- padded action dimensions, exploration, truncation: a small env with a padded agent ----------


class PaddedEnv(envs.MultiAgentEnv):
    """Two agents, two action dimensions in [-1, 3]; agent 1 controls only the first. Each agent observes the
    action its dimensions received on the last step (zeros at reset), then a 1. Never terminates: the limit of
    3 steps truncates. Reward: -(sum of squared applied actions)."""

    AVAIL = np.array([[True, True], [True, False]])

    def __init__(self):
        self.spec = envs.EnvSpec(name="padded", num_agents=2, obs_dim=3, state_dim=1, num_actions=2, episode_limit=3,
                                 continuous=True, action_bounds=(-1.0, 3.0))

    def _timestep(self, applied, reward=0.0):
        obs = jnp.concatenate([applied, jnp.ones((2, 1))], axis=-1)
        return envs.make_timestep(obs, jnp.ones(1), self.AVAIL, reward, False)

    def reset_env(self, key):
        return jnp.zeros(()), self._timestep(jnp.zeros((2, 2)))

    def step_env(self, key, state, actions):
        return state, self._timestep(actions, -jnp.sum(jnp.square(actions)))


@pytest.fixture(scope="module")
def padded():
    """A learner on PaddedEnv: 2 envs x 4 steps per update, uniform actions for the first 8 env steps; the
    initial state and the states and metrics after two updates."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(envs, "make", lambda name, **kwargs: PaddedEnv())
        algo = IDDPG(validate(IDDPGConfig(env="differential_game", **{
            **SMALL, "num_envs": 2, "num_steps": 4, "learning_starts": 8, "exploration_noise": 0.1})))
    state0 = algo.init(jax.random.PRNGKey(0))
    update = jax.jit(algo.update)
    state1, metrics1 = update(state0)
    state2, metrics2 = update(state1)
    return algo, state0, (state1, metrics1), (state2, metrics2)


def test_padded_dims_are_zero_and_ignored(padded):
    algo, state0, (state1, _), (state2, _) = padded
    avail = jnp.asarray(PaddedEnv.AVAIL)
    params = random_params(algo, 2)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2, 3)), jnp.float32)
    mu = jax.jit(algo.mu)(params["actor"], obs, jnp.broadcast_to(avail, (5, 2, 2)))
    assert (mu[:, 1, 1] == 0).all() and (mu[:, 0] != 0).all()
    # the env receives 0 there, not the centre of the bounds (1.0), greedy and exploring alike
    act = jax.jit(algo.act)(params, obs, jnp.broadcast_to(avail, (5, 2, 2)))
    assert (act[:, 1, 1] == 0).all() and ((act[:, 0] >= -1) & (act[:, 0] <= 3)).all()
    stored = state2.buffer.experience
    assert (stored["action"][0, :, 1, 1] == 0).all() and (stored["next_obs"][0, :, 1, 1] == 0).all()
    assert (stored["action"][0, :, 0] != 0).all()
    # ignored: the actor's output for the padded dimension gets no gradient; the critic sees 0 there
    batch = {k: v[0, :4] for k, v in stored.items()}
    grads = jax.jit(jax.grad(lambda p: algo.actor_loss(p, params["critic"], batch)[0]))(params["actor"])
    head = grads["params"]["Dense_2"]
    assert (head["kernel"][1, :, 1] == 0).all() and head["bias"][1, 1] == 0
    assert (head["kernel"][1, :, 0] != 0).any() and (head["kernel"][0, :, 1] != 0).any()


def test_exploration_uniform_then_clipped_noise(padded):
    algo, state0, (state1, m1), (state2, m2) = padded
    stored = jax.tree.map(np.asarray, state2.buffer.experience)
    act = stored["action"][0]  # [16, N, A]: update 1's 8 transitions (time-major), then update 2's
    assert (np.abs(act) <= 1).all()
    # update 1 ran at env steps 0, 2, 4, 6 < learning_starts = 8: uniform actions, far from mu (about 0)
    mu1 = np.asarray(jax.jit(algo.mu)(state0.params["actor"], stored["obs"][0, :8], stored["avail"][0, :8]))
    assert np.abs(act[:8, 0] - mu1[:, 0]).max() > 0.5
    # update 2 at env steps 8..14: mu of the parameters that collected, plus noise of std 0.1
    mu2 = np.asarray(jax.jit(algo.mu)(state1.params["actor"], stored["obs"][0, 8:], stored["avail"][0, 8:]))
    noise = act[8:] - mu2
    assert np.abs(noise[:, 0]).max() < 0.5 and np.abs(noise[:, 0]).max() > 0.0
    # learning starts once 8 env steps are in: both updates took their 2 * 4 gradient steps
    assert float(m1["gradient_steps"]) == float(m2["gradient_steps"]) == 8.0 and int(state2.grad_steps) == 16
    assert float(m1["buffer_transitions"]) == 8.0 and float(m2["buffer_transitions"]) == 16.0

    # the pure function at scale: uniform fills [-1, 1]; noise is clipped to the bounds near them
    key = jax.random.PRNGKey(1)
    mu = jnp.full((20_000, 2, 2), 0.95)
    avail = jnp.broadcast_to(jnp.asarray(PaddedEnv.AVAIL), mu.shape)
    noisy = np.asarray(explore(key, mu, avail, 0.1, jnp.zeros(20_000, bool)))
    uniform = np.asarray(explore(key, mu, avail, 0.1, jnp.ones(20_000, bool)))
    for u in (noisy, uniform):
        assert (np.abs(u) <= 1).all() and (u[:, 1, 1] == 0).all()
    real = noisy[:, 0]
    assert (real == 1.0).mean() == pytest.approx(0.31, abs=0.02)  # P(N(0, 0.1) > 0.05)
    assert np.std(real[real < 1.0]) < 0.1 and real.min() > 0.95 - 0.6
    assert uniform[:, 0].min() < -0.99 and uniform[:, 0].max() > 0.99
    assert np.mean(uniform[:, 0]) == pytest.approx(0.0, abs=0.02) and np.std(uniform[:, 0]) == pytest.approx(
        1 / np.sqrt(3), abs=0.01)
    # env scale: within the bounds [-1, 3]
    env_actions = np.asarray(algo.env_actions(jnp.asarray(uniform), avail))
    assert env_actions[:, 0].min() >= -1.0 and env_actions[:, 0].max() <= 3.0


def test_truncation_stores_the_final_observation_and_bootstraps(padded):
    """Step 3 of every episode is truncated: the transition is not terminated, and its next observation is the
    last applied action (the env's final observation), not the reset observation the policy acts on next."""
    _, _, _, (state2, _) = padded
    stored = jax.tree.map(np.asarray, state2.buffer.experience)
    assert not stored["terminated"].any()
    obs, action, next_obs = stored["obs"][0], stored["action"][0], stored["next_obs"][0]
    t = np.repeat(np.arange(8), 2)  # time-major: transition k is step k // 2 of env k % 2
    # the obs after every transition shows the applied action (env scale: 1 + 2u, clipped; padded 0)
    applied = np.where(PaddedEnv.AVAIL, 1.0 + 2.0 * action, 0.0)
    np.testing.assert_allclose(next_obs[..., :2], applied, rtol=1e-6, atol=1e-6)
    # steps 0 and 3 of the env's clock start episodes (zeros); the others continue from the last action
    starts = (t % 3) == 0
    assert (obs[starts, :, :2] == 0).all()
    np.testing.assert_allclose(obs[~starts, :, :2], next_obs[np.flatnonzero(~starts) - 2, :, :2])


# ----- determinism, seeds vmapped against separate runs, learning --------------------------------

# A budget for CPU: 2,000 one-step episodes, learning after 200, 1,800 gradient steps on batches of 64 with
# 32-unit networks. With these small networks and batches App. B's rates (5e-4 for both) let the actor outrun its
# critic on about a third of the seeds: its tanh saturates at a bound (one agent at -10, return about -2.2) where
# its gradient vanishes. Lillicrap et al.'s own rates (actor 1e-4, critic 1e-3) cleared -1 on 16 of 16 seeds.
LEARN = dict(total_steps=2_000, learning_starts=200, eval_every=500, buffer_size=2_000, hidden_dim=32, batch_size=64,
             eval_episodes=4, lr_actor=1e-4, lr_critic=1e-3)


@pytest.fixture(scope="module")
def runs():
    """(2 seeds vmapped in one program, each seed alone from a second program, seed 0 alone again)."""
    config = jmarl.make_config("iddpg", "differential_game", **LEARN)
    keys = seed_keys(0, 2)
    train = jmarl.make_train(config)
    together = jax.device_get(jax.jit(jax.vmap(train))(keys))
    alone = jax.jit(train)
    separate = [jax.device_get(alone(k)) for k in keys]
    again = jax.device_get(alone(keys[0]))
    return config, together, separate, again


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_same_seed_same_numbers(runs):
    _, _, separate, again = runs
    for a, b in zip(leaves(separate[0]), leaves(again), strict=True):
        assert a.tobytes() == b.tobytes()


def test_vmapped_seeds_equal_separate_runs(runs):
    """Each seed of the vmapped program against the same seed trained alone. Not bitwise: XLA:CPU reduces in
    another order without the run axis (tests/test_determinism.py), and a thousand gradient steps amplify the
    rounding; so the first evaluation point (300 gradient steps in) closely, and the final returns to 0.1."""
    _, (_, together), separate, _ = runs
    for i, (_, metrics) in enumerate(separate):
        assert set(metrics) == set(together)
        for k, v in metrics.items():
            np.testing.assert_allclose(v[0], together[k][i, 0], rtol=1e-4, atol=1e-5, err_msg=k)
        np.testing.assert_allclose(metrics["eval/return"][-1], together["eval/return"][i, -1], atol=0.1)
        assert int(metrics["env_steps"][-1]) == 2_000
    assert together["eval/return"][0, -1] != together["eval/return"][1, -1]  # the seeds differ


def test_learns_the_differential_game(runs):
    """From the untrained greedy policy (both actions near 0: -4.4) and the uniform random policy (-6.9) to above
    -1: the wide bump at (-5, -5) (0) or the optimum at (5, 5) (10), on every seed."""
    config, (state, metrics), _, _ = runs
    final = np.asarray(metrics["eval/return"][:, -1])
    assert (final > -1.0).all(), metrics["eval/return"]
    # the random policy's return: the payoff (NumPy, from the env's constants) at uniform joint actions
    joint = np.random.default_rng(0).uniform(-BOUND, BOUND, (100_000, 2))
    random = np.mean(np.max([h * -np.sum(((joint - c) / w) ** 2, axis=-1) + off for h, c, w, off in BUMPS], axis=0))
    assert random < -5.0, random
    learner = jmarl.make_algorithm(config)
    untrained = jax.jit(learner.evaluate)(learner.init(jax.random.PRNGKey(0)))["return"]
    assert float(untrained) < -1.0
    assert (np.asarray(metrics["train/gradient_steps"][:, -1]) == 1.0).all()
    assert (np.asarray(metrics["nonfinite/params"]) == -1).all()


@pytest.mark.slow
def test_learns_with_the_papers_rates_and_default_networks():
    """The defaults (App. B's 5e-4 for both, 128-unit networks, batch 256) on 4 seeds: the greedy return clears
    -1 after 5,000 env steps (measured: 4 of 4 here, 8 of 8 at 3,000 steps)."""
    config = jmarl.make_config("iddpg", "differential_game", total_steps=5_000, eval_episodes=4)
    _, metrics = jax.jit(jax.vmap(jmarl.make_train(config)))(seed_keys(0, 4))
    final = np.asarray(metrics["eval/return"][:, -1])
    assert final.mean() > -1.0 and (final > -1.0).sum() >= 3, final


def test_the_compiled_update_writes_the_replay_in_place():
    """At the default network and batch sizes, one seed under a vmap (a benchmark's or a one-run block's program):
    no copy of a buffer-sized array in the compiled scan of updates. (A scan of gradient steps under a cond let
    XLA fuse each update's replay write into the batch gathers, then write the whole buffer into a fresh copy,
    twice per env step, in exactly this program.)"""
    capacity = 54_321  # a size no other array has
    algo = IDDPG(validate(IDDPGConfig(env="differential_game", buffer_size=capacity, learning_starts=0)))
    state = jax.vmap(algo.init)(jax.random.split(jax.random.PRNGKey(0), 1))
    updates = jax.vmap(lambda s: jax.lax.scan(lambda c, _: (algo.update(c)[0], None), s, None, 4))
    compiled = jax.jit(updates, donate_argnums=0).lower(state).compile()
    copies = [line for line in compiled.as_text().splitlines() if f"{capacity}" in line and " copy(" in line]
    assert not copies, copies[:4]
