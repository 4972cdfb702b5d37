"""The project's import graph, read statically from the source (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.kedro_helpers import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
PACKAGE = "lors_distill"


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _with_parents(name: str) -> set[str]:
    """A module and its parent packages (importing ``a.b.c`` runs ``a`` and ``a.b`` too)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _executed_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def direct_imports(name: str) -> set[str]:
    """Project modules that module ``name`` imports (anywhere in the file, lazy ones too)."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _executed_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # ``from pkg import mod`` imports a module, not a name
            found |= {f"{module}.{a.name}" for a in node.names if module_file(f"{module}.{a.name}")}
    project = {m for m in found if m.split(".")[0] == PACKAGE}
    return {p for m in project for p in _with_parents(m) if module_file(p)}


def import_closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [p for root in roots for p in _with_parents(root)]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        todo.extend(direct_imports(name))
    return seen


def only_reexports(path: Path) -> bool:
    """An ``__init__.py`` holding nothing but a docstring, imports, ``__all__``/``__version__``."""
    if path.name != "__init__.py":
        return False
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # docstring
        if isinstance(statement, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id in {"__all__", "__version__"}
            for t in statement.targets
        ):
            continue
        return False
    return True


def project_modules() -> list[str]:
    """Every module of the package, as dotted names."""
    names = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_cycles() -> list[list[str]]:
    """Groups of modules that import each other, directly or around a circle (Tarjan's
    strongly connected components). A module importing its own parent package is not an edge:
    Python runs the parent first whatever the module says."""
    graph = {
        name: {d for d in direct_imports(name) if d != name and not name.startswith(d + ".")}
        for name in project_modules()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles
