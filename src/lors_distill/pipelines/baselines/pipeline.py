"""The ``baselines`` pipeline: coresets + TESLA-VL and MTT-VL (the distillation pipeline with
``S = I``, the first-order and the exact matching gradient)."""

from kedro.pipeline import Node, Pipeline

from lors_distill.pipelines import distillation
from lors_distill.pipelines.baselines.nodes import select_coresets

CORESETS = ("random", "herding", "k_center", "forgetting")
TRAJECTORY_BASELINES = ("tesla_vl", "mtt_vl")  # see lors_distill.core.distill.METHODS


def create_pipeline(num_experts: int = 1, **kwargs) -> Pipeline:
    trajectories = [f"expert_{i}.trajectory" for i in range(num_experts)]
    coresets = Node(
        func=select_coresets,
        inputs=[
            "train_images",
            "train_text_features",
            "params:distillation",
            "params:baselines",
            *trajectories,
        ],
        outputs=[f"{method}_set" for method in CORESETS],
        name="select_coresets_node",
    )
    matching = [
        Pipeline(
            distillation.create_pipeline(num_experts, method=method),
            namespace=method,
            inputs={"train_images", "train_text_features", "captions", *trajectories},
            parameters={"params:distillation"},
        )
        for method in TRAJECTORY_BASELINES
    ]
    return Pipeline([coresets, *matching], tags="baselines")
