"""``ingestion``: dataset source -> split image tensors + caption table."""

from lors_distill.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
