"""Active masks: agents out of play (dead SMAX units, removed predators) leave the on-policy losses.

The env side is checked on scripted episodes against signals the active flag is not computed from
(zero observations, stop-only actions, the agents-remaining count); the learner side against NumPy
computations over the active steps only, and bit for bit against the unmasked learner when every
agent is active.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import jmarl
from envs.predator_prey import STAY
from envs.smax import SMAX, STOP_ACTION
from jmarl import onpolicy
from jmarl.masks import masked_mean

LEFT = 3  # SMAX: 0 up, 1 right, 2 down, 3 left


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def leaves_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----- the env signal ------------------------------------------------------------------------------


# one env of each family (the others share its code)
FAMILIES = ("checkers", "differential_game", "hallway", "lbf", "rware", "mamujoco_hopper_3x1", "markov_matrix",
            "matrix_dpo1", "mpe_circle_control",
            "predator_prey", "smax_3m", "stochastic_game")


def test_every_env_reports_one_active_flag_per_agent():
    """Shapes from an abstract trace (no compilation); the values of the all-true default by hand."""
    assert {name.split("_")[0] for name in FAMILIES} >= {name.split("_")[0] for name in envs.names()}
    for name in FAMILIES:
        env = envs.wrap(envs.make(name))
        _, ts = jax.eval_shape(env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32))
        assert ts.active.shape == (env.spec.num_agents,) and ts.active.dtype == jnp.bool_, name
    ts = envs.make_timestep(jnp.zeros((3, 2)), jnp.zeros(1), jnp.ones((3, 4), bool))
    np.testing.assert_array_equal(ts.active, [True, True, True])
    with pytest.raises(ValueError, match=r"active must have shape \(3,\)"):
        envs.make_timestep(jnp.zeros((3, 2)), jnp.zeros(1), jnp.ones((3, 4), bool), active=jnp.ones(2, bool))


def test_predator_prey_removed_agents_are_inactive():
    """Agents 3 and 6 were removed by a capture: they see zeros, may only stay and are not active; the
    agents_remaining count agrees."""
    env = envs.make("predator_prey")
    agents = [(0, 0), (0, 2), (5, 5), (5, 7), (7, 0), (7, 2), (9, 5), (9, 9)]
    prey = [(0, 1)] + [(3, c) for c in range(0, 10, 2)] + [(4, 1), (4, 3)]
    np.testing.assert_array_equal(env.observe(env.state_from_positions(np.array(agents), np.array(prey))).active,
                                  np.ones(8, bool))
    alive = np.array([True, True, True, False, True, True, False, True])
    ts = env.observe(env.state_from_positions(np.array(agents), np.array(prey), agent_alive=alive))
    assert int(ts.info["agents_remaining"]) == 6
    removed = ~np.asarray(ts.obs).any(axis=-1)
    np.testing.assert_array_equal(removed, ~alive)
    assert (np.asarray(ts.avail_actions)[removed] == (np.arange(6) == STAY)).all()
    np.testing.assert_array_equal(ts.active, alive)


@pytest.fixture(scope="module")
def smax_wall_episode():
    """smax_3m without enemy fire, a 12-step limit, under AutoReset: ally 0 walks left into the border
    (a unit that touches it dies) while allies 1 and 2 stop, for 14 steps: one episode and the first two
    steps of the next. Recorded as a learner records it: the TimeStep acted on, then what the step gave."""
    env = envs.wrap(SMAX(map_name="3m", enemy_shoots=False, episode_limit=12))
    actions = jnp.array([LEFT, STOP_ACTION, STOP_ACTION], jnp.int32)

    def run(key):
        state, ts = env.reset(key)

        def step(carry, k):
            state, ts = carry
            state, nxt = env.step(k, state, actions)
            return (state, nxt), dict(active=ts.active, obs=ts.obs, avail=ts.avail_actions, done=nxt.done,
                                      next_obs=nxt.info["final_obs"])

        return jax.lax.scan(step, (state, ts), jax.random.split(key, 14))[1]

    return jax.tree.map(np.asarray, jax.jit(run)(jax.random.PRNGKey(5)))


def test_smax_agent_that_dies_is_active_on_its_last_step_only(smax_wall_episode):
    out = smax_wall_episode
    done = out["done"]
    assert np.flatnonzero(done).tolist() == [11], "one episode of 12 steps (truncated), then a new one"
    # the step on which ally 0 dies: the first whose resulting observation is all zeros (dead units see zeros)
    death = int(np.flatnonzero(~out["next_obs"][:, 0].any(-1))[0])
    assert 3 <= death <= 7  # it starts within 2 of x = 8 and walks 1.575 per step
    expected = np.ones((14, 3), bool)
    expected[death + 1:12, 0] = False  # out of play until the episode ends; active again after the reset
    np.testing.assert_array_equal(out["active"], expected)
    # the independent signals agree on every inactive step: zero observation, stop the only action
    inactive = ~out["active"]
    assert not out["obs"][inactive].any()
    np.testing.assert_array_equal(out["avail"][inactive], np.eye(8, dtype=bool)[np.full(inactive.sum(), STOP_ACTION)])
    assert out["obs"][~inactive].any(-1).all()


# ----- masked statistics -------------------------------------------------------------------------------


def test_masked_mean_and_normalise_by_hand():
    x = jnp.array([[1.0, 10.0], [3.0, 1e30], [5.0, -4.0]])
    active = jnp.array([[True, False], [True, False], [False, True]])
    np.testing.assert_allclose(masked_mean(x, active, axis=0), [2.0, -4.0])
    np.testing.assert_allclose(masked_mean(x, active), (1 + 3 - 4) / 3)
    np.testing.assert_array_equal(masked_mean(x, jnp.zeros_like(active), axis=0), [0.0, 0.0])
    # column 0: active 1 and 3 (mean 2, std 1); column 1: only -4 (std 0, so 0 after centring)
    np.testing.assert_allclose(onpolicy.masked_normalise(x, active, axis=0, eps=0.0 + 1e-8),
                               [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], atol=1e-6)
    none = onpolicy.masked_normalise(x, jnp.zeros_like(active), axis=0)
    np.testing.assert_array_equal(none, np.zeros((3, 2)))
    # the gradient reaches the active entries only, each with weight 1 / count
    grad = jax.grad(lambda v: masked_mean(v, active, axis=0).sum())(x)
    np.testing.assert_array_equal(grad, [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])


# ----- DPO: the masked loss and beta rule against NumPy ------------------------------------------------

T, E, N, A = 4, 2, 2, 2  # hallway: 2 agents, 2 actions
# env 0: agent 1 dies at t=1 (active there, not after); env 1: agent 0 leaves play at t=3
ACTIVE = np.ones((T, E, N), bool)
ACTIVE[2:, 0, 1] = False
ACTIVE[3, 1, 0] = False


def dpo(algo="dpo", **overrides):
    return jmarl.make_algorithm(jmarl.make_config(algo, "hallway", num_envs=E, num_steps=T, hidden_dim=8,
                                                  recurrent=False, **overrides))


def random_batch(rng, obs_dim, **extra):
    """A hand-built batch: random observations, actions, old log-probs and values, advantages and targets."""
    reset = np.zeros((T, E), bool)
    reset[0] = True
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    traj = dict(obs=f32(rng.normal(size=(T, E, N, obs_dim))), avail=np.ones((T, E, N, A), bool), active=ACTIVE,
                reset=reset, actions=rng.integers(0, A, size=(T, E, N)).astype(np.int32),
                values=f32(rng.normal(size=(T, E, N))), **{k: f32(v) for k, v in extra.items()})
    return traj, f32(rng.normal(size=(T, E, N))), f32(rng.normal(size=(T, E, N)))


def dpo_loss_over_active(cfg, betas, traj, adv, targets, logp_new, values):
    """Eq. 20 per agent with every expectation over that agent's active steps, plus the clipped value loss."""
    act = traj["actions"][..., None]
    lp_new, lp_old = np.asarray(logp_new, np.float64), np.asarray(traj["logp"], np.float64)
    ratio = np.exp(np.take_along_axis(lp_new, act, -1) - np.take_along_axis(lp_old, act, -1))[..., 0]
    surrogate = ratio * adv / N  # DPO: no clip, the 1/N factor
    kl = (np.exp(lp_old) * (lp_old - lp_new)).sum(-1)
    entropy = -(np.exp(lp_new) * lp_new).sum(-1)
    v, old_v = np.asarray(values, np.float64), traj["values"]
    v_err = np.maximum((v - targets) ** 2, (old_v + np.clip(v - old_v, -cfg.value_clip, cfg.value_clip) - targets) ** 2)
    total = 0.0
    for i in range(N):
        on = ACTIVE[..., i]
        objective = (surrogate[..., i][on].mean() - betas[i][0] * np.sqrt(kl[..., i][on] + cfg.kl_floor).mean()
                     - betas[i][1] * kl[..., i][on].mean() + cfg.ent_coef * entropy[..., i][on].mean())
        total += 0.5 * v_err[..., i][on].mean() - objective
    return total, kl[ACTIVE].mean()


