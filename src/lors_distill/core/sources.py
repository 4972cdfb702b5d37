"""Readers for image-caption folders (``jsonl`` and ``karpathy`` layouts) with strict validation.

Every problem is reported with the file and line (or entry) it comes from. Under the ``error``
policy the first problem stops ingestion before anything is written; under ``skip`` the record is
dropped, counted by reason, and the first examples are kept for the ingestion report.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_MAX_EXAMPLES = 20


class BadRecordError(ValueError):
    """A record of the source dataset is invalid (message names file and line)."""


@dataclass(frozen=True)
class Record:
    """One image and its captions as listed in an annotation file.

    Attributes:
        image: the image path exactly as written in the annotation (relative to the image root).
        captions: non-empty captions, stripped, in file order.
        split: ``train``/``val``/``test`` where the source fixes it, else ``None``.
        origin: where it was read, e.g. ``"captions.jsonl line 12"``.
    """

    image: str
    captions: tuple[str, ...]
    split: str | None
    origin: str


@dataclass
class BadRecordLog:
    """Applies the ``on_bad_record`` policy and keeps the tally for the ingestion report."""

    policy: Literal["error", "skip"]
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    empty_captions: int = 0  # empty strings dropped from records that keep other captions

    def bad(self, origin: str, reason: str, message: str) -> None:
        """Report one bad record: raise under ``error``, count and log under ``skip``."""
        text = f"{origin}: {message}"
        if self.policy == "error":
            raise BadRecordError(
                f"{text}\n(set ingestion.on_bad_record: skip to drop such records and count them)"
            )
        self.counts[reason] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(text)
            logger.warning("skipping bad record: %s", text)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _clean_captions(raw: list, origin: str, log: BadRecordLog) -> tuple[str, ...] | None:
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        log.bad(origin, "malformed_record", "'captions' must be a list of strings")
        return None
    captions = tuple(c.strip() for c in raw if c.strip())
    if not captions:
        log.bad(origin, "empty_captions", "empty caption list")
        return None
    if len(captions) < len(raw):
        if not log.empty_captions:
            logger.warning("%s: dropping empty captions (counted in the ingestion report)", origin)
        log.empty_captions += len(raw) - len(captions)
    return captions


def read_jsonl(path: Path, log: BadRecordLog) -> list[Record]:
    """Read ``captions.jsonl``: one ``{"image": "images/x.jpg", "captions": [...]}`` per line."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the jsonl source expects a folder (ingestion.root) holding "
            "captions.jsonl and the images it names"
        )
    records = []
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            origin = f"{path} line {line_number}"
            if line_number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]  # Windows editors write a byte-order mark
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                log.bad(
                    origin,
                    "invalid_utf8",
                    f"not valid UTF-8 at byte {error.start + 1} of the line "
                    f"({raw[error.start : error.start + 4]!r})",
                )
                continue
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                log.bad(
                    origin, "malformed_json", f"malformed JSON ({error.msg}, column {error.colno})"
                )
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                log.bad(origin, "malformed_record", "expected an object with a string 'image'")
                continue
            captions = _clean_captions(entry.get("captions"), origin, log)
            if captions is not None:
                records.append(Record(entry["image"], captions, None, origin))
    return records


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _invalid_utf8(entry: object) -> str | None:
    """The first string in an entry holding bytes that were not UTF-8, shown with ``?``."""
    values = entry.values() if isinstance(entry, dict) else [entry]
    for value in values:
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and _ESCAPED_BYTE.search(text):
                return _ESCAPED_BYTE.sub("?", text)[:80]
    return None


def _check_entry(origin: str, entry: object, log: BadRecordLog) -> bool:
    """True for an object with a string 'image' and only valid UTF-8 text; else log it."""
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        log.bad(origin, "malformed_record", "expected an object with a string 'image'")
        return False
    invalid = _invalid_utf8(entry)
    if invalid is not None:
        log.bad(origin, "invalid_utf8", f"text that is not valid UTF-8: {invalid!r}")
        return False
    return True


def _load_json_list(path: Path) -> list:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the karpathy source expects the split annotation files "
            "(e.g. flickr30k_train.json) directly under ingestion.root"
        )
    # A byte-order mark is accepted; bytes that are not UTF-8 are kept as surrogate escapes so
    # the entries holding them are reported (and skippable) one by one (see _invalid_utf8).
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRecordError(
            f"{path} line {error.lineno} column {error.colno}: malformed JSON ({error.msg}); "
            "the whole file is unreadable, so it cannot be skipped"
        ) from None
    if not isinstance(entries, list):
        raise BadRecordError(
            f"{path}: expected a JSON list of entries, got {type(entries).__name__}"
        )
    return entries


