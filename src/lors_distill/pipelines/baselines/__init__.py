"""``baselines``: coresets of real pairs and the MTT-VL / TESLA-VL distillation (identity S)."""

from lors_distill.pipelines.baselines.pipeline import create_pipeline

__all__ = ["create_pipeline"]
