"""Turn a dataset source into split image tensors and one caption table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lors_distill.core.config import IngestionParams
from lors_distill.core.images import ImageDecodeError, decode_image, hwc_to_tensor, resize_square
from lors_distill.core.scenes import generate_scenes
from lors_distill.core.seeding import derive_seed
from lors_distill.core.sources import (
    SPLITS,
    BadRecordLog,
    Record,
    hash_split,
    read_jsonl,
    read_karpathy,
    resolve_images,
)

logger = logging.getLogger(__name__)

CAPTION_COLUMNS = ["split", "image_index", "caption_index", "image_id", "caption"]


@dataclass
class IngestedData:
    """The result of ingestion.

    Attributes:
        images: split -> ``(N_split, 3, H, W)`` uint8 tensor.
        captions: one row per caption with columns ``split, image_index, caption_index,
            image_id, caption``; ``image_index`` indexes that split's image tensor. Rows are
            ordered by split (train, val, test), image, caption.
        report: counts per split and bad records (by reason, with the first examples).
    """

    images: dict[str, torch.Tensor]
    captions: pd.DataFrame
    report: dict[str, Any]


def caption_table(image_ids: dict[str, list[str]], captions: dict[str, list[Sequence[str]]]):
    """Build the caption table from per-split image ids and caption lists."""
    rows = [
        (split, image_index, caption_index, image_id, caption)
        for split in SPLITS
        for image_index, (image_id, image_captions) in enumerate(
            zip(image_ids[split], captions[split], strict=True)
        )
        for caption_index, caption in enumerate(image_captions)
    ]
    table = pd.DataFrame(rows, columns=CAPTION_COLUMNS)
    return table.astype({"image_index": "int64", "caption_index": "int64"})


def split_seed(seed: int, split: str) -> int:
    """A per-split seed derived from the base seed (independent streams per split)."""
    return derive_seed(seed, SPLITS.index(split))


def ingest_scenes(params: IngestionParams) -> IngestedData:
    """Generate the built-in scenes dataset (deterministic in ``params.seed``)."""
    counts = {
        "train": params.scenes.train_images,
        "val": params.scenes.val_images,
        "test": params.scenes.test_images,
    }
    images, ids, captions = {}, {}, {}
    for split in SPLITS:
        array, split_captions, _ = generate_scenes(
            counts[split],
            params.image_size,
            split_seed(params.seed, split),
            num_captions=params.scenes.captions_per_image,
        )
        images[split] = hwc_to_tensor(array)
        ids[split] = [f"scene-{split}-{i:06d}" for i in range(counts[split])]
        captions[split] = split_captions
        logger.info("generated %d %s scenes at %d px", counts[split], split, params.image_size)
    return _assemble(images, ids, captions, params, BadRecordLog(params.on_bad_record))


def _decode_all(
    items: list[tuple[Record, Path]], params: IngestionParams, log: BadRecordLog, split: str
) -> tuple[list[Record], np.ndarray]:
    size = params.image_size

    def work(path: Path) -> np.ndarray | ImageDecodeError:
        try:
            return resize_square(decode_image(path), size, params.resize)
        except ImageDecodeError as error:
            return error

    kept, arrays = [], []
    with ThreadPoolExecutor(max_workers=params.num_workers) as pool:
        results = pool.map(work, [path for _, path in items])
        for (record, _), result in tqdm(
            zip(items, results, strict=True), total=len(items), desc=f"decode {split}", unit="img"
        ):
            if isinstance(result, ImageDecodeError):
                log.bad(record.origin, "undecodable_image", str(result))
                continue
            kept.append(record)
            arrays.append(result)
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return kept, stacked


def ingest_folder(params: IngestionParams) -> IngestedData:
    """Read a ``jsonl`` or ``karpathy`` folder (``params.root``), validate, split and decode."""
    root = params.root_path
    if not root.is_dir():
        raise FileNotFoundError(f"ingestion.root {root} is not a folder")
    log = BadRecordLog(params.on_bad_record)
    if params.source == "jsonl":
        records = read_jsonl(root / params.jsonl.captions_file, log)
        image_root = root
    else:
        files = {
            "train": params.karpathy.train_file,
            "val": params.karpathy.val_file,
            "test": params.karpathy.test_file,
        }
        records = read_karpathy(root, files, log)
        image_root = root / params.karpathy.image_root
    items = resolve_images(records, image_root, root, log)
    if params.source == "jsonl":
        splits = hash_split(
            [record.image for record, _ in items],
            params.jsonl.val_images,
            params.jsonl.test_images,
            params.jsonl.train_images,
            params.jsonl.split_salt,
        )
    else:
        splits = [record.split for record, _ in items]
    images, ids, captions = {}, {}, {}
    for split in SPLITS:
        chosen = [item for item, s in zip(items, splits, strict=True) if s == split]
        kept, array = _decode_all(chosen, params, log, split)
        if not kept:
            raise ValueError(f"no valid {split} images left in {root} (see the messages above)")
        images[split] = hwc_to_tensor(array)
        ids[split] = [record.image for record in kept]
        captions[split] = [record.captions for record in kept]
    return _assemble(images, ids, captions, params, log)


def _assemble(images, ids, captions, params: IngestionParams, log: BadRecordLog) -> IngestedData:
    table = caption_table(ids, captions)
    report = {
        "source": params.source,
        "root": str(params.root_path.resolve()) if params.source != "scenes" else None,
        "image_size": params.image_size,
        "resize": params.resize,
        "on_bad_record": params.on_bad_record,
        "images": {split: int(images[split].shape[0]) for split in SPLITS},
        "captions": {split: int((table["split"] == split).sum()) for split in SPLITS},
        "bad_records": {"total": log.total, **dict(sorted(log.counts.items()))},
        "bad_record_examples": list(log.examples),
    }
    if log.total:
        logger.warning(
            "skipped %d bad records: %s",
            log.total,
            ", ".join(f"{k}={v}" for k, v in log.counts.items()),
        )
    return IngestedData(images=images, captions=table, report=report)


def ingest(params: IngestionParams) -> IngestedData:
    """Run the configured source."""
    if params.source == "scenes":
        return ingest_scenes(params)
    return ingest_folder(params)
