"""The ``baselines`` pipeline: coresets + TESLA-VL and MTT-VL (the distillation pipeline with
``S = I``, the first-order and the exact matching gradient)."""

from kedro.pipeline import Node, Pipeline

from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.core.distill import METHODS
from lors_distill.pipelines import distillation
from lors_distill.pipelines.baselines.nodes import select_coresets

TRAJECTORY_BASELINES = tuple(m for m in METHODS if m != "lors")  # tesla_vl, mtt_vl


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
        outputs=[f"{method}_set" for method in CORESET_METHODS],  # as registered
        name="select_coresets_node",
    )
    matching = [
        Pipeline(
            distillation.create_pipeline(num_experts, method=method),
            namespace=method,
            inputs={"train_images", "train_text_features", "captions", *trajectories},
            parameters={"params:distillation", "params:baselines"},
        )
        for method in TRAJECTORY_BASELINES
    ]
    return Pipeline([coresets, *matching], tags="baselines")
