"""Learned similarity between synthetic images and synthetic texts (the LoRS targets).

``S[i, j]`` is the target for synthetic image ``i`` against synthetic text ``j``. A mini-batch
uses the sub-block ``S[B, B]``. ``lowrank`` keeps ``N + 2 N r`` parameters and never builds the
``N x N`` matrix except in :meth:`Similarity.matrix` (for reporting).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Similarity(nn.Module):
    """Base class: ``block(index)`` -> ``(b, b)`` targets for the sampled pairs."""

    size: int

    def block(self, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def matrix(self) -> torch.Tensor:
        """The full ``(N, N)`` matrix (reporting only: O(N^2) memory)."""
        return self.block(torch.arange(self.size, device=self._device()))

    def _device(self) -> torch.device:
        first = next(iter(self.parameters()), None)
        return first.device if first is not None else torch.device("cpu")


class IdentitySimilarity(Similarity):
    """Fixed ``S = I``: one-hot targets (MTT-VL / TESLA-VL)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def block(self, index: torch.Tensor) -> torch.Tensor:
        return torch.eye(index.numel(), device=index.device)


class FullSimilarity(Similarity):
    """A free ``N x N`` parameter initialised to ``I``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(torch.eye(size))

    def block(self, index: torch.Tensor) -> torch.Tensor:
        return self.weight[index][:, index]


class LowRankSimilarity(Similarity):
    """``S = diag(a) + (alpha / r) L R^T`` with ``a = 1``, ``L ~ N(0, 1)``, ``R = 0`` at start.

    So ``S = I`` initially while ``L`` carries random directions for ``R`` to use (LoRA-style).
    """

    def __init__(self, size: int, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.size, self.rank, self.alpha = size, rank, alpha
        self.diagonal = nn.Parameter(torch.ones(size))
        self.left = nn.Parameter(torch.randn(size, rank, generator=generator))
        self.right = nn.Parameter(torch.zeros(size, rank))

    def block(self, index: torch.Tensor) -> torch.Tensor:
        # diag(a)[B, B] == diag(a[B]) because a batch never repeats an index
        low_rank = self.left[index] @ self.right[index].T
        return torch.diag(self.diagonal[index]) + (self.alpha / self.rank) * low_rank


# the similarity types (``distillation.sim_type``): builders of (size, rank, alpha, generator)
SIMILARITIES: dict[str, Callable[[int, int, float, torch.Generator], Similarity]] = {
    "lowrank": LowRankSimilarity,  # LoRS
    "full": lambda size, rank, alpha, generator: FullSimilarity(size),
    "identity": lambda size, rank, alpha, generator: IdentitySimilarity(size),
}


def build_similarity(
    kind: str, size: int, rank: int, alpha: float, generator: torch.Generator
) -> Similarity:
    """One of :data:`SIMILARITIES`: ``lowrank`` (LoRS), ``full`` or ``identity``."""
    if kind not in SIMILARITIES:
        raise ValueError(f"unknown similarity {kind!r}: use {', '.join(SIMILARITIES)}")
    return SIMILARITIES[kind](size, rank, alpha, generator)


def similarity_stats(similarity: Similarity) -> dict[str, float]:
    """Mean of the diagonal and of the off-diagonal entries, in O(N r) for ``lowrank``."""
    n = similarity.size
    with torch.no_grad():
        if isinstance(similarity, LowRankSimilarity):
            scale = similarity.alpha / similarity.rank
            diagonal = similarity.diagonal + scale * (similarity.left * similarity.right).sum(1)
            total = similarity.diagonal.sum() + scale * (
                similarity.left.sum(0) @ similarity.right.sum(0)
            )
        else:
            matrix = similarity.matrix()
            diagonal, total = matrix.diagonal(), matrix.sum()
        trace = diagonal.sum()
        off = (total - trace) / max(1, n * n - n)
    return {"s_diag_mean": float(diagonal.mean()), "s_offdiag_mean": float(off)}
