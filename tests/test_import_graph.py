"""The package's import graph has no circles, between modules or between rooms.

A module is a ``.py`` file; a room is a subpackage (``opticam_rt.runtime``) or a top-level module
(``opticam_rt.bundle``). Every import counts, at module level, inside functions and under
``TYPE_CHECKING``: a lazy import hides a circle from Python, not from a reader. A circle means a
type lives in the wrong room; the fix is to move it to the room both sides depend on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "opticam_rt"


def _modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file; a package is named by its ``__init__.py``."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (``pkg.mod.Class`` -> ``pkg.mod``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (anywhere in its file)."""
    modules = _modules(package)
    root = package.name
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_resolve(a.name, modules) for a in node.names if a.name.split(".")[0] == root)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != root:
                    continue
                for alias in node.names:
                    # `from pkg import submodule` imports the submodule; `from mod import Name`, mod
                    targets.add(_resolve(f"{source}.{alias.name}", modules))
        targets.discard(None)
        targets.discard(name)
        graph[name] = {t for t in targets if t is not None}
    return graph


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {room(m): set() for m in graph}
    for source, targets in graph.items():
        rooms[room(source)].update(room(t) for t in targets if room(t) != room(source))
    return rooms


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Node -> its floor in an acyclic graph: 0 imports nothing of ours, else 1 + its highest import."""
    memo: dict[str, int] = {}

    def floor(node: str) -> int:
        if node not in memo:
            memo[node] = 1 + max((floor(t) for t in graph.get(node, ())), default=-1)
        return memo[node]

    return {node: floor(node) for node in graph}


def test_no_module_imports_itself_through_others():
    found = circles(import_graph())
    assert found == [], "import circles between modules (move the shared type down): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_no_room_imports_itself_through_others():
    found = circles(room_graph(import_graph()))
    assert found == [], "import circles between rooms: " + "; ".join(" <-> ".join(c) for c in found)


def test_lower_floors_do_not_know_the_upper_ones():
    """The layering a reader relies on: the CLI on top, nothing below imports it; the runtime
    never imports evaluation, serving or scale-out; the bundle format never imports a runtime."""
    rooms = room_graph(import_graph())
    level = floors(rooms)
    assert level["opticam_rt.cli"] == max(level.values())
    for upper, lower in [
        ("opticam_rt.cli", "opticam_rt.serve"),
        ("opticam_rt.cli", "opticam_rt.evaluation"),
        ("opticam_rt.evaluation", "opticam_rt.runtime"),
        ("opticam_rt.runtime", "opticam_rt.bundle"),
        ("opticam_rt.runtime", "opticam_rt.kernels"),
        ("opticam_rt.bundle", "opticam_rt.manifest"),
        ("opticam_rt.manifest", "opticam_rt.errors"),
    ]:
        assert level[upper] > level[lower], f"{upper} (floor {level[upper]}) should sit above {lower} (floor {level[lower]})"


# The checker itself must be able to see a circle, a lazy one included.
@pytest.mark.parametrize("lazy", [False, True])
def test_the_checker_finds_a_planted_circle(tmp_path, lazy):
    pkg = tmp_path / "opticam_rt"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from opticam_rt.sub.b import B\nA = 1\n")
    body = "def f():\n    from opticam_rt.a import A\n" if lazy else "from ..a import A\n"
    (pkg / "sub" / "b.py").write_text(body + "B = 2\n")
    graph = import_graph(pkg)
    assert circles(graph) == [["opticam_rt.a", "opticam_rt.sub.b"]]
    assert circles(room_graph(graph)) == [["opticam_rt.a", "opticam_rt.sub"]]
