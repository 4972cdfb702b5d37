"""Kedro dataset for :class:`~lors_distill.core.bundle.TensorBundle` files (safetensors)."""

from __future__ import annotations

import base64
import copy
import logging
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import mlflow
import numpy as np
import torch
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str, get_protocol_and_path
from kedro_datasets._typing import ImagePreview, TablePreview

from lors_distill.core.bundle import (
    BundleIntegrityError,
    TensorBundle,
    bundle_bytes,
    bundle_from_bytes,
    load_bundle,
    read_bundle_header,
    save_bundle,
)
from lors_distill.core.data import Normalizer
from lors_distill.core.images import image_grid, png_bytes
from lors_distill.core.models import ModelRecipe
from lors_distill.core.scorer import example_inputs, scorer_from_bundle
from lors_distill.datasets.tracked import log_artifact

logger = logging.getLogger(__name__)


class TensorBundleDataset(AbstractDataset[TensorBundle, TensorBundle]):
    """Named tensors + JSON metadata in one ``.safetensors`` file. Loading never unpickles.

    ``filepath`` is a local path or any fsspec URL (``s3://bucket/key``, ``gs://``,
    ``abfs://``, ``file://``), reached with ``credentials`` and ``fs_args`` as kedro-datasets
    do. Writes are atomic, so an interrupted run leaves either the old file or the new one: a
    local file is written next to the target and renamed over it; on other storage the bundle
    is serialised in memory and uploaded in one request (an object store publishes an object
    only when its upload completes). With ``artifact_path`` the file is also logged to the
    active MLflow run.
    For kedro-viz, ``preview()`` shows an image grid when the bundle holds a ``(N, 3, H, W)``
    image tensor named by ``image_key`` (float ones are de-normalised with the metadata's
    ``image_mean``/``image_std``) and a table of tensors otherwise.

    Example ``catalog.yml`` entry::

        train_images:
          type: lors_distill.datasets.TensorBundleDataset
          filepath: data/02_intermediate/train_images.safetensors
          image_key: images
    """

    def __init__(
        self,
        *,
        filepath: str,
        image_key: str | None = None,
        preview_images: int = 64,
        artifact_path: str | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._fs = fsspec.filesystem(
            protocol, **copy.deepcopy(credentials or {}), **copy.deepcopy(fs_args or {})
        )
        self._filepath = PurePosixPath(path)
        self._url = filepath  # as configured: what messages name
        self._artifact_path = artifact_path
        self._image_key = image_key
        self._preview_images = preview_images
        self.metadata = metadata

    # ------------------------------------------------------------- storage, local or fsspec

    @property
    def _local(self) -> bool:
        return self._protocol == "file"

    @property
    def _key(self) -> str:
        """The path as the filesystem takes it (``bucket/key`` on an object store)."""
        return get_filepath_str(self._filepath, self._protocol)

    def _is_file(self) -> bool:
        if self._local:
            return Path(self._filepath).is_file()
        return bool(self._fs.isfile(self._key))

    def _read(self, names: list[str] | None = None) -> TensorBundle:
        if self._local:
            return load_bundle(Path(self._filepath), names)
        return bundle_from_bytes(self._fs.cat_file(self._key), self._url, names)

    def _header(self) -> tuple[dict[str, Any], str | None, dict[str, tuple[str, list]]]:
        """``(metadata, content hash, layout)`` from the file's header alone (one read of its
        first bytes, locally or from an object store)."""
        try:
            with self._fs.open(self._key, "rb") as handle:
                return read_bundle_header(handle.read(8), handle)
        except (OSError, ValueError, KeyError) as error:
            message = f"{self._url}: unreadable safetensors file ({error})"
            raise BundleIntegrityError(message) from error

    # ------------------------------------------------------------------------ the dataset API

    def load(self) -> TensorBundle:
        if not self._is_file():
            raise DatasetError(
                f"{self._url} does not exist: run the pipeline that produces it first"
            )
        return self._read()

    def save(self, data: TensorBundle) -> None:
        if not isinstance(data, TensorBundle):
            raise DatasetError(f"{self._url}: expected a TensorBundle, got {type(data)}")
        if self._local:
            save_bundle(data, Path(self._filepath))
        else:  # serialised whole first: one upload, never part of an object
            self._fs.pipe_file(self._key, bundle_bytes(data))
            self._fs.invalidate_cache(self._key)
        self._track(data)

    def log_saved(self) -> None:
        """Log the saved file to the active MLflow run, if this dataset is tracked (the
        ``DaskRunner`` calls it on the driver, for a file a worker saved)."""
        self._track(None)

    def _track(self, data: TensorBundle | None) -> None:
        log_artifact(self._filepath, self._artifact_path, self._fs, self._protocol)

    def _exists(self) -> bool:
        return self._is_file()

    def read_metadata(self) -> dict[str, Any]:
        """The bundle's metadata, without reading its tensors."""
        return self._header()[0]

    def stored_content_hash(self) -> str | None:
        """The content hash in the file's header, without reading its tensors."""
        return self._header()[1]

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._url, "protocol": self._protocol, "image_key": self._image_key}

    def preview(self) -> ImagePreview | TablePreview:
        """An image grid of the first images, or a table of tensor names, shapes and metadata."""
        metadata, _, layout = self._header()
        key = self._image_key
        if key and key in layout and len(layout[key][1]) == 4:
            images = self._read(names=[key]).tensors[key][: self._preview_images]
            if images.dtype != torch.uint8 and "image_mean" in metadata:
                normalizer = Normalizer(tuple(metadata["image_mean"]), tuple(metadata["image_std"]))
                images = normalizer.to_uint8(images.float())
            if images.dtype == torch.uint8:
                encoded = base64.b64encode(png_bytes(image_grid(images)))
                return ImagePreview(encoded.decode("utf-8"))
        rows = [[name, dtype, "x".join(map(str, shape))] for name, (dtype, shape) in layout.items()]
        rows += [[f"meta:{k}", "", _short(v)] for k, v in metadata.items()]
        return TablePreview(
            {
                "index": list(range(len(rows))),
                "columns": ["name", "dtype", "shape/value"],
                "data": rows,
            }
        )


