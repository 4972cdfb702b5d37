"""Kedro dataset for :class:`~lors_distill.core.bundle.TensorBundle` files (safetensors)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
import numpy as np
import torch
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview, TablePreview

from lors_distill.core.bundle import (
    BundleIntegrityError,
    TensorBundle,
    load_bundle,
    read_bundle_metadata,
    read_content_hash,
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

    Writes are atomic (temporary file, then rename), so an interrupted run leaves either the old
    file or the new one. With ``artifact_path`` the file is also logged to the active MLflow run.
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
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = PurePosixPath(filepath)
        self._artifact_path = artifact_path
        self._image_key = image_key
        self._preview_images = preview_images
        self.metadata = metadata

    def load(self) -> TensorBundle:
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"{path} does not exist: run the pipeline that produces it first")
        return load_bundle(path)

    def save(self, data: TensorBundle) -> None:
        if not isinstance(data, TensorBundle):
            raise DatasetError(f"{self._filepath}: expected a TensorBundle, got {type(data)}")
        save_bundle(data, Path(self._filepath))
        log_artifact(self._filepath, self._artifact_path)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def read_metadata(self) -> dict[str, Any]:
        """The bundle's metadata, without reading its tensors."""
        return read_bundle_metadata(Path(self._filepath))[0]

    def stored_content_hash(self) -> str | None:
        """The content hash in the file's header, without reading its tensors."""
        return read_content_hash(Path(self._filepath))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "image_key": self._image_key}

    def preview(self) -> ImagePreview | TablePreview:
        """An image grid of the first images, or a table of tensor names, shapes and metadata."""
        path = Path(self._filepath)
        metadata, layout = read_bundle_metadata(path)
        key = self._image_key
        if key and key in layout and len(layout[key][1]) == 4:
            images = load_bundle(path, names=[key]).tensors[key][: self._preview_images]
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
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"evaluation.external_set: {path} does not exist")
        try:
            return load_bundle(path)
        except BundleIntegrityError as error:
            raise DatasetError(f"evaluation.external_set: {error}") from error

    def save(self, data: TensorBundle) -> None:
        raise DatasetError("evaluation.external_set is read, never written")

    def _exists(self) -> bool:
        return not self._configured or Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath) if self._configured else None}


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TrajectoryDataset(TensorBundleDataset):
    """An expert trajectory (``trajectory`` ``(epochs + 1, P)``); previews as a table per epoch:
    training loss, distance from the initialisation and length of the epoch's step."""

    def preview(self) -> TablePreview:  # type: ignore[override]
        bundle = load_bundle(Path(self._filepath))
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

    def save(self, data: TensorBundle) -> None:
        super().save(data)
        if self._mlflow_model and mlflow.active_run() is not None:
            try:
                log_scorer_model(data, self._mlflow_model)
            except Exception as error:  # export support varies by architecture
                logger.warning(
                    "could not log %s as an MLflow pytorch model (%s); logging the file instead",
                    self._filepath,
                    error,
                )
                log_artifact(self._filepath, self._mlflow_model)


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
