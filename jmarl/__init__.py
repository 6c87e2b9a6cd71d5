"""jmarl: cooperative multi-agent RL in JAX, every training run one pure program.

    config = jmarl.make_config("dpo", "matrix_dpo4", total_steps=20_000)
    train = jmarl.make_train(config)
    state, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 8))
"""

from jmarl.config import ConfigError
from jmarl.core import make_chunk, make_train, plan
from jmarl.registry import ALGORITHMS, algorithm_names, make_algorithm, make_config

__all__ = ["ALGORITHMS", "ConfigError", "algorithm_names", "make_algorithm", "make_chunk", "make_config",
           "make_train", "plan"]
