"""Atomic writes for the kedro-datasets file datasets (JSON, CSV, parquet, text, plots).

A kill or an error during a save must leave the old file or the new one, never half of one (the
tensors get this from :func:`lors_distill.core.bundle.save_bundle` and
:class:`~lors_distill.datasets.TensorBundleDataset`). :class:`AtomicSave` makes the dataset
write a temporary file and then publish it whole:

* on a local filesystem, the temporary file lies next to the target and is renamed over it;
* on any other fsspec filesystem (``s3://``, ``gs://``, ``abfs://``, ...), the dataset writes a
  local temporary file, which is then uploaded in one ``put_file``. An object store publishes
  an object only when its upload completes, so a reader never sees part of one. (Writing
  through ``fs.open(...)`` directly, as kedro-datasets do, would commit whatever was written
  before an error when the file is closed.)
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from kedro.io import DatasetError
from kedro.io.core import get_filepath_str
from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset
from kedro_datasets.pandas import ParquetDataset as _ParquetDataset


class AtomicSave:
    """Mixin for a kedro-datasets file dataset (one with ``_filepath`` and ``_protocol``)."""

    _filepath: PurePosixPath
    _protocol: str

    _fs: Any

    def save(self, data: Any) -> None:
        if getattr(self, "_protocol", "file") != "file":
            self._save_then_upload(data)
            return
        final = self._filepath
        Path(str(final)).parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._filepath = temporary
        try:
            super().save(data)  # type: ignore[misc]
            os.replace(str(temporary), str(final))
        except DatasetError as error:
            self._filepath = final
            raise self._failed(error) from error.__cause__
        finally:
            self._filepath = final
            Path(str(temporary)).unlink(missing_ok=True)
        invalidate = getattr(self, "_invalidate_cache", None)
        if invalidate is not None:
            invalidate()

    def _save_then_upload(self, data: Any) -> None:
        """Write through the dataset's own code to a local file, then upload it whole."""
        remote, protocol, final = self._fs, self._protocol, self._filepath
        with tempfile.TemporaryDirectory(prefix="lors-upload-") as folder:
            local = PurePosixPath(Path(folder).as_posix()) / final.name
            self._fs, self._protocol, self._filepath = fsspec.filesystem("file"), "file", local
            try:
                super().save(data)  # type: ignore[misc]
            except DatasetError as error:
                self._fs, self._protocol, self._filepath = remote, protocol, final
                raise self._failed(error) from error.__cause__
            finally:
                self._fs, self._protocol, self._filepath = remote, protocol, final
            remote.put_file(str(local), get_filepath_str(final, protocol))
        invalidate = getattr(self, "_invalidate_cache", None)
        if invalidate is not None:
            invalidate()

    def _failed(self, error: DatasetError) -> DatasetError:
        """The error of a save into the temporary file, naming the target instead."""
        cause = error.__cause__ or error
        return DatasetError(f"Failed while saving data to dataset {self}.\n{cause}")


class JSONDataset(AtomicSave, _JSONDataset):
    """``json.JSONDataset`` with atomic local writes."""


class CSVDataset(AtomicSave, _CSVDataset):
    """``pandas.CSVDataset`` with atomic local writes."""


class ParquetDataset(AtomicSave, _ParquetDataset):
    """``pandas.ParquetDataset`` with atomic local writes."""
