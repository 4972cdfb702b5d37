"""MLflow faults: an unreachable server, failed uploads, runs left RUNNING by a killed process."""

import http.server
import re
import socket
import sys
import threading

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from lors_distill import tracking
from lors_distill.datasets import tracked
from tests.kedro_helpers import run_kedro
from tests.processes import run_ok


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free again once closed: nothing listens there


def test_an_unreachable_server_is_named_with_the_fallback():
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(tracking.TrackingError, match="is unreachable") as info:
        tracking.check_server(uri)
    assert uri in str(info.value)
    assert "sqlite:///mlflow.db" in str(info.value)
    tracking.check_server("sqlite:///mlflow.db")  # local stores are not probed
    tracking.check_server(None)


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(tracking.TrackingError, match="timed out"):
            tracking.check_server(uri, timeout=0.5)


def test_a_healthy_server_passes():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracking.check_server(f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()


def test_kedro_run_against_a_dead_server_stops_before_any_node(project_copy):
    uri = f"http://127.0.0.1:{_closed_port()}"
    (project_copy / "conf/test/mlflow.yml").write_text(f"server:\n  mlflow_tracking_uri: {uri}\n")
    with pytest.raises(tracking.TrackingError, match=uri):
        run_kedro(project_copy, ["ingestion"])
    assert not (project_copy / "data/02_intermediate/train_images.safetensors").exists()


def test_failed_uploads_never_cost_a_local_output(project_copy, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    class BrokenClient:  # what the tracked datasets upload metric histories with
        log_batch = staticmethod(broken)

    monkeypatch.setattr(mlflow, "log_artifact", broken)
    monkeypatch.setattr(tracked, "MlflowClient", BrokenClient)
    monkeypatch.setattr(mlflow, "log_param", broken)  # kedro-mlflow's per-node parameters
    with pytest.raises(tracking.TrackingError, match=r"upload\(s\) to MLflow failed") as info:
        run_kedro(project_copy, ["ingestion", "features", "experts"])
    assert "experts_loss.png" in str(info.value)
    assert "metric values" in str(info.value)
    # kedro-mlflow's per-node parameter uploads failed too, and the later nodes ran on
    assert re.search(r"the parameters of \S*expert_1\.train_expert", str(info.value))
    reporting = project_copy / "data/08_reporting"
    for name in ("experts_summary.json", "experts_loss_history.csv", "experts_loss.png"):
        assert (reporting / name).is_file(), name  # written although its upload failed


def test_runs_left_running_by_a_dead_process_are_marked_failed(project_copy):
    run_kedro(project_copy, ["ingestion"])  # creates the store and the experiment
    client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lors_distill")
    dead = run_ok([sys.executable, "-c", "import os; print(os.getpid())"], 60)
    tags = {tracking.HOST_TAG: socket.gethostname()}
    killed = client.create_run(
        experiment.experiment_id, tags={**tags, tracking.PID_TAG: dead.stdout.strip()}
    )
    alive = client.create_run(experiment.experiment_id, tags={**tags, tracking.PID_TAG: "1"})
    elsewhere = client.create_run(
        experiment.experiment_id,
        tags={tracking.HOST_TAG: "another-host", tracking.PID_TAG: dead.stdout.strip()},
    )
    run_kedro(project_copy, ["ingestion"])
    assert client.get_run(killed.info.run_id).info.status == "FAILED"
    assert "ended without closing it" in client.get_run(killed.info.run_id).data.tags["lors.ended"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # pid 1 is alive
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"  # not this host's
