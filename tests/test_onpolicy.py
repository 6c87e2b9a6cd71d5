"""The shared on-policy loop: minibatches cover every env once per epoch, episode returns, config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
from jmarl import onpolicy


def test_each_epoch_visits_every_env_exactly_once_in_whole_minibatches():
    def sgd_step(carry, idx):
        params, opt_state = carry
        return (params + 1, opt_state), {"idx": idx}

    (params, _), stats = onpolicy.minibatch_epochs(jnp.zeros(()), None, jax.random.PRNGKey(3), epochs=5,
                                                   num_envs=12, num_minibatches=3, sgd_step=sgd_step)
    idx = np.asarray(stats["idx"])
    assert idx.shape == (5, 3, 4)
    assert int(params) == 15  # one step per minibatch
    for epoch in idx:
        np.testing.assert_array_equal(np.sort(epoch.ravel()), np.arange(12))
    assert len({tuple(e.ravel()) for e in idx}) > 1  # a fresh permutation per epoch


def test_completed_episode_return_averages_only_finished_episodes():
    traj = {"done": jnp.array([[False, True], [True, False], [False, True]]),
            "ep_return": jnp.array([[9.0, 2.0], [4.0, 7.0], [5.0, 6.0]])}
    assert float(onpolicy.completed_episode_return(traj)) == pytest.approx((2.0 + 4.0 + 6.0) / 3)
    none_done = {"done": jnp.zeros((2, 2), bool), "ep_return": jnp.ones((2, 2))}
    assert float(onpolicy.completed_episode_return(none_done)) == 0.0


@pytest.mark.parametrize("algo", ["dpo", "mappo"])
def test_minibatches_must_divide_the_envs(algo):
    config = jmarl.make_config(algo, "matrix_penalty", num_envs=6, num_minibatches=4)
    with pytest.raises(jmarl.ConfigError, match="divisible"):
        jmarl.make_algorithm(config)
