"""Contrastive losses on a logit matrix ``Z`` (images x texts)."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Gt

from lors_distill.core.schema import Choice, choice, chosen


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """One-hot InfoNCE, mean of cross-entropy over rows (image->text) and columns (text->image).

    Args:
        logits: ``(B, B)``; pair ``i`` is image ``i`` with text ``i``.
    """
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


# ------------------------------------------------------------- multi-label (soft-target) losses


def wbce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Weighted BCE (LoRS default): BCE of ``sigmoid(Z)`` vs ``S`` averaged separately over
    entries with ``S > 0.5`` and ``S <= 0.5``, then ``(positive + negative) / 2``.

    A part with no entries counts as 0 (the reference's ``sum / (count + 1e-6)``), so a block
    with only positives weighs half as much as its plain mean. BCE is taken on the logits
    (stable for large ``|Z|``) where the reference clamps ``log(p + 1e-6)``.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # masks as weights, not boolean indexing: no host synchronisation (GPU inner loop)
    positive = (targets > 0.5).to(loss.dtype)
    masks = torch.stack([positive, 1.0 - positive])  # (2, B_img, B_txt)
    counts = masks.sum(dim=(1, 2))
    means = (masks * loss).sum(dim=(1, 2)) / counts.clamp(min=1.0)  # an empty part: 0
    return means.sum() / 2


def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain mean BCE of ``sigmoid(Z)`` vs ``S``."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def soft_infonce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-sum_j S_ij log softmax(Z)_ij``, mean over rows, averaged with the column direction."""
    rows = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    cols = -(targets * F.log_softmax(logits, dim=0)).sum(dim=0).mean()
    return 0.5 * (rows + cols)


CWCL_EPS = 1e-6  # the reference's: a learned row sum <= 0 stays finite


def cwcl(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft InfoNCE with each row (resp. column) divided by its target sum ``+ 1e-6``."""
    row_loss = -(
        (targets * F.log_softmax(logits, dim=1)).sum(dim=1) / (targets.sum(dim=1) + CWCL_EPS)
    ).mean()
    col_loss = -(
        (targets * F.log_softmax(logits, dim=0)).sum(dim=0) / (targets.sum(dim=0) + CWCL_EPS)
    ).mean()
    return 0.5 * (row_loss + col_loss)


def kl(
    logits: torch.Tensor, targets: torch.Tensor, sharpness: Annotated[float, Gt(0)] = 10.0
) -> torch.Tensor:
    """``KL(softmax(sharpness S) || softmax(Z))`` over rows and over columns, averaged.

    ``sharpness`` is the reference's 10 unless configuration sets it
    (``loss: {name: kl, sharpness: 5.0}``).

    Each direction is the mean over all ``B x B`` entries of the pointwise KL terms (PyTorch's
    ``KLDivLoss(reduction="mean")``, as in the reference), i.e. the per-row KL divided by ``B``.
    """
    row = F.kl_div(
        F.log_softmax(logits, dim=1),
        F.log_softmax(sharpness * targets, dim=1),
        reduction="sum",
        log_target=True,
    )
    col = F.kl_div(
        F.log_softmax(logits.T, dim=1),
        F.log_softmax(sharpness * targets.T, dim=1),
        reduction="sum",
        log_target=True,
    )
    # sum / (B x B), written out: PyTorch plans to turn reduction="mean" into "batchmean"
    return 0.5 * (row + col) / logits.numel()


def mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``sigmoid(Z)`` and ``S``."""
    return F.mse_loss(torch.sigmoid(logits), targets)


# the loss names (distillation.loss, evaluation.loss); a loss's keyword parameters with a default
# (kl's sharpness) are its options in configuration (core.schema.choice)
SOFT_LOSSES = {
    "wbce": wbce,
    "bce": bce,
    "infonce": soft_infonce,
    "cwcl": cwcl,
    "kl": kl,
    "mse": mse,
}


def soft_loss(spec: Choice):
    """The multi-label contrastive loss ``spec`` names (``(Z, S) -> scalar``): a name of
    :data:`SOFT_LOSSES`, or a mapping of the name and its options."""
    try:
        spec = choice(spec, SOFT_LOSSES)
    except ValueError as error:
        raise ValueError(f"loss {spec!r}: {error}") from None
    return chosen(spec, SOFT_LOSSES)
