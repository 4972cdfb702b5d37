"""The ``distillation`` pipeline."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from lors_distill.core.distill import BASELINES
from lors_distill.pipelines import GPU
from lors_distill.pipelines.distillation.nodes import (
    distill,
    distill_baseline,
    distill_on_backbone,
    report_distillation,
)


def create_pipeline(
    num_experts: int = 1, method: str = "lors", frozen_as: str | None = None, **kwargs
) -> Pipeline:
    """Distil from the ``num_experts`` expert trajectories, then draw the report plots.

    ``method`` is a trajectory-matching method of :data:`lors_distill.core.distill.METHODS`:
    ``lors`` (the ``distillation`` section as configured) or a baseline that fixes part of it
    (``tesla_vl``, ``mtt_vl``: the baselines pipeline reuses this pipeline under their names)
    and takes its own outer-loop settings from ``baselines.<method>`` (the node reads the
    ``baselines`` section: a typed parameter object has no catalog entries for its keys), or
    ``lors_blend`` (LoRS with representation blending).

    ``frozen_as``: the row's name in the frozen-backbone protocol (e.g. ``repblend``); the node
    then also reads the frozen ``backbone``.
    """
    func = distill
    own_settings = []  # a baseline's own outer-loop settings, in baselines.<method>
    if frozen_as is not None:
        func = update_wrapper(
            partial(distill_on_backbone, method=method, label=frozen_as), distill_on_backbone
        )
        own_settings = ["params:baselines", "params:frozen", "backbone"]
    elif method in BASELINES:
        func = update_wrapper(partial(distill_baseline, method=method), distill_baseline)
        own_settings = ["params:baselines"]
    elif method != "lors":
        func = update_wrapper(partial(distill, method=method), distill)
    return Pipeline(
        [
            Node(
                func=func,
                inputs=[
                    "train_images",
                    "train_text_features",
                    "params:distillation",
                    *own_settings,
                    *(f"expert_{i}.trajectory" for i in range(num_experts)),
                ],
                outputs=["distilled_set", "distilled_set_metadata", "distillation_history"],
                name="distill_node",
                tags=GPU,
            ),
            Node(
                func=report_distillation,
                inputs=["distilled_set", "distillation_history", "captions", "train_text_features"],
                outputs=["distilled_pairs_plot", "similarity_plot", "distillation_curves_plot"],
                name="report_distillation_node",
            ),
        ],
        tags="distillation" if method == "lors" else None,
    )
