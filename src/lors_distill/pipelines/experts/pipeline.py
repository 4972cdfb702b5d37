"""The ``experts`` pipeline: one namespaced node per expert, then a summary."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.pipelines import GPU
from lors_distill.pipelines.experts.nodes import summarise_experts, train_one_expert

EXPERT_INPUTS = [
    "train_images",
    "train_text_features",
    "val_images",
    "val_text_features",
    "params:model",
    "params:experts",
]


def expert_node(index: int) -> Node:
    func = update_wrapper(partial(train_one_expert, index=index), train_one_expert)
    return Node(
        func=func,
        inputs=EXPERT_INPUTS,
        outputs=[f"expert_{index}.trajectory", f"expert_{index}.report"],
        name=f"expert_{index}.train_expert",
        namespace=f"expert_{index}",
        tags=GPU,
    )


def create_pipeline(num_experts: int = 1, **kwargs) -> Pipeline:
    """``num_experts`` independent expert nodes (parallel-safe) and one summary node."""
    return Pipeline(
        [
            *(expert_node(i) for i in range(num_experts)),
            Node(
                func=summarise_experts,
                inputs=[f"expert_{i}.report" for i in range(num_experts)],
                outputs=["experts_summary", "experts_loss_history", "experts_loss_plot"],
                name="summarise_experts_node",
            ),
        ],
        tags="experts",
    )
