"""The ``evaluation`` pipeline: one node per evaluated set, then the comparison."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.core.coresets import CORESET_METHODS
from lors_distill.core.distill import FROZEN_METHODS
from lors_distill.core.reports import frozen_coreset_rows
from lors_distill.pipelines import BACKBONE, GPU
from lors_distill.pipelines.evaluation.nodes import (
    archive_budget,
    diagnose_modality_gap,
    diagnose_modality_gap_on_backbone,
    evaluate_external_set,
    evaluate_full_data,
    evaluate_full_data_on_backbone,
    evaluate_set,
    evaluate_set_on_backbone,
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
        "lors_blend": ("lors_blend.distilled_set", {}),
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


# the sets whose modality gap is measured (the random coreset: a random real subset of their
# size), by the dataset that holds each; the frozen-backbone protocol's are in pipelines.frozen
MODALITY_SETS = {
    "lors": "distilled_set",
    "lors_blend": "lors_blend.distilled_set",
    "tesla_vl": "tesla_vl.distilled_set",
    "mtt_vl": "mtt_vl.distilled_set",
    "random": "random_set",
}


def frozen_sets() -> dict[str, str]:
    """The frozen-backbone protocol's evaluated sets: row -> its dataset (the ``frozen``
    pipeline makes them)."""
    return {
        **{row: f"{row}.distilled_set" for row in FROZEN_METHODS},
        **{row: f"{row}_set" for row in frozen_coreset_rows()},
    }


def frozen_rows() -> tuple[str, ...]:
    """The frozen-backbone protocol's reported rows."""
    return (*frozen_sets(), "full_data_frozen")


def _bound(func, **options):
    return update_wrapper(partial(func, **options), func)


def frozen_evaluation_nodes(num_experts: int) -> list[Node]:
    """Every frozen-backbone row evaluated on the same backbone, the protocol's full-data
    bound (its experts) and its modality diagnostic."""
    trajectories = [f"frozen.expert_{i}.trajectory" for i in range(num_experts)]
    nodes = [
        Node(
            func=_bound(evaluate_set_on_backbone, method=row),
            inputs=[dataset, BACKBONE, *TEST],
            outputs=f"{row}_evaluation",
            name=f"evaluate_{row}_node",
            tags=GPU,
        )
        for row, dataset in frozen_sets().items()
    ]
    nodes.append(
        Node(
            func=evaluate_full_data_on_backbone,
            inputs=[
                "test_images",
                "test_text_features",
                "params:evaluation",
                BACKBONE,
                *trajectories,
            ],
            outputs="full_data_frozen_evaluation",
            name="evaluate_full_data_frozen_node",
            tags=GPU,
        )
    )
    shown = {row: f"{row}.distilled_set" for row in FROZEN_METHODS}
    shown["random_frozen"] = "random_frozen_set"
    nodes.append(
        Node(
            func=_bound(diagnose_modality_gap_on_backbone, names=tuple(shown)),
            inputs=[
                "train_images",
                "train_text_features",
                "params:evaluation",
                BACKBONE,
                trajectories[0],
                *shown.values(),
            ],
            outputs=["frozen.modality_gap", "frozen.modality_gap_plot"],
            name="diagnose_frozen_modality_gap_node",
            tags=GPU,
        )
    )
    return nodes


def create_pipeline(num_experts: int = 1, frozen: bool = False, **kwargs) -> Pipeline:
    """One node per evaluated set, the modality diagnostic, and the comparison; with
    ``frozen`` also the frozen-backbone protocol's rows (:func:`frozen_evaluation_nodes`),
    reported in the same comparison."""
    trajectories = [f"expert_{i}.trajectory" for i in range(num_experts)]
    sets = evaluated_sets()
    reported = [f"{m}_evaluation" for m in [*sets, "external", "full_data"]]
    reported.append("modality_gap")
    if frozen:
        reported += [f"{m}_evaluation" for m in frozen_rows()] + ["frozen.modality_gap"]
    nodes = [
        Node(
            func=make_random_teacher_set,
            inputs=["random_set", "params:evaluation", *trajectories],
            outputs="random_teacher_set",
            name="make_random_teacher_set_node",
        ),
        *(_evaluate_node(method, dataset, options) for method, (dataset, options) in sets.items()),
        *(frozen_evaluation_nodes(num_experts) if frozen else []),
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
            func=update_wrapper(
                partial(diagnose_modality_gap, names=tuple(MODALITY_SETS)), diagnose_modality_gap
            ),
            inputs=[
                "train_images",
                "train_text_features",
                "params:evaluation",
                trajectories[0],
                *MODALITY_SETS.values(),
            ],
            outputs=["modality_gap", "modality_gap_plot"],
            name="diagnose_modality_gap_node",
            tags=GPU,
        ),
        Node(
            func=summarise_evaluation,
            inputs=reported,
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
