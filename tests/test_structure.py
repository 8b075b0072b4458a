"""The package's import structure, read with :mod:`ast` (nothing is imported).

* No import cycle between the package's modules.  Every import counts, at
  module level or inside a function (a lazy import only hides a cycle), except
  those under ``if TYPE_CHECKING:``, which never run.  A package's
  ``__init__`` importing its submodules is the normal pattern; importing a
  submodule does not count as importing its parent packages, but a submodule
  that imports a name from its package's ``__init__`` does, and must not close
  a cycle.
* No private name (``_name``, not ``__dunder__``) of one module used by
  another: neither imported (``from .m import _name``) nor read as an
  attribute of an imported module (``m._name``).  A private module
  (``engines/_files.py``) may be imported by its own package's modules only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "ebook2audio_dask"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


@dataclass(frozen=True)
class Use:
    """One module's use of another module (an import), or of a private name in it."""

    module: str
    line: int
    target: str
    name: str = ""

    def __str__(self) -> str:
        where = f"{self.module} (line {self.line})"
        return f"{where}: {self.target}.{self.name}" if self.name else f"{where} -> {self.target}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
            if name == "TYPE_CHECKING":
                skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return skipped


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _private_module(importer: str, target: str) -> bool:
    """*target* has a private part that *importer* is not inside of."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _is_private(part):
            owner = ".".join(parts[:i])
            return not (importer == owner or importer.startswith(owner + "."))
    return False


def scan() -> tuple[dict[str, list[Use]], list[Use]]:
    """The import graph (module -> imports of package modules) and every private use."""
    mods = modules()
    graph: dict[str, list[Use]] = defaultdict(list)
    private: list[Use] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped = _type_checking_nodes(tree)
        package = _package_of(name, path)
        bound: dict[str, str] = {}  # local name -> package module it refers to
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source != PACKAGE and not source.startswith(PACKAGE + "."):
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in mods:  # a submodule
                        graph[name].append(Use(name, node.lineno, full))
                        bound[alias.asname or alias.name] = full
                        if _private_module(name, full):
                            private.append(Use(name, node.lineno, source, alias.name))
                    else:
                        graph[name].append(Use(name, node.lineno, source))
                        if _is_private(alias.name) or _private_module(name, source):
                            private.append(Use(name, node.lineno, source, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        graph[name].append(Use(name, node.lineno, alias.name))
                        if alias.asname:
                            bound[alias.asname] = alias.name
                        if _private_module(name, alias.name):
                            private.append(Use(name, node.lineno, alias.name))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and bound[node.value.id] != name
                and _is_private(node.attr)
            ):
                private.append(Use(name, node.lineno, bound[node.value.id], node.attr))
    return graph, private


def cycles(graph: dict[str, list[Use]]) -> list[list[Use]]:
    """One cycle (as the imports that make it) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan (the package is far too small to recurse deeply)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for use in graph.get(v, ()):
            w = use.target
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or any(u.target == v for u in graph.get(v, ())):
                components.append(component)

    for v in list(graph):
        if v not in index:
            visit(v)
    found = []
    for component in components:
        members = set(component)
        start = min(component)
        # breadth-first from start back to start, inside the component
        paths: dict[str, list[Use]] = {start: []}
        queue = [start]
        cycle: list[Use] | None = None
        while queue and cycle is None:
            v = queue.pop(0)
            for use in graph.get(v, ()):
                if use.target == start:
                    cycle = [*paths[v], use]
                    break
                if use.target in members and use.target not in paths:
                    paths[use.target] = [*paths[v], use]
                    queue.append(use.target)
        found.append(cycle or [])
    return found


def test_the_scan_sees_the_package():
    mods = modules()
    graph, _ = scan()
    assert {PACKAGE, f"{PACKAGE}.engines", f"{PACKAGE}.pipeline.api"} <= set(mods)
    assert graph[PACKAGE], "the package's __init__ imports nothing?"


def test_no_import_cycle_between_modules():
    graph, _ = scan()
    found = cycles(graph)
    message = "\n".join("cycle:\n" + "\n".join(f"    {use}" for use in cycle) for cycle in found)
    if found:
        pytest.fail(f"import cycles between the package's modules:\n{message}", pytrace=False)


def test_no_private_name_used_from_another_module():
    _, private = scan()
    message = "\n".join(f"    {use}" for use in sorted(set(private), key=str))
    if private:
        pytest.fail(
            "private names used outside their module (make them public: no underscore, in "
            f"__all__, with a docstring; or move the code):\n{message}",
            pytrace=False,
        )


def test_the_checks_catch_a_cycle_and_a_private_import():
    graph = {"a": [Use("a", 1, "b")], "b": [Use("b", 2, "c")], "c": [Use("c", 3, "a")]}
    assert [[str(u) for u in c] for c in cycles(graph)] == [
        ["a (line 1) -> b", "b (line 2) -> c", "c (line 3) -> a"]
    ]
    assert cycles({"a": [Use("a", 1, "b")], "b": []}) == []
    assert _private_module("pkg.engines.piper", "pkg.engines._files") is False
    assert _private_module("pkg.pipeline.tasks", "pkg.engines._files") is True
    assert _is_private("_x") and not _is_private("__all__") and not _is_private("x")
