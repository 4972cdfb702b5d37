"""``features``: caption table -> frozen text embeddings per split."""

from lors_distill.pipelines.features.pipeline import create_pipeline

__all__ = ["create_pipeline"]
