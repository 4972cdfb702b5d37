"""Project pipelines."""

from kedro.pipeline import Pipeline

from lors_distill import structure
from lors_distill.pipelines import (
    baselines,
    distillation,
    evaluation,
    experts,
    features,
    frozen,
    ingestion,
)


def register_pipelines(
    num_experts: int | None = None,
    feature_shards: int | None = None,
    frozen_protocol: bool | None = None,
) -> dict[str, Pipeline]:
    """Register the project's pipelines; ``__default__`` runs them all in order (the
    ``frozen`` one only with ``frozen_protocol``).

    Args:
        num_experts: the number of expert nodes; None: ``experts.num_experts`` of ``conf/base``
            + ``conf/local`` (a session installs the pipelines for its own count:
            :class:`~lors_distill.hooks.PipelineStructureHook`).
        feature_shards: the number of caption-encoding nodes (``features.shards``); None: as
            configured there.
        frozen_protocol: whether ``__default__`` runs the frozen-backbone protocol and the
            comparison reports it (``frozen.enabled``); None: as configured there.
    """
    if num_experts is None or feature_shards is None or frozen_protocol is None:
        configured = structure.configured_structure()
        num_experts = num_experts or configured.num_experts
        feature_shards = feature_shards or configured.feature_shards
        frozen_protocol = configured.frozen if frozen_protocol is None else frozen_protocol
    pipelines = {
        "ingestion": ingestion.create_pipeline(),
        "features": features.create_pipeline(shards=feature_shards),
        "experts": experts.create_pipeline(num_experts=num_experts),
        "distillation": distillation.create_pipeline(num_experts=num_experts),
        "baselines": baselines.create_pipeline(num_experts=num_experts),
        "evaluation": evaluation.create_pipeline(num_experts, frozen=frozen_protocol),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    pipelines["frozen"] = frozen.create_pipeline(num_experts=num_experts)
    if frozen_protocol:
        pipelines["__default__"] += pipelines["frozen"]
    return pipelines
