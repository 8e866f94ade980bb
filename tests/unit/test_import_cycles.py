"""No import circle in ray_dissect, counting imports under TYPE_CHECKING and inside functions.

The graph is read with ``ast`` from the source files (:mod:`fixtures.import_graph`); the checker
itself is tested on planted circles in a temporary package, and its graph against grimp's
(the library import-linter uses).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import grimp
from fixtures.import_graph import circles, describe, import_graph, shortest_cycle

import ray_dissect

PACKAGE = Path(ray_dissect.__file__).parent

def test_ray_dissect_has_no_import_circle() -> None:
    graph = import_graph(PACKAGE)
    found = circles(graph)
    assert not found, "import circles (break each, e.g. with a Protocol in the lower module):\n" \
        + describe(graph, found)


def _package(root: Path, files: dict[str, str]) -> Path:
    """Write package ``pkg`` under ``root`` from {relative path: source}; return its folder."""
    for name, source in {"__init__.py": "", **files}.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root / "pkg"


def test_finds_a_circle_closed_only_under_type_checking(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "low.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.high import High
            """,
        "high.py": "from pkg.low import *\n",
        "other.py": "import pkg.low\n",
    })
    graph = import_graph(pkg)
    assert circles(graph) == [frozenset({"pkg.high", "pkg.low"})]
    assert shortest_cycle(graph, circles(graph)[0]) == ["pkg.high", "pkg.low", "pkg.high"]


def test_finds_a_circle_closed_only_inside_a_function(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "sub/__init__.py": "",
        "sub/a.py": """
            def later():
                from . import b
                return b
            """,
        "sub/b.py": "from ..c import thing\n",
        "c.py": "from pkg.sub import a as thing\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.sub.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert circles(graph) == [frozenset({"pkg.sub.a", "pkg.sub.b", "pkg.c"})]
    assert "pkg.c -> pkg.sub.a -> pkg.sub.b -> pkg.c" in describe(graph, circles(graph))


def test_a_package_importing_its_modules_is_no_circle_until_one_imports_it_back(
        tmp_path: Path) -> None:
    files = {"__init__.py": "from pkg.one import f\n", "one.py": "import json\nf = 1\n",
             "two.py": "from pkg import one\nimport pkg.one\n"}
    assert circles(import_graph(_package(tmp_path / "ok", files))) == []
    files["one.py"] = "from pkg import two\n"
    assert circles(import_graph(_package(tmp_path / "mutual", files))) == [
        frozenset({"pkg.one", "pkg.two"})]
    files["one.py"] = "def g():\n    from pkg import f\n"
    assert circles(import_graph(_package(tmp_path / "back", files))) == [
        frozenset({"pkg", "pkg.one"})]


def test_separate_circles_are_reported_separately(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"a.py": "import pkg.b\n", "b.py": "import pkg.a\n",
                              "c.py": "import pkg.d\nimport pkg.a\n", "d.py": "import pkg.c\n"})
    assert circles(import_graph(pkg)) == [frozenset({"pkg.a", "pkg.b"}),
                                          frozenset({"pkg.c", "pkg.d"})]


def test_the_graph_is_the_one_grimp_reads() -> None:
    """grimp (import-linter's graph) also counts TYPE_CHECKING and function-local imports."""
    ours = import_graph(PACKAGE)
    theirs = grimp.build_graph("ray_dissect", cache_dir=None)
    assert set(ours) == theirs.modules
    for module, imported in ours.items():
        assert imported == theirs.find_modules_directly_imported_by(module), module
