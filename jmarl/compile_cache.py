"""jax's persistent compilation cache for the command-line tools: where it lives, turning it on, and
whether a compile came from it (so a resumed or repeated run says why it compiled in seconds)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import jax

COMPILE_CACHE_ENV = "JMARL_COMPILE_CACHE"  # where the command-line tools keep compiled programs
MIN_COMPILE_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # jax's own threshold, kept when given


def default_compile_cache() -> Path:
    """``$JMARL_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/jmarl/xla``, else ``~/.cache/jmarl/xla``."""
    chosen = os.environ.get(COMPILE_CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jmarl" / "xla"


def use_compile_cache(directory: str | Path | None = None) -> str | None:
    """Turn on jax's persistent compilation cache in ``directory`` (default :func:`default_compile_cache`), so
    that a program compiled once loads in seconds in later processes; call it before anything compiles.
    jax's own setting (``JAX_COMPILATION_CACHE_DIR``) is kept when given. Returns the directory in use, or None
    when it cannot be created (the run then compiles as usual). Every program is stored, however quick its
    compile (``jax_persistent_cache_min_compile_time_secs`` 0 unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``
    says otherwise): at jax's 1 s a program compiling near the threshold is stored by one process and not by
    the next, so a repeated run would compile some of it again, depending on how busy the machine is."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = Path(directory) if directory is not None else default_compile_cache()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if MIN_COMPILE_TIME_ENV not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(path)


_CACHE_COUNTS = {"hits": 0, "misses": 0}
_CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}
_cache_lock = threading.Lock()
_cache_listening = False


def _count_cache_event(event: str, **kwargs: Any) -> None:
    name = _CACHE_EVENTS.get(event)
    if name is not None:
        with _cache_lock:
            _CACHE_COUNTS[name] += 1


class CacheEvents:
    """Counts the persistent cache's hits and misses (jax's monitoring events) inside a ``with`` block."""

    def __enter__(self) -> CacheEvents:
        global _cache_listening
        with _cache_lock:
            if not _cache_listening:
                jax.monitoring.register_event_listener(_count_cache_event)
                _cache_listening = True
            self.start = dict(_CACHE_COUNTS)
        return self

    def __exit__(self, *exc: Any) -> None:
        with _cache_lock:
            self.hits = _CACHE_COUNTS["hits"] - self.start["hits"]
            self.misses = _CACHE_COUNTS["misses"] - self.start["misses"]

    def note(self) -> str:
        if not self.hits:
            return ""
        return f" ({'partly ' if self.misses else ''}from the persistent compilation cache)"
