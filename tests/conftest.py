"""Test helpers shared across folders (``exact_values``, ``benchmark_scripts``, ``compile_settings``)
import by name from any subfolder of tests/. The session's compile settings (compile_settings.py) are set
here, before jax starts its backend: fast-compile flags unless the caller's XLA_FLAGS set them, and one
persistent compilation cache for both workers unless the caller chose one."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_settings import with_fast_compile_flags  # noqa: E402

_CACHE_OWNER = "JMARL_TEST_CACHE_OWNER"  # the pid of the process that made the session's cache


def _set_compile_environment() -> None:
    os.environ["XLA_FLAGS"] = with_fast_compile_flags(os.environ.get("XLA_FLAGS", ""))
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the workers inherit the first process's folder
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jmarl-test-xla-")
        os.environ[_CACHE_OWNER] = str(os.getpid())
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "jax" in sys.modules:  # imported before this file: the environment came too late for its config
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))


_set_compile_environment()


def pytest_unconfigure(config) -> None:
    """The process that made the session's cache folder removes it."""
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
