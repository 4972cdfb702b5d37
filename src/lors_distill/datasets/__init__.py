"""Custom Kedro datasets (safetensors bundles with kedro-viz previews)."""

from lors_distill.datasets.tensor_bundle_dataset import (
    ScorerModelDataset,
    TensorBundleDataset,
    TrajectoryDataset,
)
from lors_distill.datasets.tracked import (
    TrackedCSVDataset,
    TrackedJSONDataset,
    TrackedMatplotlibDataset,
    TrackedTextDataset,
)

__all__ = [
    "ScorerModelDataset",
    "TensorBundleDataset",
    "TrackedCSVDataset",
    "TrackedJSONDataset",
    "TrackedMatplotlibDataset",
    "TrackedTextDataset",
    "TrajectoryDataset",
]
