"""The ``experts`` pipeline: one namespaced node per expert, then a summary."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.pipelines import GPU
from lors_distill.pipelines.experts.nodes import (
    summarise_experts,
    train_one_expert,
    train_one_frozen_expert,
)

EXPERT_INPUTS = [
    "train_images",
    "train_text_features",
    "val_images",
    "val_text_features",
    "params:model",
    "params:experts",
]


def expert_node(index: int, frozen: bool = False) -> Node:
    """Expert ``index``; ``frozen``: in the frozen-backbone protocol (reads the ``backbone``
    and ``params:frozen``)."""
    train = train_one_frozen_expert if frozen else train_one_expert
    func = update_wrapper(partial(train, index=index), train)
    return Node(
        func=func,
        inputs=EXPERT_INPUTS + (["backbone", "params:frozen"] if frozen else []),
        outputs=[f"expert_{index}.trajectory", f"expert_{index}.report"],
        name=f"expert_{index}.train_expert",
        namespace=f"expert_{index}",
        tags=GPU,
    )


def create_pipeline(num_experts: int = 1, frozen: bool = False, **kwargs) -> Pipeline:
    """``num_experts`` independent expert nodes (parallel-safe) and one summary node
    (``frozen``: the frozen-backbone protocol's, to be used under a namespace)."""
    return Pipeline(
        [
            *(expert_node(i, frozen) for i in range(num_experts)),
            Node(
                func=summarise_experts,
                inputs=[f"expert_{i}.report" for i in range(num_experts)],
                outputs=["experts_summary", "experts_loss_history", "experts_loss_plot"],
                name="summarise_experts_node",
            ),
        ],
        tags=None if frozen else "experts",
    )
