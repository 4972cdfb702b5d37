"""Atomic local writes for the kedro-datasets file datasets (JSON, CSV, parquet, text, plots).

A kill during a save must leave the old file or the new one, never half of one (the tensors
already get this from :func:`lors_distill.core.bundle.save_bundle`). :class:`AtomicSave` makes
the dataset write a temporary file next to the target and rename it over the target, which is
atomic on a local filesystem. Object stores (``s3://``, ...) publish an object whole anyway, so
other protocols save as they always did.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset
from kedro_datasets.pandas import ParquetDataset as _ParquetDataset


class AtomicSave:
    """Mixin for a kedro-datasets file dataset (one with ``_filepath`` and ``_protocol``)."""

    _filepath: PurePosixPath
    _protocol: str

    def save(self, data: Any) -> None:
        if getattr(self, "_protocol", "file") != "file":
            super().save(data)  # type: ignore[misc]
            return
        final = self._filepath
        Path(str(final)).parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._filepath = temporary
        try:
            super().save(data)  # type: ignore[misc]
            os.replace(str(temporary), str(final))
        finally:
            self._filepath = final
            Path(str(temporary)).unlink(missing_ok=True)
        invalidate = getattr(self, "_invalidate_cache", None)
        if invalidate is not None:
            invalidate()


class JSONDataset(AtomicSave, _JSONDataset):
    """``json.JSONDataset`` with atomic local writes."""


class CSVDataset(AtomicSave, _CSVDataset):
    """``pandas.CSVDataset`` with atomic local writes."""


class ParquetDataset(AtomicSave, _ParquetDataset):
    """``pandas.ParquetDataset`` with atomic local writes."""
