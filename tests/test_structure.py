"""The package's import graph runs one way: no cycles, leaf modules import (almost) nothing, and
the registry does not load the converters; and no module grows past :data:`MAX_LINES`.

:func:`import_graph` reads every ``qwen_factory_kit/**/*.py`` with :mod:`ast` (imports at module
level and inside functions, relative imports resolved) and returns module -> modules it imports;
add rules on it here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "qwen_factory_kit"

#: modules at the bottom of the graph, and the kit modules each may import
LEAVES = {
    "qwen_factory_kit.errors": set(),
    "qwen_factory_kit.lfformat": set(),
    "qwen_factory_kit.think": set(),
    "qwen_factory_kit.findings": set(),
    "qwen_factory_kit.catalog": {"qwen_factory_kit.errors"},
    "qwen_factory_kit.console": set(),
    "qwen_factory_kit.plots": set(),
}


def _module_files() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict) -> list[str]:
    """The modules an import statement names (``from X import y``: ``X.y`` when it is a module, else ``X``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    return [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target for alias in node.names]


def _loaded(target: str, importer: str, modules: dict) -> set[str]:
    """The kit modules Python runs for importing ``target`` from ``importer``: the closest module,
    and the packages above it that ``importer`` is not inside (their ``__init__`` runs too)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    if not target.startswith(PACKAGE):
        return set()
    out = {target}
    parent = target.rpartition(".")[0]
    while parent.startswith(PACKAGE) and not (importer == parent or importer.startswith(parent + ".")):
        out.add(parent)
        parent = parent.rpartition(".")[0]
    return out - {importer}


@lru_cache(maxsize=None)
def _graph(function_level: bool) -> dict[str, frozenset[str]]:
    modules = _module_files()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        nodes = ast.walk(tree) if function_level else iter(tree.body)
        edges: set[str] = set()
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node, module, path.name == "__init__.py", modules):
                    edges |= _loaded(target, module, modules)
        graph[module] = frozenset(edges)
    return graph


def import_graph(*, function_level: bool = True) -> dict[str, set[str]]:
    """Module -> the kit modules it imports (``function_level=False``: only the imports at module level)."""
    return {m: set(e) for m, e in _graph(function_level).items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    graph, top = import_graph(), import_graph(function_level=False)
    contract, sinks = "qwen_factory_kit.convert.contract", "qwen_factory_kit.convert.sinks"
    assert "qwen_factory_kit.catalog" in graph[contract] and "qwen_factory_kit.catalog" not in top[contract]  # inside default_name
    assert "qwen_factory_kit.think" in top[contract] and "qwen_factory_kit" in top[sinks]  # from ..think, from .. import __version__
    assert {"qwen_factory_kit.convert", sinks} <= graph["qwen_factory_kit.recipe.bundle.untrusted"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    """No module imports itself back through others, counting the imports inside functions."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_leaf_modules_import_nothing_above_them():
    graph = import_graph()
    for module, allowed in LEAVES.items():
        assert graph[module] <= allowed, f"{module} imports {sorted(graph[module] - allowed)}"


def test_importing_the_registry_loads_no_converter():
    code = ("import sys, qwen_factory_kit.registry, qwen_factory_kit.catalog, qwen_factory_kit.lint\n"
            "print(sorted(m for m in sys.modules if m.startswith('qwen_factory_kit.convert')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


#: the longest a module of the package may grow before it is split by role (issue 18)
MAX_LINES = 700


def test_no_module_is_over_max_lines():
    long = {name: n for name, path in _module_files().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by role (at most {MAX_LINES} lines a module): {long}"


def test_the_convert_core_runs_one_way():
    """contract <- sinks <- pipeline: a converter plug-in needs the contract alone."""
    graph = import_graph()
    contract, sinks, pipeline = (f"qwen_factory_kit.convert.{m}" for m in ("contract", "sinks", "pipeline"))
    assert not {sinks, pipeline} & graph[contract]
    assert pipeline not in graph[sinks]
    for plugin in ("medical_r1", "sharegpt", "moses", "columns", "preference", "registered"):
        assert not {sinks, pipeline} & graph[f"qwen_factory_kit.convert.{plugin}"], plugin
