"""The ``frozen`` pipeline: the frozen-backbone protocol (RepBlend's, PAPER.md section 7).

A ``make_backbone_node`` writes the backbone; the experts pipeline runs again under the
namespace ``frozen`` (``frozen.expert_<i>.trajectory``: the two heads' trajectories); the
distillation pipeline runs once per row of
:data:`~lors_distill.core.distill.FROZEN_METHODS` under the row's name (``repblend``,
``lors_frozen``, ``tesla_vl_frozen``); every coreset method selects ``<method>_frozen_set`` in
the frozen experts' space. With ``frozen.enabled`` the evaluation pipeline evaluates every
row on the same backbone, measures the protocol's modality gap and reports both.
"""

from kedro.pipeline import Node, Pipeline

from lors_distill.core.distill import FROZEN_METHODS
from lors_distill.pipelines import BACKBONE, GPU, distillation, experts
from lors_distill.pipelines.baselines.pipeline import coreset_nodes
from lors_distill.pipelines.frozen.nodes import make_backbone

SPLITS = ["train_images", "train_text_features", "val_images", "val_text_features"]


def create_pipeline(num_experts: int = 1, **kwargs) -> Pipeline:
    trajectories = [f"frozen.expert_{i}.trajectory" for i in range(num_experts)]
    renamed = {f"expert_{i}.trajectory": t for i, t in enumerate(trajectories)}
    backbone = Node(
        func=make_backbone,
        inputs=[*SPLITS, "params:model", "params:experts", "params:frozen"],
        outputs=[BACKBONE, "frozen.backbone_report"],
        name="make_backbone_node",
        tags=GPU,
    )
    frozen_experts = Pipeline(
        experts.create_pipeline(num_experts, frozen=True),
        namespace="frozen",
        inputs=set(SPLITS),
        parameters={"params:model", "params:experts", "params:frozen"},
    )
    matching = [
        Pipeline(
            distillation.create_pipeline(num_experts, method=method, frozen_as=row),
            namespace=row,
            inputs={
                **{name: name for name in ("train_images", "train_text_features", "captions")},
                "backbone": BACKBONE,
                **renamed,
            },
            parameters={"params:distillation", "params:baselines", "params:frozen"},
        )
        for row, method in FROZEN_METHODS.items()
    ]
    coresets = coreset_nodes(trajectories, backbone=BACKBONE)
    return Pipeline([backbone, frozen_experts, *matching, *coresets], tags="frozen")
