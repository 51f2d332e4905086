"""The package's import graph: layers that only look down (docs/design.md, architecture).

Every ``import`` of a symloss module counts, at module level or inside a function: a
lazy import that runs back up is still a circle, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import symloss

PACKAGE = Path(symloss.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the symloss modules it imports."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in targets if t in paths] or [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in paths and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as a path of module names, or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_import_graph_has_no_circle():
    assert _cycle(_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_the_evaluator_and_the_run_directory_know_no_engine():
    graph = _graph()
    for module in ("symloss.evaluator", "symloss.runs", "symloss.records"):
        engines = {t for t in graph[module] if t.startswith("symloss.engines")}
        assert not engines, f"{module} imports {engines}"


def test_no_module_below_the_package_face_imports_the_package():
    graph = _graph()
    offenders = sorted(m for m, targets in graph.items() if "symloss" in targets)
    assert offenders == []
