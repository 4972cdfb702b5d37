"""``experts``: train K experts on the real data and record their parameter trajectories."""

from lors_distill.pipelines.experts.pipeline import create_pipeline

__all__ = ["create_pipeline"]
