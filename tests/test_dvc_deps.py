"""dvc.yaml lists, for every stage, each project module that the stage's pipeline runs and
each parameter section its nodes read.

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

STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="module")
def stage_pipelines() -> dict:
    """stage -> the Kedro pipeline its command runs."""
    from kedro.framework.project import configure_project

    configure_project(PACKAGE)
    from lors_distill.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    return {
        stage: pipelines[spec["cmd"].split("--pipelines")[1].split()[0]]
        for stage, spec in STAGES.items()
    }


@pytest.fixture(scope="module")
def stage_code(stage_pipelines) -> dict[str, set[str]]:
    """stage -> the project files its pipeline runs (relative to the repository root)."""
    from kedro.framework.project import settings
    from kedro.io import DataCatalog

    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(PROJECT_ROOT / "conf"), env="local", **settings.CONFIG_LOADER_ARGS
    )
    catalog = DataCatalog.from_config(loader["catalog"])
    code = {}
    for stage, pipeline in stage_pipelines.items():
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
    missing = {}
    for stage, files in stage_code.items():
        deps = [d.rstrip("/") for d in STAGES[stage]["deps"]]
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


def test_every_stage_tracks_the_parameter_sections_it_reads(stage_pipelines):
    """A section a stage's nodes read (``params:<section>``) is one of the stage's ``params``,
    taken from the file that defines it: a change to it reruns the stage even when the upstream
    artifacts stay byte-identical (the evaluation stage names budgets by the data, features,
    model and experts settings)."""
    from lors_distill.core.config import PARAMETER_FILES

    problems = {}
    for stage, pipeline in stage_pipelines.items():
        read = {
            name.removeprefix("params:").split(".")[0]
            for node in pipeline.nodes
            for name in node.inputs
            if name.startswith("params:")
        }
        assert not any(name == "parameters" for node in pipeline.nodes for name in node.inputs)
        tracked = {
            (file, section)
            for entry in STAGES[stage]["params"]
            for file, sections in entry.items()
            for section in sections
        }
        wanted = {(f"conf/base/{PARAMETER_FILES[section]}", section) for section in read}
        if wanted - tracked:
            problems[stage] = sorted(wanted - tracked)
    assert not problems, f"dvc.yaml: add these params (stage: [(file, section)]): {problems}"
