"""The ``baselines`` pipeline: one node per coreset method, TESLA-VL and MTT-VL (the
distillation pipeline with ``S = I``, the first-order and the exact matching gradient), and
LoRS with representation blending (``lors_blend``): every row of the full fine-tuning protocol
but LoRS itself."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.core.distill import BASELINES, METHODS
from lors_distill.pipelines import distillation
from lors_distill.pipelines.baselines.nodes import select_coreset, select_coreset_on_backbone

OTHER_METHODS = tuple(m for m in METHODS if m != "lors")  # lors_blend, tesla_vl, mtt_vl


def coreset_nodes(trajectories: list[str], backbone: str | None = None) -> list[Node]:
    """One node per coreset method (as registered), in the space of ``trajectories``; with a
    ``backbone`` dataset, the frozen-backbone protocol's (``<method>_frozen_set``)."""
    nodes = []
    for method in CORESET_METHODS:
        func = update_wrapper(partial(select_coreset, method=method), select_coreset)
        row, extra = method, []
        if backbone is not None:
            row, extra = f"{method}_frozen", [backbone]
            func = update_wrapper(
                partial(select_coreset_on_backbone, method=method, label=row),
                select_coreset_on_backbone,
            )
        nodes.append(
            Node(
                func=func,
                inputs=[
                    "train_images",
                    "train_text_features",
                    "params:distillation",
                    "params:baselines",
                    *extra,
                    *trajectories,
                ],
                outputs=f"{row}_set",
                name=f"select_{row}_coreset_node",
            )
        )
    return nodes


def create_pipeline(num_experts: int = 1, **kwargs) -> Pipeline:
    trajectories = [f"expert_{i}.trajectory" for i in range(num_experts)]
    coresets = coreset_nodes(trajectories)
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
