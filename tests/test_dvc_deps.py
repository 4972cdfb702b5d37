"""dvc.yaml lists, for every stage, each project module that the stage's pipeline runs.

A stage's code is the modules of its nodes' functions and of the catalog datasets its nodes read
and write, with everything those import from ``lors_distill`` (found statically, following
``import`` and ``from ... import`` through the package, relative imports included). Each such
file must be a dep of the stage, or lie in a folder that is. Left out: ``__init__.py`` files
that only re-export (their targets are checked themselves), and the modules every ``kedro run``
loads whatever the stage (settings, hooks, resolvers, the registry), which decide how a run is
executed, not what a stage computes.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import yaml

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


def direct_imports(name: str) -> set[str]:
    """Project modules that module ``name`` imports (anywhere in the file, lazy ones too)."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
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


@pytest.fixture(scope="module")
def stage_code() -> dict[str, set[str]]:
    """stage -> the project files its pipeline runs (relative to the repository root)."""
    from kedro.framework.project import configure_project, settings
    from kedro.io import DataCatalog

    configure_project(PACKAGE)
    from lors_distill.pipeline_registry import register_pipelines

    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(PROJECT_ROOT / "conf"), env="local", **settings.CONFIG_LOADER_ARGS
    )
    catalog = DataCatalog.from_config(loader["catalog"])
    pipelines = register_pipelines()
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    code = {}
    for stage, spec in stages.items():
        pipeline = pipelines[spec["cmd"].split("--pipelines")[1].split()[0]]
        roots = set()
        for node in pipeline.nodes:
            func = node.func
            while isinstance(func, functools.partial):
                func = func.func
            roots.add(func.__module__)
        for name in pipeline.datasets():
            if name.startswith("params:") or name == "parameters":
                continue
            dataset = catalog.get(name)
            if dataset is not None:
                roots.add(type(dataset).__module__)
        files = {module_file(m) for m in import_closure(roots)}
        code[stage] = {
            f.relative_to(PROJECT_ROOT).as_posix() for f in files if not only_reexports(f)
        }
    return code


def test_every_stage_depends_on_the_code_it_runs(stage_code):
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for stage, files in stage_code.items():
        deps = [d.rstrip("/") for d in stages[stage]["deps"]]
        covered = {f for f in files if any(f == d or f.startswith(d + "/") for d in deps)}
        uncovered = sorted(files - covered)
        if uncovered:
            missing[stage] = uncovered
    assert not missing, f"dvc.yaml: add these deps (stage: files): {missing}"


def test_the_check_sees_real_imports(stage_code):
    """The closure follows imports through the package: the experts stage runs the expert
    trainer, the model zoo it builds from and the device helpers the trainer calls."""
    experts = stage_code["experts"]
    assert {
        "src/lors_distill/pipelines/experts/nodes.py",
        "src/lors_distill/core/experts.py",
        "src/lors_distill/core/models.py",
        "src/lors_distill/core/device.py",
    } <= experts
    assert "src/lors_distill/core/coresets.py" not in experts  # nor more than it runs
