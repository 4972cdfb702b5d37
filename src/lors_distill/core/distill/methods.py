"""The trajectory-matching methods as presets of one gradient and one similarity: LoRS,
TESLA-VL and MTT-VL."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


FIRST_ORDER = ("tesla", "tesla_one_graph")


def method_settings(method: str, grad_mode: str) -> dict[str, str]:
    """The settings that define a trajectory-matching method (PAPER.md sections 3 and 5).

    * ``lors``: the configuration as it is (learned similarity, the configured gradient);
    * ``tesla_vl``: ``S = I`` fixed, TESLA's first-order gradient (in the configured variant,
      ``tesla`` or ``tesla_one_graph``: the same gradient; under ``full``, whose memory grows
      with ``syn_steps`` anyway, the faster ``tesla_one_graph``);
    * ``mtt_vl``: ``S = I`` fixed, the exact gradient through the unrolled inner loop.

    Args:
        grad_mode: the configured ``distillation.grad_mode``.
    """
    if method == "lors":
        return {}
    if method == "tesla_vl":
        return {
            "sim_type": "identity",
            "grad_mode": grad_mode if grad_mode in FIRST_ORDER else "tesla_one_graph",
        }
    if method == "mtt_vl":
        return {"sim_type": "identity", "grad_mode": "full"}
    raise ValueError(f"unknown trajectory-matching method {method!r}: use lors, tesla_vl or mtt_vl")


METHODS = ("lors", "tesla_vl", "mtt_vl")
