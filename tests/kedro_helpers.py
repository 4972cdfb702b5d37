"""Run the real Kedro project (session, catalog, runner) inside a test folder."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project


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
    bootstrap_project(project)
    try:
        with (
            contextlib.chdir(project),
            KedroSession.create(project_path=project, env=env, runtime_params=params) as session,
        ):
            return session.run(pipeline_names=pipelines, **run_args)
    finally:
        # A CLI run is one process; here many runs share one, so close what a failed run left.
        while mlflow.active_run():
            mlflow.end_run("FAILED")


def load_catalog(project: Path, env: str = "test", params: dict | None = None):
    """The project's data catalog for ``env`` (to load what a run wrote)."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
        return session.load_context().catalog
