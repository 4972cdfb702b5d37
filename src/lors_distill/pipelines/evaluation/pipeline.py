"""The ``evaluation`` pipeline: one node per evaluated set, then the comparison."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.pipelines import GPU
from lors_distill.pipelines.evaluation.nodes import (
    archive_budget,
    evaluate_external_set,
    evaluate_full_data,
    evaluate_set,
    make_random_teacher_set,
    plot_recall_vs_budget,
    summarise_evaluation,
)

# test: what is reported; val: where the validation-chosen epoch is picked
TEST = ["test_images", "test_text_features", "val_images", "val_text_features", "params:evaluation"]
# the sections whose values make two budgets comparable (see nodes.setup_id)
SETUP = [f"params:{s}" for s in ("ingestion", "features", "model", "experts", "evaluation")]


def evaluated_sets() -> dict[str, tuple[str, dict]]:
    """method -> (its set's dataset, options); the coresets as registered."""
    return {
        "lors": ("distilled_set", {}),
        "tesla_vl": ("tesla_vl.distilled_set", {}),
        "mtt_vl": ("mtt_vl.distilled_set", {}),
        **{method: (f"{method}_set", {}) for method in CORESET_METHODS},
        "lors_hard": ("distilled_set", {"hard_targets": True}),
        "random_teacher": ("random_teacher_set", {}),
        "lors_cross_arch": ("distilled_set", {"cross_arch": True}),
    }


def _evaluate_node(method: str, dataset: str, options: dict) -> Node:
    # the LoRS node also keeps its first model (served, and logged to MLflow as lors_model)
    keep_model = method == "lors"
    func = update_wrapper(
        partial(evaluate_set, method=method, keep_model=keep_model, **options), evaluate_set
    )
    return Node(
        func=func,
        inputs=[dataset, *TEST],
        outputs=[f"{method}_evaluation", "lors_model"] if keep_model else f"{method}_evaluation",
        name=f"evaluate_{method}_node",
        tags=GPU,
    )


def create_pipeline(num_experts: int = 1, **kwargs) -> Pipeline:
    trajectories = [f"expert_{i}.trajectory" for i in range(num_experts)]
    sets = evaluated_sets()
    nodes = [
        Node(
            func=make_random_teacher_set,
            inputs=["random_set", "params:evaluation", *trajectories],
            outputs="random_teacher_set",
            name="make_random_teacher_set_node",
        ),
        *(_evaluate_node(method, dataset, options) for method, (dataset, options) in sets.items()),
        Node(
            func=evaluate_external_set,
            inputs=["external_set", *TEST],
            outputs="external_evaluation",
            name="evaluate_external_node",
            tags=GPU,
        ),
        Node(
            func=evaluate_full_data,
            inputs=["test_images", "test_text_features", "params:evaluation", *trajectories],
            outputs="full_data_evaluation",
            name="evaluate_full_data_node",
            tags=GPU,
        ),
        Node(
            func=summarise_evaluation,
            inputs=[f"{m}_evaluation" for m in [*sets, "external", "full_data"]],
            outputs=["metrics", "comparison_table_md", "comparison_table", "recall_bar_plot"],
            name="summarise_evaluation_node",
        ),
        Node(
            func=archive_budget,
            inputs=["metrics", "lors_evaluation", *SETUP],
            outputs="budget_metrics",
            name="archive_budget_node",
        ),
        Node(
            func=plot_recall_vs_budget,
            inputs=["budget_metrics", *SETUP],
            outputs="recall_vs_budget_plot",
            name="plot_recall_vs_budget_node",
        ),
    ]
    return Pipeline(nodes, tags="evaluation")
