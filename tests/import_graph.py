"""The import graph of a package, read with ``ast`` from its source files, and its circles.

Every ``import`` statement counts: at module level, under ``if TYPE_CHECKING:`` and inside
functions (a type-only or deferred back reference is still a circle for a reader).
``import a.b.c`` is an edge to ``a.b.c``; ``from a.b import c`` an edge to ``a.b.c`` where that
is a module of the package, else to ``a.b`` (as grimp, which import-linter uses, reads them).
Only edges between modules of the package are kept.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

Graph = dict[str, set[str]]
"""Module name -> names of the package modules it imports."""


def module_names(root: Path) -> dict[str, Path]:
    """Each module of the package in folder ``root``, by dotted name (``pkg.sub.mod``)."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join(parts[:keep] + ([node.module] if node.module else []))


def _targets(module: str, is_package: bool, node: ast.AST,
             known: Mapping[str, Path]) -> Iterator[str]:
    """The modules one import statement imports (any, inside the package or not)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = _base(module, is_package, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in known else base


def import_graph(root: Path) -> Graph:
    """The import graph of the package in folder ``root`` (see the module doc)."""
    known = module_names(root)
    graph: Graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[module] = {target for node in ast.walk(tree)
                         for target in _targets(module, is_package, node, known)
                         if target in known and target != module}
    return graph


def _strong_components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each as a list of nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    found.append(_pop_component(node, stack, on_stack))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _pop_component(root: str, stack: list[str], on_stack: set[str]) -> list[str]:
    component: list[str] = []
    while True:
        node = stack.pop()
        on_stack.discard(node)
        component.append(node)
        if node == root:
            return sorted(component)


def circles(graph: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The import circles of ``graph``: each set of modules that import one another (a
    strongly connected component of 2+ modules), sorted by their smallest names."""
    found = [frozenset(c) for c in _strong_components(graph) if len(c) > 1]
    return sorted(found, key=sorted)


def shortest_cycle(graph: Mapping[str, Iterable[str]], members: frozenset[str]) -> list[str]:
    """One shortest import cycle inside the circle ``members``, as ``[a, b, ..., a]``."""
    best: list[str] = []
    for start in sorted(members):
        path = _shortest_path_back(graph, members, start)
        if path and (not best or len(path) < len(best)):
            best = path
    return best


def _shortest_path_back(graph: Mapping[str, Iterable[str]], members: frozenset[str],
                        start: str) -> list[str]:
    """Breadth-first search from ``start`` back to itself inside ``members``."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(set(graph.get(node, ())) & members):
                if child == start:
                    return [*_walk_back(parent, node, start), start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    return []


def _walk_back(parent: Mapping[str, str], node: str, start: str) -> list[str]:
    path = [node]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1]


def describe(graph: Mapping[str, Iterable[str]], found: Iterable[frozenset[str]]) -> str:
    """One line per circle: its size, a shortest cycle through it and all its modules."""
    return "\n".join(
        f"{len(members)} modules, e.g. {' -> '.join(shortest_cycle(graph, members))}; "
        f"all: {', '.join(sorted(members))}" for members in found)
