"""Import structure of ``src/pricenet``: no two modules import each other, directly or in a cycle.

Imports are read with :mod:`ast`, never executed: module-level and function-level imports both
count (a function-level import only hides a cycle, it does not remove it); imports under
``if TYPE_CHECKING:`` do not, since they never run. A package's
``__init__`` re-exporting its submodules is an edge like any other, but a submodule importing a
sibling through the package (``from pricenet.tables import Schema``) is read as an import of
that sibling, since that is where the name lives.

:data:`LAYERS` is where an order between layers goes later: a module may then import only from
its own layer or a lower one. It is empty for now, so only cycles are checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "pricenet"

# Layer of each module prefix, lower numbers lower ("pricenet.errors": 0, "pricenet.tables": 1,
# ...): filled in when the layout is settled; see test_no_import_runs_up_a_layer.
LAYERS: dict[str, int] = {}


def modules(root: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` (a folder under ``root``) by dotted name."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or a name inside one) lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known)
            if resolved is None:
                continue
            # A name taken from a package's __init__ lives in one of its submodules: follow the
            # re-export so that a sibling importing through the package is not a false cycle.
            if resolved != name:
                found.add(_through_package(resolved, target, known) or resolved)
    found.discard(name)
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks (annotations only, never
    imported when the code runs)."""
    found: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                pending.extend(child.orelse)
            else:
                pending.append(child)
    return found


def _through_package(package: str, target: str, known: dict[str, Path]) -> str | None:
    """The submodule of ``package`` that its ``__init__`` takes ``target``'s name from."""
    path = known[package]
    if path.name != "__init__.py" or target == package:
        return None
    wanted = target.rpartition(".")[2]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and any((alias.asname or alias.name) == wanted for alias in node.names)
        ):
            return _resolve(node.module, known)
    return None


def import_graph(root: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` -> the modules of ``package`` it imports."""
    known = modules(root, package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def layer_of(name: str) -> int | None:
    """The layer of the longest :data:`LAYERS` prefix of ``name`` (None: not placed yet)."""
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def test_the_graph_sees_function_level_relative_and_package_imports(tmp_path):
    package = tmp_path / "pkgx"
    package.mkdir()
    (package / "__init__.py").write_text("from pkgx.a import f\n")
    (package / "a.py").write_text("import os\n\ndef f():\n    from . import b\n    return b\n")
    (package / "b.py").write_text("from pkgx import f\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkgx import a\n"
    )
    graph = import_graph(tmp_path, "pkgx")
    assert graph["pkgx.b"] == {"pkgx.a"}  # through the package's re-export
    assert graph["pkgx.a"] == {"pkgx.b"}  # a function-level, relative import
    assert graph["pkgx.c"] == set()  # annotations only
    assert find_cycles(graph) == [["pkgx.a", "pkgx.b"]]


def test_no_two_modules_import_each_other():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules that import each other: " + "; ".join(
        " <-> ".join(group) for group in cycles
    )


@pytest.mark.skipif(not LAYERS, reason="no layer order declared yet")
def test_no_import_runs_up_a_layer():
    upward = [
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if (a := layer_of(name)) is not None and (b := layer_of(target)) is not None and b > a
    ]
    assert not upward, "imports that run up a layer: " + "; ".join(upward)
