"""MLflow tracking faults: a server that is down, one that dies mid-run, runs left RUNNING.

* :func:`check_server` asks an ``http(s)`` tracking server for ``/health`` before anything
  else happens, so an unreachable one fails in seconds, naming the URI and the fallback, instead
  of after MLflow's retries (about 250 s).
* :func:`upload` runs one upload to the active run; when it fails the error is logged and kept,
  the run goes on (every local output is written first, then uploaded), and
  :func:`raise_failed_uploads` reports them all when the pipeline ends.
* :func:`close_stale_runs` marks FAILED the RUNNING runs that a process on this host started and
  that no longer exists (a run killed with ``kill -9`` never closes its MLflow run).
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import mlflow

logger = logging.getLogger(__name__)

HOST_TAG, PID_TAG = "lors.host", "lors.pid"
FALLBACK = (
    "start the server, or use the local store: unset MLFLOW_TRACKING_URI (conf/base/mlflow.yml "
    "then uses sqlite:///mlflow.db) or set server.mlflow_tracking_uri: sqlite:///mlflow.db in "
    "conf/local/mlflow.yml"
)
_failed: list[str] = []


class TrackingError(RuntimeError):
    """The MLflow tracking server cannot be used (message names the URI and the fallback)."""


def check_server(uri: str | None, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingError` unless an ``http(s)`` tracking server answers ``/health``
    within ``timeout`` seconds (other URIs, such as ``sqlite:``, are local and not checked)."""
    if not uri or not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        reason = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
    raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}): {FALLBACK}")


def upload(what: str, action: Callable[[], Any]) -> bool:
    """Run ``action`` (an upload to the active run); on failure log it, keep it for
    :func:`raise_failed_uploads`, and go on. Returns whether it succeeded."""
    try:
        action()
        return True
    except Exception as error:  # the tracking server, its store or the network
        _failed.append(f"{what}: {type(error).__name__}: {error}")
        logger.error("could not upload %s to MLflow (the local file is written): %s", what, error)
        return False


def raise_failed_uploads() -> None:
    """Raise :class:`TrackingError` listing the uploads that failed during this run (and
    forget them)."""
    failed, _failed[:] = list(_failed), []
    if failed:
        raise TrackingError(
            f"{len(failed)} upload(s) to MLflow failed; every local output was written:\n  "
            + "\n  ".join(failed[:20])
        )


def forget_failed_uploads() -> None:
    _failed.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def close_stale_runs() -> list[str]:
    """Tag the active run with this host and process; mark FAILED every other RUNNING run of
    its experiment that a process on this host started and that has ended. Returns their ids."""
    active = mlflow.active_run()
    if active is None:
        return []
    client = mlflow.MlflowClient()
    host = socket.gethostname()
    client.set_tag(active.info.run_id, HOST_TAG, host)
    client.set_tag(active.info.run_id, PID_TAG, str(os.getpid()))
    running = client.search_runs(
        [active.info.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
    )
    closed = []
    for run in running:
        pid = run.data.tags.get(PID_TAG, "")
        if run.info.run_id == active.info.run_id or not pid.isdigit() or _alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "lors.ended", f"process {pid} ended without closing it")
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
        logger.warning(
            "MLflow run %s was left RUNNING by process %s, which has ended: marked FAILED",
            run.info.run_id,
            pid,
        )
    return closed
