"""The trajectory-matching methods as presets of one gradient, one similarity and blending:
LoRS, LoRS with representation blending, TESLA-VL and MTT-VL; and the rows of the
frozen-backbone protocol (RepBlend's) that run them again on a fixed backbone."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lors_distill.core.config import DistillationParams

logger = logging.getLogger(__name__)


FIRST_ORDER = ("tesla", "tesla_one_graph")


def method_settings(method: str, config: DistillationParams) -> dict[str, Any]:
    """The settings that define a trajectory-matching method (PAPER.md sections 3, 5 and 7),
    as changes to the ``distillation`` section ``config``.

    * ``lors``: the configuration as it is (learned similarity, the configured gradient);
    * ``lors_blend``: LoRS with representation blending on (``distillation.blend.alpha``);
    * ``tesla_vl``: ``S = I`` fixed, TESLA's first-order gradient (in the configured variant,
      ``tesla`` or ``tesla_one_graph``: the same gradient; under ``full``, whose memory grows
      with ``syn_steps`` anyway, the faster ``tesla_one_graph``);
    * ``mtt_vl``: ``S = I`` fixed, the exact gradient through the unrolled inner loop.

    Blending stays as configured for every method but ``lors_blend``.
    """
    grad_mode = config.grad_mode
    if method == "lors":
        return {}
    if method == "lors_blend":
        return {"blend": {"enabled": True, "alpha": config.blend.alpha}}
    if method == "tesla_vl":
        return {
            "sim_type": "identity",
            "grad_mode": grad_mode if grad_mode in FIRST_ORDER else "tesla_one_graph",
        }
    if method == "mtt_vl":
        return {"sim_type": "identity", "grad_mode": "full"}
    raise ValueError(f"unknown trajectory-matching method {method!r}: use {', '.join(METHODS)}")


METHODS = ("lors", "lors_blend", "tesla_vl", "mtt_vl")
# the methods with their own outer-loop settings (baselines.<method>)
BASELINES = ("tesla_vl", "mtt_vl")
# the frozen-backbone protocol's trajectory-matching rows -> the method each runs: RepBlend is
# LoRS with blending on a frozen backbone; LoRS and TESLA-VL run again there, like for like
FROZEN_METHODS = {"repblend": "lors_blend", "lors_frozen": "lors", "tesla_vl_frozen": "tesla_vl"}
