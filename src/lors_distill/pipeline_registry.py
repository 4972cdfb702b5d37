"""Project pipelines."""

from kedro.pipeline import Pipeline

from lors_distill import structure
from lors_distill.pipelines import (
    baselines,
    distillation,
    evaluation,
    experts,
    features,
    ingestion,
)


def register_pipelines(
    num_experts: int | None = None, feature_shards: int | None = None
) -> dict[str, Pipeline]:
    """Register the project's pipelines; ``__default__`` runs them all in order.

    Args:
        num_experts: the number of expert nodes; None: ``experts.num_experts`` of ``conf/base``
            + ``conf/local`` (a session installs the pipelines for its own count:
            :class:`~lors_distill.hooks.PipelineStructureHook`).
        feature_shards: the number of caption-encoding nodes (``features.shards``); None: as
            configured there.
    """
    if num_experts is None or feature_shards is None:
        configured = structure.configured_structure()
        num_experts = num_experts or configured.num_experts
        feature_shards = feature_shards or configured.feature_shards
    pipelines = {
        "ingestion": ingestion.create_pipeline(),
        "features": features.create_pipeline(shards=feature_shards),
        "experts": experts.create_pipeline(num_experts=num_experts),
        "distillation": distillation.create_pipeline(num_experts=num_experts),
        "baselines": baselines.create_pipeline(num_experts=num_experts),
        "evaluation": evaluation.create_pipeline(num_experts=num_experts),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