class ExternalSetDataset(TensorBundleDataset):
    """The distilled set of another run that ``evaluation.external_set`` names, read like every
    other input; ``None`` when that parameter is not set.

    ``catalog.yml`` declares it without a file; :class:`~lors_distill.hooks.RunChecksHook` puts
    the configured path in its place when the catalog is created (a catalog entry cannot read a
    parameter). Read errors name the parameter and the file.
    """

    def __init__(self, *, filepath: str | None = None, **kwargs: Any) -> None:
        super().__init__(filepath=filepath or "", **kwargs)
        self._configured = bool(filepath)

    def load(self) -> TensorBundle | None:
        if not self._configured:
            return None
        if not self._is_file():
            raise DatasetError(f"evaluation.external_set: {self._url} does not exist")
        try:
            return self._read()
        except BundleIntegrityError as error:
            raise DatasetError(f"evaluation.external_set: {error}") from error

    def save(self, data: TensorBundle) -> None:
        raise DatasetError("evaluation.external_set is read, never written")

    def _exists(self) -> bool:
        return not self._configured or self._is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._url if self._configured else None}


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TrajectoryDataset(TensorBundleDataset):
    """An expert trajectory (``trajectory`` ``(epochs + 1, P)``); previews as a table per epoch:
    training loss, distance from the initialisation and length of the epoch's step."""

    def preview(self) -> TablePreview:  # type: ignore[override]
        bundle = self._read()
        trajectory = bundle["trajectory"]
        losses = bundle.tensors.get("train_loss")
        rows = []
        for epoch in range(trajectory.shape[0]):
            from_init = float((trajectory[epoch] - trajectory[0]).norm())
            step = float((trajectory[epoch] - trajectory[epoch - 1]).norm()) if epoch else 0.0
            loss = float(losses[epoch - 1]) if epoch and losses is not None else None
            rows.append([epoch, loss, round(from_init, 4), round(step, 4)])
        return TablePreview(
            {
                "index": list(range(len(rows))),
                "columns": ["epoch", "train_loss", "distance_from_init", "step_norm"],
                "data": rows,
            }
        )


class ScorerModelDataset(TensorBundleDataset):
    """A trained dual encoder (:func:`lors_distill.core.scorer.scorer_bundle`), saved locally as
    safetensors and, when an MLflow run is active, also logged to it as an MLflow ``pytorch``
    model (named by the ``mlflow_model`` argument) in the ``pt2`` (``torch.export``) format: it
    loads back with ``mlflow.pytorch.load_model(...)`` and maps ``(uint8 images, text
    vectors)`` to their cosine similarities, without pickle and without this package.

    A model that ``torch.export`` cannot capture is still saved locally (and logged as a plain
    artifact); the reason is logged as a warning instead of failing the run.
    """

    def __init__(self, *, mlflow_model: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mlflow_model = mlflow_model

    def log_saved(self) -> None:
        if self._mlflow_model and mlflow.active_run() is not None:
            self._track(self.load())  # the model is rebuilt from the file

    def _track(self, data: TensorBundle | None) -> None:
        if self._mlflow_model and mlflow.active_run() is not None:
            try:
                log_scorer_model(data, self._mlflow_model)
            except Exception as error:  # export support varies by architecture
                logger.warning(
                    "could not log %s as an MLflow pytorch model (%s); logging the file instead",
                    self._url,
                    error,
                )
                log_artifact(self._filepath, self._mlflow_model, self._fs, self._protocol)


def log_scorer_model(bundle: TensorBundle, name: str) -> Any:
    """Log the scorer of ``bundle`` to the active MLflow run; returns MLflow's ``ModelInfo``."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    scorer = scorer_from_bundle(bundle)
    recipe = ModelRecipe.from_json(bundle.metadata["model"])
    images, text = example_inputs(recipe)
    size = recipe.encoder.image_size
    signature = ModelSignature(
        inputs=Schema(
            [
                TensorSpec(np.dtype(np.uint8), (-1, 3, size, size), "images"),
                TensorSpec(np.dtype(np.float32), (-1, recipe.text_dim), "text"),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1), "similarity")]),
    )
    return mlflow.pytorch.log_model(
        scorer,
        name=name,
        input_example=(images, text),
        signature=signature,
        serialization_format="pt2",
        # pinned explicitly: inferring them would load the model again in a subprocess
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        metadata={k: v for k, v in bundle.metadata.items() if k != "model"},
    )
