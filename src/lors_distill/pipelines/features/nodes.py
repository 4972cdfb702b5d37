"""Nodes of the ``features`` pipeline."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import FeaturesParams
from lors_distill.core.text_encoders import build_text_encoder, encode_unique

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
    embeddings = encode_unique(encoder, texts)
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
                    "dim": int(encoder.dim),
                    "pooling": config.pooling,
                    "clean_captions": config.clean_captions,
                },
            )
        )
    return tuple(bundles)
