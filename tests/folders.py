"""Build small on-disk datasets in the jsonl and Karpathy (BLIP/LoRS) layouts for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 18)) -> None:
    """A small random RGB JPEG (``size`` = width, height)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format="JPEG", quality=90)


def captions_for(index: int) -> list[str]:
    return [f"photo number {index} caption {k} with a dog" for k in range(5)]


def make_jsonl_folder(root: Path, count: int = 30, lines: list[str] | None = None) -> Path:
    """``root/captions.jsonl`` + ``root/images/img_XXX.jpg``; ``lines`` replaces the file text."""
    entries = []
    for index in range(count):
        name = f"images/img_{index:03d}.jpg"
        write_image(root / name, index)
        entries.append(json.dumps({"image": name, "captions": captions_for(index)}))
    text = "\n".join(lines if lines is not None else entries) + "\n"
    (root / "captions.jsonl").write_text(text, encoding="utf-8")
    return root


def make_karpathy_folder(
    root: Path,
    counts: dict[str, int] | None = None,
    prefix: str = "flickr30k",
    train_captions: int = 5,
) -> Path:
    """Karpathy-split JSON files in the exact BLIP/LoRS format plus the images they name.

    Train: a list with one entry per caption ``{"caption", "image", "image_id"}``, the first
    ``train_captions`` of an image's captions; val/test: one entry per image
    ``{"image", "caption": [5 strings]}``.
    """
    counts = counts or {"train": 12, "val": 4, "test": 4}
    index = 0
    for split, count in counts.items():
        entries = []
        for _ in range(count):
            name = f"flickr30k-images/{1000 + index}.jpg"
            write_image(root / name, index)
            captions = captions_for(index)
            if split == "train":
                entries += [
                    {"caption": c, "image": name, "image_id": str(1000 + index)}
                    for c in captions[:train_captions]
                ]
            else:
                entries.append({"image": name, "caption": captions})
            index += 1
        (root / f"{prefix}_{split}.json").write_text(json.dumps(entries), encoding="utf-8")
    return root
