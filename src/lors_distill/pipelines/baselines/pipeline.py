"""The ``baselines`` pipeline: one node per coreset method, TESLA-VL and MTT-VL (the
distillation pipeline with ``S = I``, the first-order and the exact matching gradient), and
LoRS with representation blending (``lors_blend``): every row of the full fine-tuning protocol
but LoRS itself."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.core.distill import BASELINES, METHODS
from lors_distill.pipelines import distillation
from lors_distill.pipelines.baselines.nodes import select_coreset

OTHER_METHODS = tuple(m for m in METHODS if m != "lors")  # lors_blend, tesla_vl, mtt_vl


def create_pipeline(num_experts: int = 1, **kwargs) -> Pipeline:
    trajectories = [f"expert_{i}.trajectory" for i in range(num_experts)]
    coresets = [
        Node(
            func=update_wrapper(partial(select_coreset, method=method), select_coreset),
            inputs=[
                "train_images",
                "train_text_features",
                "params:distillation",
                "params:baselines",
                *trajectories,
            ],
            outputs=f"{method}_set",
            name=f"select_{method}_coreset_node",
        )
        for method in CORESET_METHODS  # as registered
    ]
    matching = [
        Pipeline(
            distillation.create_pipeline(num_experts, method=method),
            namespace=method,
            inputs={"train_images", "train_text_features", "captions", *trajectories},
            parameters={"params:distillation"}
            | ({"params:baselines"} if method in BASELINES else set()),
        )
        for method in OTHER_METHODS
    ]
    return Pipeline([*coresets, *matching], tags="baselines")
