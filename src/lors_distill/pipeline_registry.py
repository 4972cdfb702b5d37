"""Project pipelines."""

from kedro.pipeline import Pipeline

from lors_distill import structure
from lors_distill.pipelines import experts, features, ingestion


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; ``__default__`` runs them all in order."""
    pipelines = {
        "ingestion": ingestion.create_pipeline(),
        "features": features.create_pipeline(),
        "experts": experts.create_pipeline(num_experts=structure.num_experts()),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
