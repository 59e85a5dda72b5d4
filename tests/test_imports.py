"""Import structure of ``src/pricenet``: no two modules import each other, directly or in a cycle.

Imports are read with :mod:`ast`, never executed: module-level and function-level imports both
count (a function-level import only hides a cycle, it does not remove it); imports under
``if TYPE_CHECKING:`` do not, since they never run. A package's
``__init__`` re-exporting its submodules is an edge like any other, but a submodule importing a
sibling through the package (``from pricenet.tables import Schema``) is read as an import of
that sibling, since that is where the name lives.

:data:`LAYERS` orders the package's folders: a module may import only from its own layer or a
lower one, and every module has a layer, so a new one is placed on purpose.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "pricenet"

# Layer of each module prefix, lowest first; the longest prefix of a module names its layer.
# config/ sits above tables/ and nn/ because the one config check applies their rules (the
# tables' policies, the network spec's size); inference/ sits above run/ because attributions
# re-derive a run's held-out rows from its plan and draw with its plots.
COMMANDS = ("train", "predict", "serve", "export", "explain", "schema", "sweep")
LAYERS: dict[str, int] = {
    "pricenet.errors": 0,  # one-line user errors
    "pricenet.atomic": 0,  # atomic writes
    "pricenet.stored": 0,  # run folders read as plain data
    "pricenet.tables": 1,
    "pricenet.nn": 2,
    "pricenet.config": 3,
    "pricenet.checkpoints": 4,
    "pricenet.engine": 5,
    "pricenet.run": 6,
    "pricenet.inference": 7,
    **{f"pricenet.{name}": 8 for name in COMMANDS},
}


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


def test_every_module_has_a_layer():
    unplaced = [name for name in modules() if name != PACKAGE and layer_of(name) is None]
    assert not unplaced, "modules without a layer in LAYERS: " + ", ".join(unplaced)


def test_the_layer_test_catches_an_upward_import(monkeypatch):
    graph = {"pricenet.tables.read": {"pricenet.run.plan"}, "pricenet.run.plan": set()}
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match=r"pricenet\.tables\.read -> pricenet\.run\.plan"):
        test_no_import_runs_up_a_layer()


def test_the_wheel_lists_every_subpackage():
    """pyproject.toml names its packages one by one: a folder left out would be missing from the
    wheel (only the slow wheel test would notice)."""
    config = tomllib.loads((SRC.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert folders <= listed, f"missing from [tool.setuptools] packages: {folders - listed}"


def test_no_import_runs_up_a_layer():
    upward = [
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if (a := layer_of(name)) is not None and (b := layer_of(target)) is not None and b > a
    ]
    assert not upward, "imports that run up a layer: " + "; ".join(upward)
