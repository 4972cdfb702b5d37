"""The ``baselines`` pipeline: coresets + MTT-VL (the distillation pipeline, identity S)."""

from kedro.pipeline import Node, Pipeline

from lors_distill.pipelines import distillation
from lors_distill.pipelines.baselines.nodes import select_coresets

CORESETS = ("random", "herding", "k_center", "forgetting")


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
    mtt_vl = Pipeline(
        distillation.create_pipeline(num_experts, sim_type="identity"),
        namespace="mtt_vl",
        inputs={"train_images", "train_text_features", "captions", *trajectories},
        parameters={"params:distillation"},
    )
    return Pipeline([coresets, mtt_vl], tags="baselines")
