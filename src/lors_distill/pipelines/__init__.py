"""Kedro pipelines: thin adapters between the catalog and ``lors_distill.core``."""

# The tag of nodes that use a GPU when there is one (experts, distillation, evaluation, caption
# encoding): lors_distill.runners.DaskRunner gives each such task one worker's GPU.
GPU = "gpu"

# The frozen backbone every row of the frozen-backbone protocol shares (pipelines.frozen)
BACKBONE = "frozen.backbone"
