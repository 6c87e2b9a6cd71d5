"""TAD-PPO's pieces against independent numbers: the sequential sampler against teacher forcing, the
causal mask, the virtual-step GAE against a Python loop over n*T steps, Theorem 5.1 and Algorithm 4 on
a tabular MMDP solved exactly in NumPy, ValueNorm against NumPy, the distillation loss and the score."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
from envs.matrix import named_matrix_game
from jmarl.algos.tad_ppo import TrainState, decentralise_tabular
from jmarl.returns import ValueNorm, gae, virtual_gae

TINY = dict(num_envs=4, num_steps=24, hidden_dim=8, epochs=1, attn_heads=2, attn_dim=3)


def make(algo="tad_ppo", env="hallway", **overrides):
    return jmarl.make_algorithm(jmarl.make_config(algo, env, **{**TINY, **overrides}))


def randomised(params, seed, scale=0.7):
    """Every parameter redrawn at random: near-zero heads and zero null slots would hide mistakes."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), jnp.float32), params)


def random_params(algo, seed, scale=0.7):
    """Random parameters of the right shapes without compiling ``init`` (its env reset is the slow part)."""
    return randomised(jax.eval_shape(algo.init, jax.random.PRNGKey(0)).params, seed, scale)


@pytest.fixture(scope="module")
def six_agents():
    """DPO's stochastic game: 6 agents, 5 actions; random params, inputs and action masks."""
    algo = make(env="stochastic_game", num_envs=2, num_steps=1)
    params = random_params(algo, 1)
    rng = np.random.default_rng(0)
    batch, n, a = 16, algo.n, algo.num_actions
    obs = jnp.asarray(rng.normal(size=(batch, n, algo.env.spec.obs_dim)), jnp.float32)
    avail = rng.random((batch, n, a)) < 0.7
    avail[..., 0] |= ~avail.any(-1)  # at least one available action
    carry = algo.init_carries(batch)[0]
    _, h = jax.jit(algo.actor_features)(params, carry, obs, jnp.ones(batch, bool))
    return algo, params, h, jnp.asarray(avail)


# ----- transformation: sequential sampler, teacher forcing, causal mask ----------------------


def test_teacher_forced_log_probs_equal_the_sequential_sampler(six_agents):
    algo, params, h, avail = six_agents
    sample = jax.jit(lambda k: algo.sample_actions(params, h, avail, k))
    forced = jax.jit(lambda act: algo.policy_logits(params, h, act, avail))
    for seed in range(3):
        actions, seq_logits = sample(jax.random.PRNGKey(seed))
        assert np.asarray(jnp.take_along_axis(avail, actions[..., None], -1)).all()
        seq_logp = np.asarray(jax.nn.log_softmax(seq_logits))
        par_logp = np.asarray(jax.nn.log_softmax(forced(actions)))
        np.testing.assert_allclose(np.where(avail, par_logp, 0), np.where(avail, seq_logp, 0), atol=2e-5)
    # greedy decisions are the argmax of the teacher-forced logits given the greedy chain itself
    greedy, _ = jax.jit(lambda: algo.sample_actions(params, h, avail, None, greedy=True))()
    np.testing.assert_array_equal(greedy, np.argmax(forced(greedy), -1))
    # not vacuous: the last agent's distribution depends on the first agent's action
    other = actions.at[:, 0].set((actions[:, 0] + 1) % algo.num_actions)
    assert np.abs(np.asarray(forced(other)[:, -1] - forced(actions)[:, -1])).max() > 1e-3


def test_causal_mask_agent_i_ignores_actions_from_i_on(six_agents):
    algo, params, h, avail = six_agents
    # the critic's teacher-forced pass is the same code: feed it the same features
    both = jax.jit(lambda act: (algo.policy_logits(params, h, act, avail), algo.values(params, h, act)))
    rng = np.random.default_rng(1)
    base = rng.integers(0, algo.num_actions, size=h.shape[:2])
    logits, values = map(np.asarray, both(jnp.asarray(base)))
    for i in range(algo.n):
        changed = base.copy()
        changed[:, i:] = (changed[:, i:] + rng.integers(1, algo.num_actions, size=changed[:, i:].shape)) \
            % algo.num_actions
        new_logits, new_values = map(np.asarray, both(jnp.asarray(changed)))
        np.testing.assert_allclose(new_logits[:, : i + 1], logits[:, : i + 1], atol=1e-6)
        np.testing.assert_allclose(new_values[:, : i + 1], values[:, : i + 1], atol=1e-6)
        if i > 0:  # actions before i do reach agent i
            earlier = base.copy()
            earlier[:, i - 1] = (earlier[:, i - 1] + 1) % algo.num_actions
            moved = np.asarray(both(jnp.asarray(earlier))[0])[:, i]
            assert np.abs(moved - logits[:, i]).max() > 1e-4


