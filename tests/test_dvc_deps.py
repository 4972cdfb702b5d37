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

import functools

import pytest
import yaml

from tests.import_graph import PACKAGE, import_closure, module_file, only_reexports
from tests.kedro_helpers import PROJECT_ROOT


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
