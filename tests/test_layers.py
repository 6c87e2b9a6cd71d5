"""Imports flow one way: envs < learning pieces < algorithms < registry < core < sweep < spec < program <
the run < the public API. Read from the source (every import statement, including those inside
functions), so a cycle or an upward import fails here before it confuses anyone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer of each module (a package prefix ending in "." covers its submodules); higher may import lower
LAYERS: dict[str, int] = {
    "envs": 0, "envs.": 0,
    # learning pieces and support that knows nothing of runs
    "jmarl.config": 1, "jmarl.networks": 1, "jmarl.attention": 1, "jmarl.mixers": 1, "jmarl.qplex": 1,
    "jmarl.returns": 1, "jmarl.distributions": 1,
    "jmarl.replay": 1, "jmarl.evaluate": 1, "jmarl.optim": 1, "jmarl.masks": 1, "jmarl.onpolicy": 1,
    "jmarl.offpolicy": 1,
    "jmarl.devices": 1, "jmarl.memory": 1, "jmarl.checkpoint": 1, "jmarl.results": 1, "jmarl.progress": 1,
    "jmarl.plots": 1, "jmarl.render": 1, "jmarl.compile_cache": 1,
    "jmarl.algos": 2, "jmarl.algos.": 2,
    "jmarl.registry": 3,
    "jmarl.core": 4,
    "jmarl.sweep": 5,
    "jmarl.spec": 6,
    "jmarl.program": 7,
    "jmarl.run_dir": 8, "jmarl.runner": 8, "jmarl.policy": 8, "jmarl.loggers": 8,
    "jmarl": 9,  # the package's public API (jmarl/__init__.py)
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int | None:
    if module in LAYERS:
        return LAYERS[module]
    prefixes = [p for p in LAYERS if p.endswith(".") and module.startswith(p)]
    return LAYERS[max(prefixes, key=len)] if prefixes else None


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in ("jmarl", "envs") for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in ``path`` (``from pkg import mod`` counts as ``pkg.mod``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, known) - {name} for name, path in mods.items()}


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer(m) is None]
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in graph().items() for d in sorted(deps) if (layer(d) or 0) > (layer(m) or 0)]
    assert not upward, "imports must flow down the layers:\n" + "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a2"}, "a2": {"a2b"}, "a2b": {"a2"}}, ["a2", "a2b", "a2"]),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert find_cycle(edges) == expected


def test_function_level_and_from_imports_are_seen(tmp_path, monkeypatch):
    """A closing import hidden inside a function is an edge like any other."""
    src = tmp_path / "m.py"
    src.write_text("from jmarl import sweep as sw\n\ndef f():\n    from jmarl.registry import config_class\n")
    assert imports(src, {"jmarl.sweep", "jmarl.registry", "jmarl"}) == {"jmarl.sweep", "jmarl.registry"}
    src.write_text("import envs\nfrom jmarl import ConfigError\n")
    assert imports(src, {"jmarl.sweep", "jmarl", "envs"}) == {"jmarl", "envs"}
