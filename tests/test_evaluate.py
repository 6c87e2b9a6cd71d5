"""The evaluation key is derived from the train state's key without consuming it."""

import jax
import numpy as np

from jmarl.evaluate import EVAL_SALT, evaluation_key


def test_evaluation_key_is_a_fixed_fold_of_the_train_key():
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(evaluation_key(key), jax.random.fold_in(key, 0x5EED))
    assert EVAL_SALT == 0x5EED  # every recorded evaluation depends on this number
    assert not np.array_equal(evaluation_key(key), key)
    np.testing.assert_array_equal(evaluation_key(key), evaluation_key(key))
    assert not np.array_equal(evaluation_key(key), evaluation_key(jax.random.PRNGKey(8)))