def test_dpo_masked_loss_matches_numpy_over_active_steps():
    """The network is not under test: its outputs are read back and the objective recomputed in NumPy."""
    algo, betas = dpo(active_masks=True), [[0.7, 0.3], [1.5, 2.0]]
    rng = np.random.default_rng(0)
    logp_old = np_log_softmax(rng.normal(size=(T, E, N, A)))
    traj, adv, targets = random_batch(rng, algo.env.spec.obs_dim, logp=logp_old)
    traj["critic_obs"] = traj["obs"]
    carries0, b = algo.init_carries(E), jnp.asarray(betas, jnp.float32)

    @jax.jit
    def evaluate(params, traj, adv, targets):
        (total, stats), grads = jax.value_and_grad(algo.loss, has_aux=True)(params, b, carries0, traj, adv, targets)
        return total, stats, grads, algo._replay(params, carries0, traj)

    params = jax.jit(algo.init)(jax.random.PRNGKey(0)).params
    total, stats, grads, (logp_new, values) = evaluate(params, traj, adv, targets)
    expected, kl_active = dpo_loss_over_active(algo.config, betas, traj, adv, targets, logp_new, values)
    np.testing.assert_allclose(float(total), expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(float(stats["kl"]), kl_active, rtol=2e-5)
    # recorded without masks (every step active) the same batch gives another number
    assert abs(float(evaluate(params, {**traj, "active": np.ones_like(ACTIVE)}, adv, targets)[0]) - expected) > 1e-3
    # what inactive steps hold reaches neither the loss nor its gradient
    off = ~ACTIVE
    other = {**traj, "actions": np.where(off, 1 - traj["actions"], traj["actions"]),
             "logp": np.where(off[..., None], np.log(np.float32(0.5)), traj["logp"]),
             "values": np.where(off, np.float32(100.0), traj["values"])}
    adv2 = np.where(off, rng.normal(size=adv.shape) * 50, adv).astype(np.float32)
    again, _, grads2, _ = evaluate(params, other, adv2, np.where(off, np.float32(-70.0), targets))
    leaves_equal((again, grads2), (total, grads))


def test_dpo_advantages_normalised_over_active_steps_per_agent():
    x = np.random.default_rng(4).normal(size=(T, E, N)).astype(np.float32) * 3 + 1
    x[~ACTIVE] = 1e4  # would dominate the statistics if they counted
    out = np.asarray(onpolicy.masked_normalise(jnp.asarray(x), jnp.asarray(ACTIVE), axis=(0, 1)))
    for i in range(N):
        on = ACTIVE[..., i]
        v = x[..., i][on].astype(np.float64)
        np.testing.assert_allclose(out[..., i][on], (v - v.mean()) / v.std(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out[..., i][~on], 0.0)


def test_dpo_betas_adapt_to_the_kl_of_active_steps():
    """d_target 0.01, delta 1.5: betas x 2 above 0.015, / 2 below 0.00667. Agent 0's KL is 0.01 on its 7
    active steps and 0.5 on its inactive one; agent 1's 0.001 on its 6 active steps and 1.0 on the other 2.
    Over active steps agent 0 keeps its betas and agent 1 halves them; over all steps (0.071, 0.251) both
    would double. An agent with no active step keeps its betas."""
    algo = dpo(active_masks=True, d_target=0.01)
    kl = jnp.asarray(np.where(ACTIVE, np.array([0.01, 0.001]), np.array([0.5, 1.0])).astype(np.float32))
    betas = jnp.array([[0.2, 0.4], [0.2, 0.4]])
    np.testing.assert_allclose(algo.adapt_betas(betas, kl, jnp.asarray(ACTIVE)), [[0.2, 0.4], [0.1, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(algo.adapt_betas(betas, kl), [[0.4, 0.8], [0.4, 0.8]], rtol=1e-6)
    nobody_1 = ACTIVE.copy()
    nobody_1[..., 1] = False
    np.testing.assert_allclose(algo.adapt_betas(betas * 3, kl, jnp.asarray(nobody_1)), [[0.6, 1.2], [0.6, 1.2]],
                               rtol=1e-6)
    # shared rule: the mean over agents of their active-step means, (0.01 + 0.001) / 2 < 0.00667
    shared = jmarl.make_algorithm(dataclasses.replace(algo.config, beta_shared=True))
    np.testing.assert_allclose(shared.adapt_betas(betas, kl, jnp.asarray(ACTIVE)), [[0.1, 0.2], [0.1, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(shared.adapt_betas(betas, kl), [[0.4, 0.8], [0.4, 0.8]], rtol=1e-6)


# ----- TAD-PPO / MAPPO: the masked loss against NumPy ---------------------------------------------------


def np_huber(err, delta):
    a = np.abs(err)
    return np.where(a <= delta, 0.5 * err ** 2, delta * (a - 0.5 * delta))


def test_tad_ppo_masked_loss_matches_numpy_over_active_steps():
    """TAD-PPO's loss (MAPPO's code plus distillation) on a hand-built batch; network outputs read back."""
    algo = jmarl.make_algorithm(jmarl.make_config("tad_ppo", "hallway", num_envs=E, num_steps=T, hidden_dim=8,
                                                  attn_heads=2, attn_dim=2))
    assert algo.config.active_masks  # MAPPO's default, inherited by TAD-PPO
    rng, spec = np.random.default_rng(2), algo.env.spec
    traj, adv, targets = random_batch(rng, spec.obs_dim, state=rng.normal(size=(T, E, spec.state_dim)),
                                      logp=rng.uniform(-1.2, -0.3, size=(T, E, N)))  # ratios in and out of the clip
    targets[0, 0, 0] += 30.0  # beyond the Huber delta
    carries0 = algo.init_carries(E)

    @jax.jit
    def evaluate(params, traj):
        return algo.loss(params, carries0, traj, adv, targets), algo.replay(params, carries0, traj)

    params = jax.jit(algo.init)(jax.random.PRNGKey(1)).params
    (total, stats), (logits, distill_logits, values) = evaluate(params, traj)
    logp = np_log_softmax(logits)
    logp_a = np.take_along_axis(logp, traj["actions"][..., None], -1)[..., 0]
    cfg, on, values = algo.config, ACTIVE, np.asarray(values, np.float64)
    ratio = np.exp(logp_a - traj["logp"])
    assert (ratio[on] > 1.2).any() and (ratio[on] < 0.8).any()
    surrogate = np.minimum(ratio * adv, np.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
    entropy = -(np.exp(logp) * logp).sum(-1)
    old = traj["values"]
    clipped = old + np.clip(values - old, -cfg.value_clip, cfg.value_clip)
    v_loss = np.maximum(np_huber(values - targets, cfg.huber_delta), np_huber(clipped - targets, cfg.huber_delta))
    distill = -np.take_along_axis(np_log_softmax(distill_logits), traj["actions"][..., None], -1)[..., 0]
    expected = (-surrogate[on].mean() - cfg.ent_coef * entropy[on].mean() + cfg.value_coef * v_loss[on].mean()
                + cfg.distill_coef * distill[on].mean())
    np.testing.assert_allclose(float(stats["distill_loss"]), distill[on].mean(), rtol=2e-5)
    np.testing.assert_allclose(float(stats["value_loss"]), v_loss[on].mean(), rtol=2e-5)
    np.testing.assert_allclose(float(stats["entropy"]), entropy[on].mean(), rtol=2e-5)
    np.testing.assert_allclose(float(total), expected, rtol=2e-5, atol=2e-5)
    unmasked = {**traj, "active": np.ones_like(ACTIVE)}  # what a rollout without masks records
    assert abs(float(evaluate(params, unmasked)[0][0]) - expected) > 1e-3


# ----- all active: the option changes nothing, bit for bit ---------------------------------------------


def test_the_option_decides_what_the_rollout_records():
    flags = jnp.array([[True, False, True], [False, False, True]])
    np.testing.assert_array_equal(onpolicy.recorded_active(flags, True), flags)
    np.testing.assert_array_equal(onpolicy.recorded_active(flags, False), np.ones((2, 3), bool))
    assert not jmarl.make_config("dpo", "smax_3m").active_masks  # the paper bans MAPPO's SMAC tricks
    assert not jmarl.make_config("ippo", "smax_3m").active_masks
    assert jmarl.make_config("mappo", "smax_3m").active_masks  # MAPPO's reference default
    assert jmarl.make_config("tad_ppo", "smax_3m").active_masks


def test_all_active_masks_change_nothing_bitwise():
    """An update on hallway (agents never leave) with and without masks, side by side in one program:
    identical states and metrics. TAD-PPO and MAPPO take the option through the same record."""
    config = jmarl.make_config("dpo", "hallway", num_envs=4, num_steps=8, hidden_dim=8, num_layers=1, recurrent=False,
                               epochs=2, num_minibatches=2)
    learners = [jmarl.make_algorithm(dataclasses.replace(config, active_masks=masks)) for masks in (False, True)]
    both = jax.jit(lambda key: [learner.update(learners[0].init(key)) for learner in learners])
    off, on = both(jax.random.PRNGKey(3))
    assert float(off[1]["value_loss"]) > 0 and float(off[1]["kl_final"]) > 0  # it trained on something
    leaves_equal(off, on)


# ----- SMAX training with the option on ------------------------------------------------------------------


def test_smax_3m_dpo_trains_with_active_masks():
    """Two DPO updates on smax_3m with masks on (one program: init, then a scan over updates): finite, and
    the recorded flags are what dead units look like: inactive exactly where the observation is the dead
    units' zeros, never active again within an episode, all active when one starts. Some agent dies."""
    config = jmarl.make_config("dpo", "smax_3m", active_masks=True, num_envs=2, num_steps=48, hidden_dim=8,
                               num_layers=1, recurrent=False, epochs=1)
    algo = jmarl.make_algorithm(config)

    def update(state, _):
        carries0 = state.carries
        state, traj = algo.collect(state)
        state, metrics = algo.learn(state, carries0, traj)
        return state, (metrics, {k: traj[k] for k in ("active", "obs", "done")})

    train = jax.jit(lambda key: jax.lax.scan(update, algo.init(key), None, length=2))
    state, (metrics, traj) = train(jax.random.PRNGKey(0))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves((metrics, state.params))), metrics
    assert np.isfinite(np.asarray(state.betas)).all() and (np.asarray(state.betas) > 0).all()
    # [updates, T, ...] -> one time axis: the rollouts continue each other
    active, obs, done = (np.asarray(traj[k]).reshape((-1,) + traj[k].shape[2:]) for k in ("active", "obs", "done"))
    assert (~active).sum() > 0, "no agent died: the masks were not exercised"
    np.testing.assert_array_equal(active, obs.any(-1))
    new_episode = done[:-1, :, None]
    assert active[1:][np.broadcast_to(new_episode, active[1:].shape)].all()
    assert (active[1:] <= active[:-1])[np.broadcast_to(~new_episode, active[1:].shape)].all()
