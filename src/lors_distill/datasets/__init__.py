"""Custom Kedro datasets (safetensors bundles with kedro-viz previews)."""

from lors_distill.datasets.tensor_bundle_dataset import TensorBundleDataset, TrajectoryDataset

__all__ = ["TensorBundleDataset", "TrajectoryDataset"]
