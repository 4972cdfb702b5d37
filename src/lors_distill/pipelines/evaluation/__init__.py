"""``evaluation``: train fresh models on every set and compare their test retrieval."""

from lors_distill.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
