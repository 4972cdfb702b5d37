"""Run the real Kedro project (session, catalog, runner) inside a test folder."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_kedro(
    project: Path,
    pipelines: list[str] | None = None,
    env: str = "test",
    params: dict | None = None,
    **run_args: Any,
) -> dict[str, Any]:
    """``kedro run --env <env> --pipelines <...> --params <...>`` from inside ``project``.

    ``run_args`` go to ``KedroSession.run`` (``runner=``, ``only_missing_outputs=``, ...).

    The working directory matters: ``sqlite:///mlflow.db`` and relative paths are resolved
    against it, as they are for a user running ``kedro run`` in the project folder.
    """
    _forget_tracking_uri()
    bootstrap_project(project)
    status = "FAILED"
    try:
        with (
            contextlib.chdir(project),
            KedroSession.create(project_path=project, env=env, runtime_params=params) as session,
        ):
            outputs = session.run(pipeline_names=pipelines, **run_args)
        status = "FINISHED"
        return outputs
    finally:
        # A CLI run is one process; here many runs share one, so close what a run left open.
        while mlflow.active_run():
            mlflow.end_run(status)
        _forget_tracking_uri()


def _forget_tracking_uri() -> None:
    """``mlflow.set_tracking_uri`` (called by kedro-mlflow) also exports MLFLOW_TRACKING_URI,
    which ``conf/base/mlflow.yml`` reads: without this, every later session in this process
    would log into the first project's store."""
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def load_catalog(project: Path, env: str = "test", params: dict | None = None):
    """The project's data catalog for ``env`` (to load what a run wrote)."""
    _forget_tracking_uri()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
        return session.load_context().catalog


def make_project_copy(tmp_path: Path) -> Path:
    """Copy ``pyproject.toml`` and ``conf/`` into ``tmp_path/project`` with empty data layers."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    (root / "src").mkdir()  # the package itself is imported from the installed project
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    # MLflow caches one store per URI string: give each copy its own absolute sqlite path
    mlflow_yml = root / "conf" / "base" / "mlflow.yml"
    key = "'sqlite:///mlflow.db'"  # the default when MLFLOW_TRACKING_URI is not set
    absolute = f"'sqlite:///{(root / 'mlflow.db').as_posix()}'"
    text = mlflow_yml.read_text()
    assert key in text, f"{mlflow_yml} no longer has '{key}'"
    mlflow_yml.write_text(text.replace(key, absolute))
    (root / "conf" / "local").mkdir()
    for layer in sorted((PROJECT_ROOT / "data").iterdir()):
        if layer.is_dir():
            (root / "data" / layer.name).mkdir(parents=True)
    return root
