"""The test session's fast-compile flags: only flags the installed jaxlib knows (XLA aborts at start on any
other), the user's own XLA_FLAGS kept."""

import subprocess
import sys

from compile_settings import FAST_COMPILE_FLAGS, fast_compile_flags, with_fast_compile_flags


def test_the_fusion_emitter_flag_is_for_jaxlib_before_0_11_only():
    cheap = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
    assert fast_compile_flags("0.10.2") == (*cheap, "--xla_cpu_use_fusion_emitters=false")
    assert fast_compile_flags("0.11.2") == cheap
    assert fast_compile_flags("1.0.0") == cheap


def test_a_flag_the_user_set_is_kept_and_the_others_added():
    flags = with_fast_compile_flags("--xla_backend_optimization_level=2 --xla_force_host_platform_device_count=2")
    assert flags.split()[:2] == ["--xla_backend_optimization_level=2", "--xla_force_host_platform_device_count=2"]
    assert set(flags.split()[2:]) == set(FAST_COMPILE_FLAGS) - {"--xla_backend_optimization_level=0"}


def test_the_installed_jaxlib_starts_with_the_flags():
    """The session's flags, given to a fresh process: XLA accepts every one of them and compiles."""
    env = {"XLA_FLAGS": " ".join(FAST_COMPILE_FLAGS), "JAX_PLATFORMS": "cpu"}
    code = "import jax, jax.numpy as jnp; print(int(jax.jit(lambda x: x + 1)(jnp.int32(1))))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr[-2000:]
