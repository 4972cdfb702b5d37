"""``distillation``: LoRS trajectory matching -> synthetic pairs + learned similarity."""

from lors_distill.pipelines.distillation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