def test_replay_reproduces_the_rollout_across_episode_ends():
    """Training teacher-forces the stored joint actions over the replayed GRU: with unchanged params it
    gives back the log-probs and values the sequential sampler produced during the rollout."""
    algo = make(recurrent=True)

    @jax.jit
    def rollout_and_replay(params, key):
        state = algo.init(key).replace(params=params)
        _, traj = algo.collect(state)
        logits, _, values = algo.replay(params, state.carries, traj)
        return traj, logits, values

    traj, logits, values = rollout_and_replay(random_params(algo, 5, 0.5), jax.random.PRNGKey(3))
    assert traj["done"].any() and not traj["done"].all()
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), traj["actions"][..., None], -1)[..., 0]
    np.testing.assert_allclose(logp, traj["logp"], atol=2e-5)
    np.testing.assert_allclose(values, traj["values"], atol=2e-5)


def test_mappo_has_no_attention_and_no_distillation_head():
    mappo, tad = make("mappo", env="matrix_penalty"), make(env="matrix_penalty")
    assert not mappo.config.attention and tad.config.attention
    names = lambda p: {"/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(p)}  # noqa: E731
    mappo_names = names(jax.eval_shape(mappo.init, jax.random.PRNGKey(0)).params)
    tad_names = names(jax.eval_shape(tad.init, jax.random.PRNGKey(0)).params)
    attention_parts = ("query_mlp", "action_embed", "key_out", "value_out", "null_kv", "context_norm", "distill_head")
    assert not [n for n in mappo_names if any(part in n for part in attention_parts)]
    for part in attention_parts[:-1]:
        assert any(n.startswith("actor") and part in n for n in tad_names)
        assert any(n.startswith("critic") and part in n for n in tad_names)
    assert any(n.startswith("actor") and "distill_head" in n for n in tad_names)
    assert mappo_names < tad_names  # MAPPO's network is TAD-PPO's minus the attention and pi_E


def test_presets_and_per_map_defaults():
    tad = jmarl.make_config("tad_ppo", "smax_27m_vs_30m")
    mappo_defaults = dict(hidden_dim=64, lr=5e-4, adam_eps=1e-5, gamma=0.99, gae_lambda=0.95, clip=0.2, ent_coef=0.01,
                          value_coef=1.0, huber_delta=10.0, value_clip=0.2, max_grad_norm=10.0, num_minibatches=1,
                          value_norm=True, recurrent=True, layer_norm=True, attention=True, attn_dim=4)
    assert {k: getattr(tad, k) for k in mappo_defaults} == mappo_defaults
    assert (tad.epochs, tad.attn_heads) == (5, 3)
    easy = jmarl.make_config("tad_ppo", "smax_3m")
    assert (easy.epochs, easy.attn_heads, easy.attn_dim) == (15, 4, 4)
    mappo = jmarl.make_config("mappo", "smax_5m_vs_6m")
    assert (mappo.attention, mappo.epochs, mappo.clip) == (False, 10, 0.05)
    assert jmarl.make_config("mappo", "smax_3s5z").epochs == 5


# ----- virtual-step GAE --------------------------------------------------------------------


def virtual_gae_loop(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Reference: walk the n*T virtual steps of each env backwards. Sub-step i of env step t has value
    values[t, e, i]; only the last sub-step carries the reward and the episode end; its next value is
    next_values[t, e] (0 after a termination); the other sub-steps lead to sub-step i+1."""
    num_steps, num_envs, n = values.shape
    g = gamma ** (1.0 / n)
    adv = np.zeros(values.shape)
    for e in range(num_envs):
        acc = 0.0
        for t in reversed(range(num_steps)):
            for i in reversed(range(n)):
                last = i == n - 1
                if last:
                    reward, end = rewards[t, e], terminated[t, e] or truncated[t, e]
                    next_v = 0.0 if terminated[t, e] else next_values[t, e]
                else:
                    reward, end, next_v = 0.0, False, values[t, e, i + 1]
                delta = reward + g * next_v - values[t, e, i]
                acc = delta if end else delta + g * lam * acc
                adv[t, e, i] = acc
    return adv, adv + values


@pytest.mark.parametrize("n,gamma,lam", [(3, 0.99, 0.95), (2, 0.9, 1.0), (4, 0.5, 0.0), (1, 0.9, 0.8)])
def test_virtual_gae_matches_a_loop_over_virtual_steps(n, gamma, lam):
    rng = np.random.default_rng(n)
    num_steps, num_envs = 9, 4
    rewards = rng.normal(size=(num_steps, num_envs))
    values = rng.normal(size=(num_steps, num_envs, n))
    next_values = rng.normal(size=(num_steps, num_envs))
    terminated = np.zeros((num_steps, num_envs), bool)
    truncated = np.zeros((num_steps, num_envs), bool)
    terminated[2, 0] = terminated[8, 3] = truncated[4, 0] = truncated[1, 2] = truncated[6, 2] = True
    terminated[3, 3] = truncated[3, 3] = True  # both: no bootstrap
    adv, targets = virtual_gae(jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32),
                               jnp.asarray(next_values, jnp.float32), jnp.asarray(terminated),
                               jnp.asarray(terminated | truncated), gamma, lam)
    ref_adv, ref_targets = virtual_gae_loop(rewards, values, next_values, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, ref_targets, rtol=1e-5, atol=1e-5)
    if n == 1:  # one agent: the ordinary GAE
        plain, _ = gae(rewards[..., None], values, next_values[..., None], terminated[..., None],
                       (terminated | truncated)[..., None], gamma, lam)
        np.testing.assert_allclose(adv, plain, rtol=1e-5, atol=1e-5)


def test_virtual_gae_by_hand():
    """n=2, one terminal step, reward 1, zero values: gamma' = sqrt(0.81) = 0.9, so sub-step 1 has
    advantage 1 and sub-step 0 has 0 + 0.9 * 0.5 * 1 = 0.45."""
    adv, _ = virtual_gae(jnp.ones((1, 1)), jnp.zeros((1, 1, 2)), jnp.zeros((1, 1)), jnp.ones((1, 1), bool),
                         jnp.ones((1, 1), bool), 0.81, 0.5)
    np.testing.assert_allclose(adv[0, 0], [0.45, 1.0], rtol=1e-6)


# ----- Theorem 5.1 and Algorithm 4 on a tabular MMDP ------------------------------------------


def random_mmdp(rng, num_states=3, n=3, num_actions=2):
    joint = (num_actions,) * n
    transitions = rng.dirichlet(np.ones(num_states), size=(num_states, *joint))  # [S, A..., S']
    rewards = rng.normal(size=(num_states, *joint))
    start = rng.dirichlet(np.ones(num_states))
    return transitions, rewards, start


def sequential_policies(rng, num_states, n, num_actions):
    """pi_k(a_k | s, a_<k) with shape [S] + [A]*k + [A], random."""
    out = []
    for k in range(n):
        logits = rng.normal(size=(num_states,) + (num_actions,) * (k + 1))
        out.append(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    return out


def mmdp_value(transitions, rewards, joint_policy, gamma):
    """Exact V of a joint policy [S, A^n] on the MMDP by one linear solve."""
    num_states = rewards.shape[0]
    r = (joint_policy * rewards.reshape(num_states, -1)).sum(1)
    p = np.einsum("sa,sat->st", joint_policy, transitions.reshape(num_states, -1, num_states))
    return np.linalg.solve(np.eye(num_states) - gamma * p, r)


def joint_from_sequential(policies):
    """pi_c(a | s) = prod_k pi_k(a_k | s, a_<k), flattened to [S, A^n]."""
    joint = policies[0]
    for pk in policies[1:]:
        joint = joint[..., None] * pk
    return joint.reshape(joint.shape[0], -1)


def transformed_mdp(transitions, rewards, gamma):
    """Algorithm 1: virtual states (s, a_1..a_k), k < n; deterministic appends, the MMDP's reward and
    transition on the last action, discount gamma^(1/n). Returns (P' [X, A, X], r' [X, A], gamma',
    index of (s, ()) per s, and the list of virtual states)."""
    num_states, n, num_actions = rewards.shape[0], rewards.ndim - 1, rewards.shape[1]
    virtual = [(s, prev) for k in range(n) for s in range(num_states)
               for prev in np.ndindex(*(num_actions,) * k)]
    index = {x: i for i, x in enumerate(virtual)}
    p = np.zeros((len(virtual), num_actions, len(virtual)))
    r = np.zeros((len(virtual), num_actions))
    for x, (s, prev) in enumerate(virtual):
        for a in range(num_actions):
            if len(prev) < n - 1:
                p[x, a, index[(s, prev + (a,))]] = 1.0
            else:
                r[x, a] = rewards[(s, *prev, a)]
                for s2 in range(num_states):
                    p[x, a, index[(s2, ())]] = transitions[(s, *prev, a, s2)]
    return p, r, gamma ** (1.0 / n), [index[(s, ())] for s in range(num_states)], virtual


def test_theorem_5_1_value_correspondence():
    rng = np.random.default_rng(0)
    gamma = 0.9
    for n, num_actions in [(3, 2), (2, 3)]:
        transitions, rewards, start = random_mmdp(rng, 3, n, num_actions)
        policies = sequential_policies(rng, 3, n, num_actions)
        j_mmdp = start @ mmdp_value(transitions, rewards, joint_from_sequential(policies), gamma)
        p, r, gamma_v, roots, virtual = transformed_mdp(transitions, rewards, gamma)
        pi = np.stack([policies[len(prev)][(s, *prev)] for s, prev in virtual])  # [X, A]
        v = np.linalg.solve(np.eye(len(virtual)) - gamma_v * np.einsum("xa,xay->xy", pi, p), (pi * r).sum(1))
        j_transformed = start @ v[roots]
        assert j_transformed == pytest.approx(gamma ** ((n - 1) / n) * j_mmdp, rel=1e-10)
        assert abs(j_mmdp) > 1e-3


def test_virtual_returns_are_the_discounted_mmdp_return_path_by_path():
    """Theorem 5.1 along one trajectory: with lambda = 1 and zero values the virtual GAE at sub-step 0 is
    the transformed MDP's return, gamma^((n-1)/n) times the MMDP's discounted return."""
    rewards = np.array([1.0, -2.0, 0.5, 3.0])
    n, gamma = 3, 0.9
    term = np.array([False, False, False, True])
    adv, _ = virtual_gae(jnp.asarray(rewards)[:, None], jnp.zeros((4, 1, n)), jnp.zeros((4, 1)),
                         jnp.asarray(term)[:, None], jnp.asarray(term)[:, None], gamma, 1.0)
    mmdp_return = sum(gamma ** t * r for t, r in enumerate(rewards))
    np.testing.assert_allclose(adv[0, 0, 0], gamma ** ((n - 1) / n) * mmdp_return, rtol=1e-5)


def test_algorithm_4_decentralises_the_optimal_sequential_policy():
    """The greedy policy of the transformed MDP (value iteration), decentralised by Algorithm 4, is
    optimal on the MMDP (joint-action value iteration)."""
    rng = np.random.default_rng(1)
    gamma, n, num_actions, num_states = 0.9, 3, 2, 4
    transitions, rewards, _ = random_mmdp(rng, num_states, n, num_actions)
    p, r, gamma_v, _, virtual = transformed_mdp(transitions, rewards, gamma)
    v = np.zeros(len(virtual))
    for _ in range(2000):
        v = (r + gamma_v * p @ v).max(1)
    q = r + gamma_v * p @ v
    policies = [np.zeros((num_states,) + (num_actions,) * (k + 1)) for k in range(n)]
    for x, (s, prev) in enumerate(virtual):
        policies[len(prev)][(s, *prev)] = np.eye(num_actions)[np.argmax(q[x])]
    eta = decentralise_tabular(policies)
    assert eta.shape == (num_states, n)
    joint = np.zeros((num_states, num_actions ** n))
    joint[np.arange(num_states), np.ravel_multi_index(eta.T, (num_actions,) * n)] = 1.0
    v_eta = mmdp_value(transitions, rewards, joint, gamma)
    v_star = np.zeros(num_states)
    flat_p, flat_r = transitions.reshape(num_states, -1, num_states), rewards.reshape(num_states, -1)
    for _ in range(2000):
        v_star = (flat_r + gamma * flat_p @ v_star).max(1)
    np.testing.assert_allclose(v_eta, v_star, atol=1e-8)


def test_algorithm_4_by_hand():
    """Two agents, one state: agent 0 prefers action 1; given a_0 = 1 agent 1 prefers action 0."""
    pi0 = np.array([[0.2, 0.8]])
    pi1 = np.array([[[0.9, 0.1], [0.6, 0.4]]])  # [s, a_0, a_1]
    np.testing.assert_array_equal(decentralise_tabular([pi0, pi1]), [[1, 0]])


# ----- value normalisation ----------------------------------------------------------------


def test_value_norm_matches_debiased_running_statistics():
    rng = np.random.default_rng(2)
    beta = 0.9
    batches = [rng.normal(3.0, 2.0, size=(5, 4)) for _ in range(3)]
    vn = ValueNorm.zeros()
    for b in batches:
        vn = vn.update(jnp.asarray(b, jnp.float32), beta)
    weights = np.array([(1 - beta) * beta ** (len(batches) - 1 - i) for i in range(len(batches))])
    mean = sum(w * b.mean() for w, b in zip(weights, batches, strict=True)) / weights.sum()
    mean_sq = sum(w * (b ** 2).mean() for w, b in zip(weights, batches, strict=True)) / weights.sum()
    std = math.sqrt(max(mean_sq - mean ** 2, 1e-2))
    x = jnp.asarray(batches[0], jnp.float32)
    np.testing.assert_allclose(vn.normalize(x), (batches[0] - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vn.denormalize(vn.normalize(x)), batches[0], rtol=1e-5, atol=1e-5)


# ----- distillation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed_batch():
    algo = make(env="matrix_penalty", recurrent=False, num_envs=8, num_steps=4, epochs=4)
    state, traj = jax.jit(lambda key: algo.collect(algo.init(key)))(jax.random.PRNGKey(5))
    return algo, state, algo.init_carries(8), traj  # a rollout from init starts from zero carries


def test_distillation_loss_is_the_cross_entropy_and_decreases(fixed_batch):
    algo, state, carries0, traj = fixed_batch
    adv, targets = algo.advantages(traj, state.value_norm)

    @jax.jit
    def distill(params):
        stats = algo.loss(params, carries0, traj, adv, targets)[1]
        return stats["distill_loss"], algo.replay(params, carries0, traj)[1]

    loss, logits = distill(state.params)
    logits = np.asarray(logits, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, np.asarray(traj["actions"])[..., None], -1).mean()
    assert float(loss) == pytest.approx(ce, rel=1e-5)
    learn = jax.jit(algo.learn)
    history = [ce]
    for _ in range(3):
        state, _ = learn(state, carries0, traj)
        history.append(float(distill(state.params)[0]))
    assert all(b < a for a, b in zip(history, history[1:], strict=False)), history


def test_distillation_trains_the_torso_only_when_asked(fixed_batch):
    """With no advantage, no value and no entropy term, only the distillation loss moves the actor."""
    _, state, carries0, traj = fixed_batch
    zeros = jnp.zeros_like(traj["values"])
    algos = [make(env="matrix_penalty", recurrent=False, num_envs=8, num_steps=4, distill_torso=flag, ent_coef=0.0,
                  value_coef=0.0) for flag in (False, True)]
    grads = jax.jit(lambda p: [jax.grad(a.loss, has_aux=True)(p, carries0, traj, zeros, zeros)[0] for a in algos])
    largest = lambda tree: max(float(jnp.abs(g).max()) for g in jax.tree.leaves(tree))  # noqa: E731
    for algo, g in zip(algos, grads(state.params), strict=True):
        assert largest(g["actor"]["params"]["distill_head"]) > 0
        assert (largest(g["actor"]["params"]["torso"]) > 0) == algo.config.distill_torso
        assert largest(g["critic"]) == 0


# ----- evaluation: both policies and the TAD score -----------------------------------------


def test_evaluate_reports_both_policies_and_the_matrix_score():
    algo = make(env="matrix_tad10", recurrent=False, eval_episodes=8)
    params = random_params(algo, 7, 0.5)
    state = TrainState(params, None, None, None, None, None, None, jax.random.PRNGKey(6), None, None)
    out = jax.jit(algo.evaluate)(state)
    assert {"return", "optimality_gap", "score", "return_sequential", "score_sequential"} <= set(out)
    payoff = np.asarray(named_matrix_game("tad10").payoff)
    tasks = np.eye(10, dtype=np.float32)
    obs = jnp.asarray(np.concatenate([np.repeat(tasks[:, None], 2, 1), np.broadcast_to(np.eye(2), (10, 2, 2))], -1))
    greedy = lambda p, s: algo.act(p, algo.init_carries(10)[0], obs, jnp.ones((10, 2, 5), bool), jnp.ones(10, bool),
                                   sequential=s)[1]
    joints = jax.jit(lambda p: (greedy(p, False), greedy(p, True)))(params)
    for joint, key in zip(map(np.asarray, joints), ["score", "score_sequential"], strict=True):
        expected = sum(payoff[k, joint[k, 0], joint[k, 1]] for k in range(10))
        assert float(out[key]) == pytest.approx(expected, abs=1e-4)
    mappo = make("mappo", env="matrix_tad10", recurrent=False, eval_episodes=8)
    mappo_state = state.replace(params=jax.eval_shape(mappo.init, jax.random.PRNGKey(0)).params)
    assert set(jax.eval_shape(mappo.evaluate, mappo_state)) == {"return", "optimality_gap", "score"}
