"""The import graph of both packages: no cycles (function-local and type-only imports counted too), and the
boundaries of STYLE.md: ``ovsam_model`` never imports napari, Qt or the plugin; in the plugin, Qt only under
``napari_ovsam/_qt``.

Every ``import`` and ``from ... import`` in every module (at any depth, ``if TYPE_CHECKING:`` blocks
included: two modules that need each other's types are one concept split in two) is an edge from the module to
the package module it names; a cycle is a design fault (a concept that belongs in a third module, or a loop a
small protocol should break).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("ovsam_model", "napari_ovsam")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (SRC / package).rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest package module that ``name`` (a dotted import target) lies in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_names(name: str, path: Path) -> list[str]:
    """Every module ``path`` (module ``name``) imports anywhere in its body, as absolute dotted names
    (``from a import b`` gives ``a`` and ``a.b``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        resolved = (_resolve(target, modules) for target in imported_names(name, path))
        graph[name] = {target for target in resolved if target is not None and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _is_package_init(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def test_the_graph_sees_relative_absolute_and_local_imports() -> None:
    graph = import_graph()
    assert "ovsam_model.prompts" in graph["ovsam_model.predictor"]  # from .prompts import ...
    assert "ovsam_model.predictor" in graph["napari_ovsam.precompute"] or any(
        "ovsam_model" in target for target in graph["napari_ovsam.precompute"]
    )


def test_no_import_cycles() -> None:
    graph = import_graph()
    modules = _modules()
    # A package's __init__ re-exporting its submodules is not a cycle with them: submodules importing a
    # sibling through the package (``from . import x``) resolve to the sibling itself.
    for name in graph:
        if _is_package_init(name, modules):
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles = _cycles(graph)
    if cycles:
        pytest.fail("Import cycles: " + "; ".join(" <-> ".join(c) for c in cycles))


QT_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari.qt", "napari._qt", "magicgui")


def _offenders(
    package: str, forbidden: tuple[str, ...], allowed_dir: str | None = None
) -> dict[str, list[str]]:
    found = {}
    for name, path in _modules().items():
        if not name.startswith(package) or (allowed_dir and allowed_dir in path.relative_to(SRC).parts):
            continue
        bad = sorted(
            {m for m in imported_names(name, path) if m.split(".")[0] in forbidden or m.startswith(forbidden)}
        )
        if bad:
            found[name] = bad
    return found


def test_the_model_package_never_imports_napari_qt_or_the_plugin() -> None:
    assert _offenders("ovsam_model", ("napari", "napari_ovsam", *QT_MODULES)) == {}


def test_qt_only_under_the_plugins_qt_package() -> None:
    assert _offenders("napari_ovsam", QT_MODULES, allowed_dir="_qt") == {}
    assert "napari_ovsam._qt.widget" in _modules()
