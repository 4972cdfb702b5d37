"""Custom Kedro datasets (safetensors bundles with kedro-viz previews; atomic local writes)."""

from lors_distill.datasets.atomic import CSVDataset, JSONDataset, ParquetDataset
from lors_distill.datasets.tensor_bundle_dataset import (
    ExternalSetDataset,
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
    "CSVDataset",
    "ExternalSetDataset",
    "JSONDataset",
    "ParquetDataset",
    "ScorerModelDataset",
    "TensorBundleDataset",
    "TrackedCSVDataset",
    "TrackedJSONDataset",
    "TrackedMatplotlibDataset",
    "TrackedTextDataset",
    "TrajectoryDataset",
]
