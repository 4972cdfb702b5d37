"""A real MLflow tracking server on loopback receives a `kedro run` when the URI points at it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.kedro_helpers import make_project_copy
from tests.processes import background, free_port, run_ok

KEDRO = Path(sys.executable).with_name("kedro")
MLFLOW = Path(sys.executable).with_name("mlflow")


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout} s")


@pytest.fixture
def tracking_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(MLFLOW),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
    ]
    # no background job runner: it would leave a store in /dev/shm behind
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # its own process group: the uvicorn workers stop with it
    with background(command, tmp_path / "server.log", env=env) as server:
        _wait_healthy(url, server)
        yield url, tmp_path / "server-artifacts"


@pytest.mark.slow
def test_kedro_run_logs_to_a_loopback_tracking_server(tracking_server, tmp_path):
    url, artifacts = tracking_server
    project = make_project_copy(tmp_path)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": url,  # overrides conf/base/mlflow.yml's sqlite:///mlflow.db
        "KEDRO_ENV": "test",
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
    }
    run_ok(
        [str(KEDRO), "run", "--pipelines", "ingestion,features,experts"], 900, cwd=project, env=env
    )
    assert not (project / "mlflow.db").exists()  # nothing went to the local store

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("lors_distill")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert set(run.info.run_name.split("+")) == {"ingestion", "features", "experts"}
    assert run.info.status == "FINISHED"
    assert run.data.params["experts.num_experts"] == "2"
    history = client.get_metric_history(run.info.run_id, "experts.expert_0.train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]  # test env: 3 epochs
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert "plots/experts_loss.png" in plots
    # artifacts travel through the server (proxied) into its own artifact folder
    assert any(p.name == "experts_loss.png" for p in artifacts.rglob("*.png"))
