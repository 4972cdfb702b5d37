"""A distilled (or coreset) set as one tensor bundle: the format evaluation reads.

Tensors: ``images`` ``(N, 3, S, S)`` float32 (normalised pixel space), ``texts`` ``(N, d)``,
``lrs`` ``(2,)`` (image encoder, text head) and the similarity's own tensors
(``similarity.diagonal/left/right`` for ``lowrank``, ``similarity.weight`` for ``full``, none
for ``identity``). Metadata: ``method``, ``sim_type``, ``rank``, ``alpha``, ``image_mean``,
``image_std``, ``model`` (the recipe) and the configuration that produced it.
"""

from __future__ import annotations

from typing import Any

import torch

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.distill import SyntheticSet
from lors_distill.core.similarity import (
    FullSimilarity,
    IdentitySimilarity,
    LowRankSimilarity,
    Similarity,
)


def sim_type(similarity: Similarity) -> str:
    if isinstance(similarity, LowRankSimilarity):
        return "lowrank"
    if isinstance(similarity, FullSimilarity):
        return "full"
    return "identity"


def to_bundle(syn: SyntheticSet, metadata: dict[str, Any]) -> TensorBundle:
    """Pack a synthetic set (detached, CPU) with its description."""
    tensors = {
        "images": syn.images.detach().cpu().clone(),
        "texts": syn.texts.detach().cpu().clone(),
        "lrs": syn.lrs.detach().cpu().clone(),
    }
    for name, param in syn.similarity.named_parameters():
        tensors[f"similarity.{name}"] = param.detach().cpu().clone()
    similarity = syn.similarity
    meta = {
        "sim_type": sim_type(similarity),
        "rank": getattr(similarity, "rank", None),
        "alpha": getattr(similarity, "alpha", None),
        "num_pairs": syn.size,
        **metadata,
    }
    return TensorBundle(tensors, meta)


def similarity_from_bundle(bundle: TensorBundle) -> Similarity:
    """Rebuild the similarity module stored in a distilled-set bundle."""
    kind, size = bundle.metadata["sim_type"], int(bundle["images"].shape[0])
    if kind == "identity":
        return IdentitySimilarity(size)
    if kind == "full":
        module = FullSimilarity(size)
    elif kind == "lowrank":
        module = LowRankSimilarity(
            size, int(bundle.metadata["rank"]), float(bundle.metadata["alpha"]), torch.Generator()
        )
    else:
        raise ValueError(f"unknown sim_type {kind!r} in distilled set")
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(bundle[f"similarity.{name}"])
    return module


def from_bundle(bundle: TensorBundle) -> SyntheticSet:
    """A :class:`SyntheticSet` holding exactly the bundle's tensors."""
    syn = SyntheticSet(bundle["images"], bundle["texts"], 0.0, similarity_from_bundle(bundle))
    with torch.no_grad():
        syn.lrs.copy_(bundle["lrs"])
    return syn
