"""No import cycle in ``src/keywheel``: module-level and function-level imports alike.

An import inside a function only hides a cycle until that function runs, so every import
statement anywhere in a module counts (``TYPE_CHECKING`` blocks too).  Importing
``keywheel.a.b`` also runs ``keywheel/a/__init__.py`` unless the importer already sits in
``keywheel.a``; the root package (the public facade that re-exports the API) is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "keywheel"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Every keywheel module that ``module``'s import statements name, wherever they stand."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import submodule``
    return {name for name in names if name in known}


def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets: set[str] = set()
        for name in _imported(tree, module, path.name == "__init__.py", known):
            targets.add(name)
            # Importing a.b.c runs a.b's __init__ first, unless the importer is inside a.b already.
            parts = name.split(".")
            for i in range(2, len(parts)):
                ancestor = ".".join(parts[:i])
                if not (module == ancestor or module.startswith(ancestor + ".")):
                    targets.add(ancestor)
        targets.discard(module)
        targets.discard(ROOT)
        edges[module] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_path_in(set(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _path_in(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    start = min(component)
    path, seen, node = [start], {start}, start
    while True:
        node = min(n for n in edges[node] if n in component)
        path.append(node)
        if node in seen:
            return path[path.index(node) :]
        seen.add(node)


def test_the_walk_sees_imports_inside_functions() -> None:
    edges = graph()
    # Spot checks that the graph is what it claims, so an empty result means something.
    assert len(edges) > 40
    assert "keywheel.router" in edges["keywheel.client"]
    assert "keywheel.gateway.app" in edges["keywheel.client"]  # Wheel.asgi_app's import, inside a function
    assert "keywheel.gateway" in edges["keywheel.client"]  # the package's __init__ runs first
    assert "keywheel.gateway.dialects" not in edges["keywheel.gateway.dialects.openai"]  # its own package


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": set(), "c": {"c2"}, "c2": {"c"}}, [["c", "c2", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycle_finder(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)
