"""How the test session compiles, and how a test that must compile as users do gets that back.

Most of the suite's time on a CPU is XLA compiling thousands of small programs that run for moments. The
session (and every subprocess it starts, through the environment) therefore compiles with LLVM's cheapest
pipeline and XLA's older CPU fusion emitters, which compile faster (the cheapest pipeline's code runs
slower; docs/contributing.md has the measured times), and shares one persistent compilation cache between
the test workers. The cheap pipeline keeps the arithmetic, but it can order a reduction or fuse a
multiply-add differently in two programs of different shape; a test that compares two such programs bit
for bit runs them under :func:`users_compile_environment`."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version


def fast_compile_flags(jaxlib: str) -> tuple[str, ...]:
    """The fast-compile flags that ``jaxlib`` (a version) knows: XLA aborts at start on a flag it does not know,
    and jaxlib 0.11 dropped the older CPU fusion emitters with their flag."""
    flags = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
    major_minor = tuple(int(part) for part in jaxlib.split(".")[:2])
    return flags + (("--xla_cpu_use_fusion_emitters=false",) if major_minor < (0, 11) else ())


def _installed_jaxlib() -> str:
    try:
        return version("jaxlib")
    except PackageNotFoundError:  # a jaxlib built from source without its metadata: assume a recent one
        return "99.0"


FAST_COMPILE_FLAGS = fast_compile_flags(_installed_jaxlib())


def with_fast_compile_flags(xla_flags: str) -> str:
    """``xla_flags`` plus the fast-compile flags it does not set itself."""
    flags = xla_flags.split()
    chosen = {flag.split("=")[0] for flag in flags}
    return " ".join(flags + [flag for flag in FAST_COMPILE_FLAGS if flag.split("=")[0] not in chosen])


def users_compile_environment() -> dict[str, str]:
    """This process's environment without the fast-compile flags (the shared cache stays: it keys on them)."""
    env = dict(os.environ)
    flags = [flag for flag in env.get("XLA_FLAGS", "").split() if flag not in FAST_COMPILE_FLAGS]
    env["XLA_FLAGS"] = " ".join(flags)
    return env
