"""Nodes of the ``ingestion`` pipeline."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.config import IngestionParams
from lors_distill.core.ingest import ingest


def ingest_source(
    config: IngestionParams,
) -> tuple[TensorBundle, TensorBundle, TensorBundle, pd.DataFrame, dict[str, Any]]:
    """Read, validate, split and resize the configured dataset source.

    All validation and decoding happens before this node returns, so a bad record under
    ``on_bad_record: error`` stops the run before any output is written.

    Args:
        config: the ``ingestion`` parameters.

    Returns:
        Train, val and test image bundles (``images``: ``(N, 3, H, W)`` uint8), the caption
        table (``split, image_index, caption_index, image_id, caption``) and the ingestion report.
    """
    data = ingest(config)
    bundles = tuple(
        TensorBundle(
            tensors={"images": data.images[split]},
            metadata={
                "split": split,
                "source": config.source,
                "image_size": config.image_size,
                "resize": config.resize,
            },
        )
        for split in ("train", "val", "test")
    )
    return (*bundles, data.captions, data.report)
