"""Nodes of the ``features`` pipeline."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import FeaturesParams
from lors_distill.core.text_encoders import (
    build_text_encoder,
    encode_unique,
    encode_unique_shard,
    merge_unique_shards,
)

logger = logging.getLogger(__name__)


def encode_captions(
    captions: pd.DataFrame, config: FeaturesParams
) -> tuple[TensorBundle, TensorBundle, TensorBundle]:
    """Encode every caption once with the frozen text encoder.

    Each distinct caption string is encoded once across all splits (the built-in captions
    repeat a lot), then scattered back to the caption table's rows.

    Args:
        captions: the caption table from ingestion.
        config: the ``features`` parameters.

    Returns:
        Train, val and test bundles aligned row by row with that split's caption rows:
        ``embeddings`` ``(M, d)`` float32, ``image_index`` and ``caption_index`` ``(M,)`` int64;
        metadata records the encoder spec and ``dim``.
    """
    encoder = build_text_encoder(config)
    texts = captions["caption"].tolist()
    unique = captions["caption"].nunique()
    logger.info("encoding %d captions (%d distinct) with %s", len(texts), unique, encoder.name)
    return _split_bundles(captions, encode_unique(encoder, texts), config, encoder.dim)


def encode_caption_shard(
    captions: pd.DataFrame, config: FeaturesParams, *, shard: int, shards: int
) -> TensorBundle:
    """Shard ``shard`` of ``features.shards``: the distinct captions of a contiguous run of the
    encoder's batches (:func:`~lors_distill.core.text_encoders.encode_unique_shard`).

    Returns:
        ``distinct`` ``(K,)`` int64 (indices into the table's distinct captions, in order of
        first appearance) and their ``embeddings`` ``(K, d)``; the metadata names the shard.
    """
    encoder = build_text_encoder(config)
    texts = captions["caption"].tolist()
    rows, embeddings = encode_unique_shard(encoder, texts, shard, shards)
    logger.info(
        "caption shard %d/%d: %d of %d distinct captions with %s",
        shard + 1,
        shards,
        rows.numel(),
        captions["caption"].nunique(),
        encoder.name,
    )
    return TensorBundle(
        tensors={"distinct": rows, "embeddings": embeddings},
        metadata={
            "shard": shard,
            "shards": shards,
            "encoder": config.text_encoder,
            "dim": int(encoder.dim),
        },
    )


def merge_caption_shards(
    captions: pd.DataFrame, config: FeaturesParams, *shards: TensorBundle
) -> tuple[TensorBundle, TensorBundle, TensorBundle]:
    """The bundles of :func:`encode_captions`, byte for byte, from its shards."""
    dims = {int(bundle.metadata["dim"]) for bundle in shards}
    if len(dims) != 1 or len(shards) != config.shards:
        raise ValueError(
            f"expected {config.shards} caption shards of one dimension (features.shards), got "
            f"{len(shards)} with dimensions {sorted(dims)}"
        )
    (dim,) = dims
    parts = [(bundle["distinct"], bundle["embeddings"]) for bundle in shards]
    embeddings = merge_unique_shards(captions["caption"].tolist(), parts, dim)
    return _split_bundles(captions, embeddings, config, dim)


def _split_bundles(
    captions: pd.DataFrame, embeddings: torch.Tensor, config: FeaturesParams, dim: int
) -> tuple[TensorBundle, TensorBundle, TensorBundle]:
    bundles = []
    for split in ("train", "val", "test"):
        mask = (captions["split"] == split).to_numpy()
        rows = captions[mask]
        bundles.append(
            TensorBundle(
                tensors={
                    "embeddings": embeddings[torch.from_numpy(mask)].contiguous(),
                    "image_index": torch.tensor(rows["image_index"].to_numpy(), dtype=torch.int64),
                    "caption_index": torch.tensor(
                        rows["caption_index"].to_numpy(), dtype=torch.int64
                    ),
                },
                metadata={
                    "split": split,
                    "encoder": config.text_encoder,
                    "dim": dim,
                    "pooling": config.pooling,
                    "clean_captions": config.clean_captions,
                },
            )
        )
    return tuple(bundles)
