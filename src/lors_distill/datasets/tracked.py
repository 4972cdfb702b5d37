"""Local files that are also logged to the active MLflow run (metric histories, metrics, files).

DVC and the notebooks read the local file; MLflow gets the same numbers as metrics with steps,
in batches (one request per 1,000 values, not one per value). Without an active run (tracking
disabled) they behave exactly like the plain datasets. Local writes are atomic
(:mod:`lors_distill.datasets.atomic`).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
import pandas as pd
from kedro.io.core import get_filepath_str
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.text import TextDataset
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from lors_distill.datasets.atomic import AtomicSave
from lors_distill.tracking import upload

_BATCH = 1000


def log_metrics(values: list[tuple[str, float, int]]) -> int:
    """Log ``(key, value, step)`` triples to the active run; returns how many were logged."""
    run = mlflow.active_run()
    if run is None:
        return 0
    stamp = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), stamp, int(step))
        for key, value, step in values
        if value is not None and math.isfinite(float(value))
    ]
    client = MlflowClient()

    def send() -> None:
        for start in range(0, len(metrics), _BATCH):
            client.log_batch(run.info.run_id, metrics=metrics[start : start + _BATCH])

    return len(metrics) if upload(f"{len(metrics)} metric values", send) else 0


class TrackedCSVDataset(AtomicSave, CSVDataset):
    """A CSV table whose numeric columns are also logged as MLflow metric histories.

    Args:
        step_column: the column giving each row's step (e.g. ``iteration``).
        prefix: metric names are ``<prefix>.<column>``.
        group_column: optional column splitting the table into separate histories
            (``<prefix>.<group>.<column>``, e.g. one loss curve per expert).
    """

    def __init__(
        self,
        *,
        step_column: str,
        prefix: str,
        group_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._step_column = step_column
        self._prefix = prefix
        self._group_column = group_column

    def save(self, data: pd.DataFrame) -> None:
        super().save(data)
        self._track(data)

    def log_saved(self) -> None:
        """Log the saved table to the active run (a run whose nodes ran elsewhere: the
        ``DaskRunner`` calls this on the driver)."""
        if mlflow.active_run() is not None:
            self._track(self.load())

    def _track(self, data: pd.DataFrame) -> None:
        skip = {self._step_column, self._group_column}
        columns = [
            c for c in data.columns if c not in skip and pd.api.types.is_numeric_dtype(data[c])
        ]
        values = []
        for row in data.to_dict(orient="records"):
            prefix = self._prefix
            if self._group_column:
                prefix = f"{prefix}.{self._group_column}_{row[self._group_column]}"
            values += [(f"{prefix}.{c}", row[c], row[self._step_column]) for c in columns]
        log_metrics(values)


class TrackedJSONDataset(AtomicSave, JSONDataset):
    """A flat JSON object of numbers (``metrics.json``) also logged as MLflow metrics.

    MLflow metric names may not contain ``@``, so ``lors.ir@1.mean`` is logged as
    ``lors.ir_at_1.mean``; the JSON file keeps the original keys.
    """

    def save(self, data: dict[str, Any]) -> None:
        super().save(data)
        self._track(data)

    def log_saved(self) -> None:
        """Log the saved metrics to the active run (see :meth:`TrackedCSVDataset.log_saved`)."""
        if mlflow.active_run() is not None:
            self._track(self.load())

    def _track(self, data: dict[str, Any]) -> None:
        numbers = [
            (key.replace("@", "_at_"), value, 0)
            for key, value in data.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        log_metrics(numbers)


def log_artifact(
    path: str | PurePosixPath,
    artifact_path: str | None,
    fs: Any = None,
    protocol: str = "file",
) -> bool:
    """Copy a written file into the active MLflow run's artifacts (if there is a run); a file
    on another fsspec filesystem (``fs``, ``protocol``) is fetched into a temporary folder
    first. A failed upload is logged and reported when the run ends
    (:mod:`lors_distill.tracking`), never raised here: the node's other outputs are still
    written."""
    if artifact_path is None or mlflow.active_run() is None:
        return False
    if protocol == "file":
        return upload(str(path), lambda: mlflow.log_artifact(str(path), artifact_path))
    url = f"{protocol}://{get_filepath_str(PurePosixPath(path), protocol)}"

    def fetch_and_log() -> None:
        with tempfile.TemporaryDirectory(prefix="lors-artifact-") as folder:
            local = Path(folder) / PurePosixPath(path).name
            fs.get_file(get_filepath_str(PurePosixPath(path), protocol), str(local))
            mlflow.log_artifact(str(local), artifact_path)

    return upload(url, fetch_and_log)


class LoggedFile:
    """A file dataset that is also logged as an artifact of the active MLflow run."""

    _filepath: PurePosixPath
    _protocol: str
    _fs: Any
    _artifact_path: str | None

    def save(self, data: Any) -> None:
        super().save(data)  # type: ignore[misc]
        self.log_saved()

    def log_saved(self) -> None:
        """Log the saved file to the active run (also called by the ``DaskRunner`` on the
        driver, for a file a worker saved)."""
        log_artifact(self._filepath, self._artifact_path, self._fs, self._protocol)


class TrackedMatplotlibDataset(LoggedFile, AtomicSave, MatplotlibDataset):
    """A saved figure that is also logged as an MLflow artifact under ``artifact_path``.

    (kedro-mlflow's ``MlflowArtifactDataset`` would do the same, but its dynamically created
    class cannot be pickled, which makes ``ParallelRunner`` refuse the whole catalog.)
    """

    def __init__(self, *, artifact_path: str = "plots", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._artifact_path = artifact_path


class TrackedTextDataset(LoggedFile, AtomicSave, TextDataset):
    """A saved text file that is also logged as an MLflow artifact under ``artifact_path``."""

    def __init__(self, *, artifact_path: str = "reports", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._artifact_path = artifact_path
