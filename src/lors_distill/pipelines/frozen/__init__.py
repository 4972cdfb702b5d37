"""``frozen``: the frozen-backbone protocol (RepBlend's): a backbone, experts that train two
heads on it, and the rows distilled, selected and evaluated on it."""

from lors_distill.pipelines.frozen.pipeline import create_pipeline

__all__ = ["create_pipeline"]
