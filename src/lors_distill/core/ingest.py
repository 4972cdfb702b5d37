"""Turn a dataset source into split image tensors and one caption table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lors_distill.core.images import ImageDecodeError, decode_image, hwc_to_tensor, resize_square
from lors_distill.core.scenes import generate_scenes
from lors_distill.core.seeding import derive_seed
from lors_distill.core.sources import (
    SPLITS,
    BadRecordLog,
    Record,
    check_split_sizes,
    hash_order,
    read_jsonl,
    read_karpathy,
    resolve_images,
)

if TYPE_CHECKING:  # only annotations: config imports SOURCES below to validate the source
    from lors_distill.core.config import IngestionParams

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


class _Decoder:
    """Decodes and resizes images on ``num_workers`` threads; bad files go to the log."""

    def __init__(self, params: IngestionParams, log: BadRecordLog, total: int) -> None:
        self.params, self.log = params, log
        self.progress = tqdm(total=total, desc="decode images", unit="img")

    def _work(self, path: Path) -> np.ndarray | ImageDecodeError:
        try:
            image = decode_image(path, self.params.max_image_pixels)
            return resize_square(image, self.params.image_size, self.params.resize)
        except ImageDecodeError as error:
            return error

    def __call__(self, items: list[tuple[Record, Path]]) -> list[np.ndarray | None]:
        """One array per item, ``None`` where the file was a bad record, in input order."""
        out: list[np.ndarray | None] = []
        with ThreadPoolExecutor(max_workers=self.params.num_workers) as pool:
            for (record, _), result in zip(
                items, pool.map(self._work, [path for _, path in items]), strict=True
            ):
                self.progress.update()
                if isinstance(result, ImageDecodeError):
                    self.log.bad(record.origin, result.reason, str(result))
                    out.append(None)
                else:
                    out.append(result)
        return out


def _stack(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return hwc_to_tensor(stacked)


def _fill_hash_splits(
    items: list[tuple[Record, Path]], params: IngestionParams, decode: _Decoder
) -> dict[str, list[tuple[int, Record, np.ndarray]]]:
    """Decode in hash order (:func:`~lors_distill.core.sources.hash_order`) and fill test, val,
    then train (up to ``jsonl.train_images``) with the images that decode, so a skipped bad
    image is replaced by the next one in hash order and the requested sizes hold. Without bad
    images this is exactly :func:`~lors_distill.core.sources.hash_split`.

    Returns:
        split -> ``(input index, record, array)`` in hash order.
    """
    source = params.jsonl
    check_split_sizes(len(items), source.val_images, source.test_images, "valid")
    quota = {"test": source.test_images, "val": source.val_images, "train": source.train_images}
    order = hash_order([record.image for record, _ in items], source.split_salt)
    filled: dict[str, list[tuple[int, Record, np.ndarray]]] = {split: [] for split in SPLITS}

    def missing() -> int:
        return sum(
            len(order) if limit is None else limit - len(filled[split])
            for split, limit in quota.items()
        )

    position = 0
    while position < len(order) and missing() > 0:
        chunk = order[position : position + missing()]
        position += len(chunk)
        for index, array in zip(chunk, decode([items[i] for i in chunk]), strict=True):
            if array is None:
                continue
            split = next(
                s for s in ("test", "val", "train") if quota[s] is None or len(filled[s]) < quota[s]
            )
            filled[split].append((index, items[index][0], array))
    decoded = sum(len(entries) for entries in filled.values())
    if len(filled["test"]) < source.test_images or len(filled["val"]) < source.val_images:
        check_split_sizes(decoded, source.val_images, source.test_images, "decodable")
    if not filled["train"]:
        raise ValueError(f"no decodable train images left in {params.root_path}")
    return filled


def _open_folder(params: IngestionParams) -> tuple[Path, BadRecordLog]:
    root = params.root_path
    if not root.is_dir():
        raise FileNotFoundError(f"ingestion.root {root} is not a folder")
    return root, BadRecordLog(params.on_bad_record)


def ingest_jsonl(params: IngestionParams) -> IngestedData:
    """Read a ``jsonl`` folder (``params.root``): validate, split by file-name hash, decode."""
    root, log = _open_folder(params)
    records = read_jsonl(root / params.jsonl.captions_file, log)
    items = resolve_images(records, root, root, log)
    images, ids, captions = {}, {}, {}
    decode = _Decoder(params, log, total=len(items))
    try:
        filled = _fill_hash_splits(items, params, decode)
        for split in SPLITS:
            entries = sorted(filled[split], key=lambda entry: entry[0])  # file order
            images[split] = _stack([array for _, _, array in entries], params.image_size)
            ids[split] = [record.image for _, record, _ in entries]
            captions[split] = [record.captions for _, record, _ in entries]
    finally:
        decode.progress.close()
    return _assemble(images, ids, captions, params, log)


def ingest_karpathy(params: IngestionParams) -> IngestedData:
    """Read a ``karpathy`` folder (``params.root``): the annotation files fix the splits, so a
    bad image leaves its split one short."""
    root, log = _open_folder(params)
    files = {
        "train": params.karpathy.train_file,
        "val": params.karpathy.val_file,
        "test": params.karpathy.test_file,
    }
    records = read_karpathy(root, files, log)
    items = resolve_images(records, root / params.karpathy.image_root, root, log)
    images, ids, captions = {}, {}, {}
    decode = _Decoder(params, log, total=len(items))
    try:
        for split in SPLITS:
            chosen = [item for item in items if item[0].split == split]
            arrays = decode(chosen)
            kept = [
                (record, a) for (record, _), a in zip(chosen, arrays, strict=True) if a is not None
            ]
            if not kept:
                raise ValueError(f"no valid {split} images left in {root} (see the messages above)")
            images[split] = _stack([array for _, array in kept], params.image_size)
            ids[split] = [record.image for record, _ in kept]
            captions[split] = [record.captions for record, _ in kept]
    finally:
        decode.progress.close()
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
        "empty_captions_dropped": log.empty_captions,
        "bad_record_examples": list(log.examples),
    }
    if log.total:
        logger.warning(
            "skipped %d bad records: %s",
            log.total,
            ", ".join(f"{k}={v}" for k, v in log.counts.items()),
        )
    return IngestedData(images=images, captions=table, report=report)


# the dataset sources (``ingestion.source``): the only list of their names
SOURCES: dict[str, Callable[[IngestionParams], IngestedData]] = {
    "scenes": ingest_scenes,
    "jsonl": ingest_jsonl,
    "karpathy": ingest_karpathy,
}


def ingest(params: IngestionParams) -> IngestedData:
    """Run the configured source."""
    return SOURCES[params.source](params)