def read_karpathy(root: Path, files: dict[str, str], log: BadRecordLog) -> list[Record]:
    """Read Karpathy-split JSON files in the BLIP/LoRS format.

    Train entries are one caption each: ``{"image", "caption", "image_id"}`` (grouped by image
    here, keeping first-seen order); val/test entries are one image each:
    ``{"image", "caption": [...]}``.
    """
    records = []
    for split in SPLITS:
        path = root / files[split]
        entries = _load_json_list(path)
        if split == "train":
            records.extend(_group_train_entries(path, entries, log))
            continue
        for index, entry in enumerate(entries):
            origin = f"{path} entry {index}"
            if not _check_entry(origin, entry, log):
                continue
            captions = _clean_captions(entry.get("caption"), origin, log)
            if captions is not None:
                records.append(Record(entry["image"], captions, split, origin))
    return records


def _group_train_entries(path: Path, entries: list, log: BadRecordLog) -> list[Record]:
    grouped: dict[str, list[str]] = {}
    origins: dict[str, str] = {}
    for index, entry in enumerate(entries):
        origin = f"{path} entry {index}"
        if not _check_entry(origin, entry, log):
            continue
        caption = entry.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            log.bad(origin, "empty_captions", f"image '{entry['image']}' has an empty caption")
            continue
        origins.setdefault(entry["image"], origin)
        grouped.setdefault(entry["image"], []).append(caption.strip())
    return [Record(image, tuple(caps), "train", origins[image]) for image, caps in grouped.items()]


def resolve_images(
    records: Sequence[Record], image_root: Path, data_root: Path, log: BadRecordLog
) -> list[tuple[Record, Path]]:
    """Check each record's image path: inside ``data_root``, existing, listed once.

    Returns:
        The surviving records with their resolved image paths, in input order.
    """
    data_root = data_root.resolve()
    seen: dict[Path, str] = {}
    kept = []
    for record in records:
        path = (image_root / record.image).resolve()
        if not path.is_relative_to(data_root):
            log.bad(
                record.origin,
                "path_escapes_root",
                f"image path '{record.image}' escapes the data root {data_root}",
            )
            continue
        if path in seen:
            log.bad(
                record.origin,
                "duplicate_image",
                f"image '{record.image}' is listed again (first at {seen[path]})",
            )
            continue
        if not path.is_file():
            log.bad(
                record.origin,
                "missing_image",
                f"image '{record.image}' not found under {image_root}",
            )
            continue
        seen[path] = record.origin
        kept.append((record, path))
    return kept


def hash_order(names: Sequence[str], salt: str = "") -> list[int]:
    """Indices of ``names`` ordered by a SHA-256 hash of ``salt`` + each file name (its last
    path component; ties by the full name): the order :func:`hash_split` fills the splits in."""
    keys = [hashlib.sha256((salt + Path(n).name).encode("utf-8")).hexdigest() for n in names]
    return sorted(range(len(names)), key=lambda i: (keys[i], names[i]))


def check_split_sizes(available: int, val_count: int, test_count: int, what: str) -> None:
    """Raise unless ``available`` images can fill val, test and at least one train image."""
    if available < val_count + test_count + 1:
        raise ValueError(
            f"only {available} {what} images, fewer than ingestion.jsonl.val_images "
            f"({val_count}) + test_images ({test_count}) + 1 train image"
        )


def hash_split(
    names: Sequence[str], val_count: int, test_count: int, train_limit: int | None, salt: str = ""
) -> list[str | None]:
    """Deterministic split by a SHA-256 hash of each file name (its last path component).

    Images are ordered by hash: the first ``test_count`` go to test, the next ``val_count`` to
    val, the rest to train (the first ``train_limit`` of them if set; the others get ``None``).
    The split of a file therefore never depends on the machine, the file order or Python's hash
    seed, and adding files only moves files across the boundaries.
    """
    check_split_sizes(len(names), val_count, test_count, "valid")
    splits: list[str | None] = [None] * len(names)
    for rank, index in enumerate(hash_order(names, salt)):
        if rank < test_count:
            splits[index] = "test"
        elif rank < test_count + val_count:
            splits[index] = "val"
        elif train_limit is None or rank < test_count + val_count + train_limit:
            splits[index] = "train"
    return splits
