"""The package's layers: no import cycle between its packages and top-level modules, and ``io/`` below everything
that writes (it imports only the grid, the errors and itself)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "canopy"
IO_MAY_IMPORT = {"io", "grid", "errors"}


def _unit(module: str) -> str:
    """The package or top-level module a dotted module name belongs to (``canopy.io.cog`` -> ``io``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> dict[str, set[tuple[str, str]]]:
    """Each unit's imports of other units, with the file that makes each, at any depth (functions included)."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        unit = _unit(".".join(relative.parts))
        if unit in ("__init__", "__main__") or relative.parts == ("canopy", "__init__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith("canopy.") and _unit(name) != unit:
                    found.setdefault(unit, set()).add((_unit(name), str(path.relative_to(PACKAGE.parent))))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one unit (Tarjan's algorithm)."""
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in list(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_between_packages():
    imports = _imports()
    graph = {unit: {other for other, _ in edges} for unit, edges in imports.items()}
    cycles = _cycles(graph)
    where = {tuple(c): sorted(f"{u} -> {o} ({f})" for u in c for o, f in imports.get(u, ()) if o in c) for c in cycles}
    assert not cycles, where


def test_io_imports_nothing_from_above_it():
    above = sorted((other, path) for other, path in _imports().get("io", ()) if other not in IO_MAY_IMPORT)
    assert not above, above


def _module_imports() -> dict[str, set[str]]:
    """Each module's imports of other canopy modules (``canopy.analysis.trees`` ...), at any depth, a package's
    ``__init__`` left out (it only re-exports)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if module.endswith("__init__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found.setdefault(module, set()).update(n for n in names if n in modules and n != module)
    return found


def test_no_import_cycle_between_modules_inside_packages():
    cycles = _cycles(_module_imports())
    assert not cycles, cycles
