"""LAN / IQL / LAN-mean: eq. 3's targets and the loss on hand-worked numbers (unavailable actions, terminal,
truncated and padded steps), the learner's loss against a Python-loop reference built from the raw
parameters, the centralised value's size (lan.md Table 3, independent of the number of agents), greedy
actions of Q~ = V + A equal those of A (and the collection acts as the learner replays), and the schedule:
2 gradient steps per completed episode, target copies after exactly every C-th gradient step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
from jmarl import replay
from jmarl.algos.lan import CentralValue, lan_targets, lan_td_loss
from jmarl.config import ConfigError
from jmarl.offpolicy import greedy

# ----- targets and loss by hand -------------------------------------------------------------------

# Two episodes, T = 3, N = 2 agents, A = 3 actions, gamma = 0.5. Episode 0 runs 3 steps and terminates;
# episode 1 is truncated after 1 step (steps 1-2 are padding full of junk).
REWARD = [[1.0, 2.0, 4.0], [-1.0, 50.0, 50.0]]
TERMINATED = [[False, False, True], [False, True, False]]
MASK = [[True, True, True], [True, False, False]]
# [B, T, N, A] at the observation after each step: online A (picks the action), target A (values it)
ADV_NEXT = [[[[5, 1, 2], [0, 3, 1]], [[0, -1, -2], [2, 1, 0]], [[9, 9, 9], [9, 9, 9]]],
            [[[1, 2, 3], [3, 2, 1]], [[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]]]
AVAIL_NEXT = [[[[0, 1, 1], [1, 1, 1]], [[0, 0, 1], [1, 1, 0]], [[1, 1, 1], [1, 1, 1]]],
              [[[1, 1, 0], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]]]]
ADV_NEXT_TARGET = [[[[10, 20, 30], [7, 8, 9]], [[1, 2, 3], [-4, 0, 100]], [[99, 99, 99], [99, 99, 99]]],
                   [[[0, 6, 0], [4, 0, 0]], [[77, 77, 77], [77, 77, 77]], [[77, 77, 77], [77, 77, 77]]]]
V_NEXT_TARGET = [[4.0, -2.0, 1000.0], [2.0, 500.0, 500.0]]
# Episode 0, t=0: agent 0's online argmax over available {1, 2} is 2 (action 0 is unavailable), target A 30:
#   y = 1 + 0.5 (4 + 30) = 18; agent 1: argmax 1, target 8: y = 1 + 0.5 (4 + 8) = 7.
# t=1: agent 0 may only take 2: target 3, y = 2 + 0.5 (-2 + 3) = 2.5; agent 1: argmax over {0, 1} is 0,
#   target -4: y = 2 + 0.5 (-2 - 4) = -1 (the target's 100 sits on an unavailable action).
# t=2 terminates: y = r = 4 for both, nothing bootstrapped.
# Episode 1, t=0 (truncated, bootstraps): agent 0 argmax over {0, 1} is 1, target 6: y = -1 + 0.5 (2 + 6) = 3;
#   agent 1: argmax 0, target 4: y = -1 + 0.5 (2 + 4) = 2.
Y_LAN = [[[18.0, 7.0], [2.5, -1.0], [4.0, 4.0]], [[3.0, 2.0]]]
# IQL: the same without V: 1 + 15, 1 + 4; 2 + 1.5, 2 - 2; 4, 4; -1 + 3, -1 + 2.
Y_IQL = [[[16.0, 5.0], [3.5, 0.0], [4.0, 4.0]], [[2.0, 1.0]]]


def hand_batch():
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return (f(REWARD), jnp.asarray(TERMINATED), jnp.asarray(MASK), f(ADV_NEXT), f(ADV_NEXT_TARGET),
            jnp.asarray(AVAIL_NEXT, bool), f(V_NEXT_TARGET))


def valid(y):
    y = np.asarray(y)
    return [y[0].tolist(), y[1, :1].tolist()]


def test_targets_hand_worked_with_unavailable_actions_and_both_ends():
    reward, term, mask, adv, adv_t, avail, v_t = hand_batch()
    y_lan = valid(lan_targets(reward, term, mask, adv, adv_t, avail, v_t, 0.5))
    np.testing.assert_allclose(y_lan[0], Y_LAN[0])
    np.testing.assert_allclose(y_lan[1], Y_LAN[1])
    y_iql = valid(lan_targets(reward, term, mask, adv, adv_t, avail, None, 0.5))
    # TD(lambda) with lambda = 0 is the same one-step target
    np.testing.assert_allclose(valid(lan_targets(reward, term, mask, adv, adv_t, avail, None, 0.5, 0.0))[0],
                               y_iql[0])
    np.testing.assert_allclose(y_iql[0], Y_IQL[0])
    np.testing.assert_allclose(y_iql[1], Y_IQL[1])


def test_td_loss_is_the_mean_over_agents_and_valid_steps():
    y = jnp.asarray([[[18.0, 7.0], [2.5, -1.0], [4.0, 4.0]], [[3.0, 2.0], [1e6, 1e6], [-1e6, 1e6]]])
    q = y + jnp.asarray([[[1.0, -2.0], [0.0, 3.0], [1.0, 1.0]], [[-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    q = q.at[1, 1:].set(123.0)  # padded steps: any value, no effect
    # squared errors of the 8 valid entries: 1 + 4 + 0 + 9 + 1 + 1 + 1 + 0 = 17
    np.testing.assert_allclose(lan_td_loss(q, y, jnp.asarray(MASK)), 17.0 / 8.0, rtol=1e-6)


# ----- the learner's loss against a reference from the raw parameters -----------------------------


def small_learner(algo, **kw):
    cfg = jmarl.make_config(algo, "checkers", hidden_dim=8, value_embed_dim=6, value_hidden_dim=5, batch_size=2,
                            buffer_size=16, num_envs=2, **kw)
    return jmarl.make_algorithm(cfg)


def random_params(params, seed, scale=0.7):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), x.dtype), params)


def random_batch(algo, seed, b=2, t=4):
    """Episodes as stored: episode 0 terminates at its last step, episode 1 is truncated after 2 steps."""
    rng = np.random.default_rng(seed)
    n, a = algo.n, algo.num_actions
    avail = rng.random((b, t + 1, n, a)) < 0.6
    avail[..., 4] = True
    mask = np.ones((b, t), bool)
    mask[1, 2:] = False
    terminated = np.zeros((b, t), bool)
    terminated[0, -1] = True
    return replay.Episodes(obs=jnp.asarray(rng.normal(size=(b, t + 1, n, algo.spec.obs_dim)), jnp.float32),
                           state=jnp.asarray(rng.normal(size=(b, t + 1, algo.spec.state_dim)), jnp.float32),
                           avail=jnp.asarray(avail), actions=jnp.asarray(rng.integers(0, a, (b, t, n)), jnp.int32),
                           reward=jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
                           terminated=jnp.asarray(terminated), mask=jnp.asarray(mask))


def reference_networks(algo, params, batch):
    """A via the core's one-step agent module in a Python loop over time, V in NumPy from its raw parameters
    (per agent [h, obs, one-hot previous action, one-hot id] -> ReLU embedding, sum, [., state], 2 ReLU layers)."""
    b, t1, n = batch.obs.shape[:3]
    a = algo.num_actions
    carry = jnp.zeros((b, n, algo.config.hidden_dim))
    hs, advs = [], []
    for t in range(t1):
        prev = np.zeros((b, n, a))
        if t > 0:
            prev[np.arange(b)[:, None], np.arange(n)[None], np.asarray(batch.actions[:, t - 1])] = 1.0
        x = np.concatenate([np.asarray(batch.obs[:, t]), prev, np.broadcast_to(np.eye(n), (b, n, n))], -1)
        carry, adv = algo.agent.apply(params["agent"], carry, jnp.asarray(x, jnp.float32), jnp.zeros((b, n), bool))
        hs.append(np.concatenate([np.asarray(carry), x], -1))
        advs.append(np.asarray(adv))
    adv = np.stack(advs, 1)
    if "value" not in params:
        return adv, None
    p = jax.tree.map(np.asarray, params["value"]["params"])
    dense = lambda x, k: x @ p[k]["kernel"] + p[k]["bias"]  # noqa: E731
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    joint = relu(dense(np.stack(hs, 1), "Dense_0")).sum(-2)
    x = relu(dense(relu(dense(np.concatenate([joint, np.asarray(batch.state)], -1), "Dense_1")), "Dense_2"))
    return adv, dense(x, "Dense_3")[..., 0]


def reference_loss(algo, params, target_params, batch, gamma, centre):
    adv, v = reference_networks(algo, params, batch)
    adv_t, v_t = reference_networks(algo, target_params, batch)
    if centre:
        adv, adv_t = adv - adv.mean(-1, keepdims=True), adv_t - adv_t.mean(-1, keepdims=True)
    b, t_max, n = batch.actions.shape
    avail, actions = np.asarray(batch.avail), np.asarray(batch.actions)
    errors = []
    for i in range(b):
        for t in range(t_max):
            if not batch.mask[i, t]:
                continue
            for a in range(n):
                q = adv[i, t, a, actions[i, t, a]] + (v[i, t] if v is not None else 0.0)
                y = float(batch.reward[i, t])
                if not batch.terminated[i, t]:
                    best = max((u for u in range(algo.num_actions) if avail[i, t + 1, a, u]),
                               key=lambda u: adv[i, t + 1, a, u])
                    y += gamma * (adv_t[i, t + 1, a, best] + (v_t[i, t + 1] if v_t is not None else 0.0))
                errors.append((q - y) ** 2)
    return float(np.mean(errors)), len(errors)


@pytest.mark.parametrize("algo", ["lan", "iql", "lan_mean"])
def test_learner_loss_matches_the_reference_from_raw_parameters(algo):
    learner = small_learner(algo)
    shapes = jax.eval_shape(learner.init_params, jax.random.PRNGKey(0))
    params, target = random_params(shapes, 1), random_params(shapes, 2)
    assert ("value" in params) == (algo != "iql")
    batch = random_batch(learner, 3)
    hp = {k: jnp.asarray(v) for k, v in learner.hparams().items()}
    got, stats = jax.jit(learner.loss)(params, target, batch, hp, jax.random.PRNGKey(0))
    ref, count = reference_loss(learner, params, target, batch, 0.99, centre=algo == "lan_mean")
    assert count == 2 * (4 + 2)
    np.testing.assert_allclose(float(got), ref, rtol=2e-5)
    # the loss is not blind to the target network
    other, _ = jax.jit(learner.loss)(params, random_params(shapes, 4), batch, hp, jax.random.PRNGKey(0))
    assert abs(float(other) - ref) > 1e-3


def test_value_gradient_reaches_the_agent_only_when_asked():
    batch = None
    for flag in (False, True):
        learner = small_learner("lan", value_grad_to_agent=flag)
        shapes = jax.eval_shape(learner.init_params, jax.random.PRNGKey(0))
        params = random_params(shapes, 1)
        batch = batch if batch is not None else random_batch(learner, 5)
        v_of_agent = jax.jit(jax.grad(lambda p, v, b, net=learner.networks: net({"agent": p, "value": v}, b)[1].sum()))
        norm = optax_norm(v_of_agent(params["agent"], params["value"], batch))
        assert (norm > 1e-3) == flag, (flag, norm)


def optax_norm(tree):
    return float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree))))


# ----- the centralised value's size -----------------------------------------------------------------


def value_param_count(obs_dim, num_actions, num_agents, state_dim, gru=64):
    features = jnp.zeros((1, num_agents, gru + obs_dim + num_actions + num_agents))
    shapes = jax.eval_shape(CentralValue(128, 128).init, jax.random.PRNGKey(0), features, jnp.zeros((1, state_dim)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name,obs,actions,agents,state,table", [
    # SMAC's sizes (observation, actions, agents, state without last actions) and lan.md Table 3 (x1000)
    ("5m_vs_6m", 55, 12, 5, 38, 56), ("2s3z", 80, 11, 5, 65, 62), ("3s5z", 128, 14, 8, 104, 74),
    ("27m_vs_30m", 285, 36, 27, 198, 111)])
def test_value_parameter_count_matches_table_3(name, obs, actions, agents, state, table):
    count = value_param_count(obs, actions, agents, state)
    f = 64 + obs + actions + agents
    assert count == f * 128 + 128 + (128 + state) * 128 + 128 + 128 * 128 + 128 + 128 + 1
    assert round(count / 1000) == table, (name, count)


def test_value_size_grows_with_agents_only_through_the_id_input():
    # same observation, action and state widths; 3 vs 30 agents: only the one-hot id rows of the embedding differ
    assert value_param_count(40, 9, 30, 50) - value_param_count(40, 9, 3, 50) == 27 * 128


def test_value_sums_agent_embeddings_so_agent_order_does_not_matter():
    value = CentralValue(16, 8)
    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(5, 4, 7)), jnp.float32)
    state = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    params = random_params(value.init(jax.random.PRNGKey(0), feats, state), 1)
    v = value.apply(params, feats, state)
    np.testing.assert_allclose(value.apply(params, feats[:, ::-1], state), v, rtol=1e-5)
    assert float(jnp.std(v)) > 1e-3


# ----- greedy actions -----------------------------------------------------------------------------------


def test_greedy_actions_of_q_proxy_equal_those_of_the_advantages():
    learner = small_learner("lan")
    params = random_params(jax.eval_shape(learner.init_params, jax.random.PRNGKey(0)), 1)
    batch = random_batch(learner, 7)
    adv, v = jax.jit(learner.networks)(params, batch)
    q = jax.jit(learner.q_proxy)(params, batch)
    np.testing.assert_allclose(q, adv + v[..., None, None], rtol=1e-6)
    assert float(jnp.std(v)) > 1e-2  # V moves Q~ from step to step, but never the argmax
    np.testing.assert_array_equal(greedy(q, batch.avail), greedy(adv, batch.avail))


def test_greedy_collection_acts_as_the_learner_replays():
    """Epsilon 0 on checkers with random parameters: LAN's own scan over each stored episode gives Q~ whose
    greedy actions are the actions the collection took."""
    learner = small_learner("lan", num_steps=30, eps_start=0.0, eps_finish=0.0)
    state = jax.jit(learner.init)(jax.random.PRNGKey(0))
    state = state.replace(params=random_params(state.params, 1, scale=0.8))
    state, _ = jax.jit(learner.collect)(state)
    buf = state.buffer
    slots = jnp.asarray(buf.write_slot)
    batch = replay.Episodes(*(jnp.take(getattr(buf, f), slots, axis=0).astype(
        jnp.float32 if f in ("obs", "state") else getattr(buf, f).dtype)
        for f in ("obs", "state", "avail", "actions", "reward", "terminated", "mask")))
    q = jax.jit(learner.q_proxy)(state.params, batch)
    mask = np.asarray(batch.mask)
    assert mask.sum() == 60
    taken = np.asarray(batch.actions)[mask]
    np.testing.assert_array_equal(np.asarray(greedy(q[:, :-1], batch.avail[:, :-1]))[mask], taken)
    assert len(np.unique(taken)) > 1


# ----- schedule -----------------------------------------------------------------------------------------


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def matrix_learner(**kw):
    kw = {"target_update_updates": 10, **kw}
    cfg = jmarl.make_config("lan", "matrix_qtran", num_envs=4, num_steps=3, batch_size=8, buffer_size=32,
                            hidden_dim=8, value_embed_dim=8, value_hidden_dim=8, **kw)
    return jmarl.make_algorithm(cfg)


def test_gradient_steps_due_per_completed_episode():
    learner = matrix_learner()
    due = lambda before, after: int(learner.gradient_steps_due(jnp.asarray(before), jnp.asarray(after)))  # noqa: E731
    assert [due(0, 0), due(3, 7), due(1000, 1001)] == [0, 8, 2]
    half = matrix_learner(updates_per_episode=0.5)
    assert int(half.gradient_steps_due(jnp.asarray(3), jnp.asarray(6))) == 2  # floor(3) - floor(1.5)
    fixed = matrix_learner(updates_per_episode=0.0, train_steps=5)
    assert int(fixed.gradient_steps_due(jnp.asarray(3), jnp.asarray(300))) == 5


@pytest.fixture(scope="module")
def matrix():
    """One learner on one-step episodes (12 per update with 4 envs x 3 steps), its compiled pieces."""
    learner = matrix_learner()
    return learner, jax.jit(learner.init), jax.jit(learner.collect), jax.jit(learner.learn_steps)


def test_two_gradient_steps_per_episode_and_target_copies_every_ten_steps(matrix):
    """12 episodes per update, learning from the first (8 complete episodes needed): 24 gradient steps per
    update; copies after gradient steps 10, 20 | 30, 40 | 50, 60, 70."""
    learner, init, _, _ = matrix
    update = jax.jit(learner.update)
    state = init(jax.random.PRNGKey(0))
    copies = []
    for i in range(1, 4):
        state, m = update(state)
        assert int(state.episodes) == 12 * i and int(state.grad_steps) == 24 * i
        assert float(m["gradient_steps"]) == 24 and float(m["episodes_finished"]) == 12
        copies.append(int(m["target_copies"]))
        assert not same(state.target_params, state.params)  # the last copy was a few steps ago
    assert copies == [2, 2, 3]


def test_target_copy_lands_after_exactly_the_c_th_gradient_step(matrix):
    _, init, collect, steps = matrix
    state, _ = collect(init(jax.random.PRNGKey(1)))
    ten, m10 = steps(state, jnp.asarray(10))
    thirteen, m13 = steps(state, jnp.asarray(13))
    nine, _ = steps(state, jnp.asarray(9))
    assert int(ten.grad_steps) == 10 and int(m10["target_copies"]) == 1 and int(m13["target_copies"]) == 1
    assert same(ten.target_params, ten.params)
    assert same(thirteen.target_params, ten.params) and not same(thirteen.params, ten.params)
    assert same(nine.target_params, state.target_params)
    # counted across calls: from 7 steps done, the 3rd step of this call is the 10th
    later, m = steps(state.replace(grad_steps=jnp.asarray(7)), jnp.asarray(3))
    assert int(m["target_copies"]) == 1 and same(later.target_params, later.params)
    # a buffer without batch_size complete episodes takes no step at all
    waiting, m = steps(state.replace(buffer=init(jax.random.PRNGKey(1)).buffer), jnp.asarray(5))
    assert int(waiting.grad_steps) == 0 and same(waiting.params, state.params) and float(m["gradient_steps"]) == 0


def test_seeds_with_different_step_counts_under_vmap_match_separate_runs(matrix):
    learner, init, collect, steps = matrix
    states = [collect(init(k))[0] for k in jax.random.split(jax.random.PRNGKey(2), 2)]
    counts = jnp.asarray([3, 12])
    together, _ = jax.jit(jax.vmap(learner.learn_steps))(jax.tree.map(lambda *x: jnp.stack(x), *states), counts)
    for i in range(2):
        alone, _ = steps(states[i], counts[i])
        got = jax.tree.map(lambda x, i=i: x[i], together)
        assert int(got.grad_steps) == int(counts[i]) == int(alone.grad_steps)
        for x, y in zip(jax.tree.leaves(got.params), jax.tree.leaves(alone.params), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fixed_steps_and_episode_based_target_copies_when_asked():
    learner = matrix_learner(updates_per_episode=0.0, train_steps=5, target_update_updates=0,
                             target_update_episodes=20)
    update = jax.jit(learner.update)
    state = jax.jit(learner.init)(jax.random.PRNGKey(0))
    copied = []
    for _ in range(3):
        state, m = update(state)
        copied.append(int(m["target_copies"]))
    assert copied == [0, 1, 0]  # 12, 24, 36 episodes: only 24 crosses a multiple of 20
    assert not same(state.target_params, state.params) and int(state.grad_steps) == 15  # 5 steps per update


def test_fixed_step_scan_equals_the_while_loop_bit_for_bit(monkeypatch):
    """updates_per_episode = 0 runs its train_steps as a scan (a trip count XLA knows); the same steps
    through the while loop of the per-episode schedule give the same state bit for bit, and a buffer not
    yet ready takes no step on either path."""
    learner = matrix_learner(updates_per_episode=0.0, train_steps=4, target_update_updates=3)
    assert learner.fixed_steps
    state, _ = jax.jit(learner.collect)(jax.jit(learner.init)(jax.random.PRNGKey(4)))
    count = jnp.asarray(4)
    scanned, m_scan = jax.jit(learner.learn_steps)(state, count)
    monkeypatch.setattr(type(learner), "fixed_steps", property(lambda self: False))
    looped, m_loop = jax.jit(learner.learn_steps)(state, count)
    assert int(scanned.grad_steps) == int(looped.grad_steps) == 4 and float(m_scan["target_copies"]) == 1
    for x, y in zip(jax.tree.leaves((scanned, m_scan)), jax.tree.leaves((looped, m_loop)), strict=True):
        np.testing.assert_array_equal(x, y)


# ----- configuration ------------------------------------------------------------------------------------


def test_defaults_are_the_papers_and_errors_are_clear():
    cfg = jmarl.make_config("lan", "smax_3s5z")
    assert (cfg.lr, cfg.gamma, cfg.max_grad_norm, cfg.buffer_size, cfg.batch_size) == (5e-4, 0.99, 10.0, 5000, 32)
    assert (cfg.updates_per_episode, cfg.target_update_updates, cfg.td_lambda) == (2.0, 200, 0.0)
    assert (cfg.eps_start, cfg.eps_finish, cfg.eps_anneal_steps, cfg.total_steps) == (1.0, 0.05, 50_000, 2_000_000)
    assert cfg.centralised_value and not cfg.lan_mean and not cfg.value_grad_to_agent
    assert not jmarl.make_config("iql", "checkers").centralised_value
    assert jmarl.make_config("lan_mean", "checkers").lan_mean
    assert jmarl.make_config("lan", "checkers").total_steps != 2_000_000  # the SMAX budget is SMAX's only
    with pytest.raises(ConfigError, match="updates_per_episode must be >= 0"):
        jmarl.make_config("lan", "checkers", updates_per_episode=-1.0)
    with pytest.raises(ConfigError, match="did you mean value_grad_to_agent"):
        jmarl.make_config("lan", "checkers", value_grad_to_agents=True)
    with pytest.raises(ConfigError, match="batch_size .* must be <= buffer_size"):
        jmarl.make_config("lan", "checkers", buffer_size=20)
    with pytest.raises(ConfigError, match=r"buffer_size \(36\) must be at least .* = 40"):
        jmarl.make_algorithm(jmarl.make_config("lan", "checkers", buffer_size=36))
