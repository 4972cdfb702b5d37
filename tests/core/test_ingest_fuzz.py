"""Property-based fuzzing of folder ingestion (``jsonl``): generated ``captions.jsonl`` files and
image files (good ones in every mode, random bytes, truncations, bombs, odd paths, encodings).

The property: ingestion either returns correct tensors (every good record kept, nothing else)
or stops with a :class:`BadRecordError` naming the file and line, or with the split-size
error. Never a traceback from deep inside, never a silent wrong tensor. Bounded for CI (a fixed
number of examples, derandomised: the same inputs on every run).
"""

from __future__ import annotations

import io
import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lors_distill.core.ingest import ingest
from lors_distill.core.sources import BadRecordError
from tests.core.test_images import write_png
from tests.core.test_sources import folder_params

GOOD_MODES = ("RGB", "L", "RGBA", "LA", "P", "I;16", "CMYK", "1", "F")
BAD_IMAGES = ("random_bytes", "truncated", "empty", "bomb", "missing")
LINE_KINDS = ("good",) * 12 + (
    "bad_json",
    "bad_bytes",
    "bad_captions",
    "escape",
    "duplicate",
    "blank",
)
VAL, TEST = 2, 2


@dataclass
class Case:
    lines: list[bytes]
    good: dict[str, tuple[str, ...]]  # image path -> expected captions, for the good records


def _image_bytes(kind: str, rng: random.Random) -> bytes | None:
    width, height = rng.choice([(1, 1), (1, 37), (23, 5), (16, 16), (40, 30)])
    if kind in GOOD_MODES:
        array = np.random.default_rng(rng.randrange(2**32))
        if kind == "I;16":
            image = Image.fromarray(array.integers(0, 65536, (height, width), dtype=np.uint16))
        elif kind == "F":
            image = Image.fromarray(array.random((height, width), dtype=np.float32), "F")
        else:
            rgb = array.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(rgb).convert(kind)
            if kind in ("RGBA", "LA"):  # a real alpha channel, partly transparent
                alpha = array.integers(0, 256, (height, width), dtype=np.uint8)
                image.putalpha(Image.fromarray(alpha))
        buffer = io.BytesIO()
        image.save(buffer, format={"CMYK": "JPEG", "F": "TIFF"}.get(kind, "PNG"))
        return buffer.getvalue()
    if kind == "random_bytes":  # the prefix keeps header-less formats (TGA) from accepting it
        return b"\xff\xff\xff\xff" + bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
    if kind == "truncated":
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (9, 99, 199)).save(buffer, format=rng.choice(["PNG", "JPEG"]))
        data = buffer.getvalue()
        return data[: rng.randrange(8, len(data) // 2)]
    if kind == "empty":
        return b""
    return None  # bomb (written by write_png) or missing


@st.composite
def cases(draw) -> tuple[Case, dict[str, bytes | None]]:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    count = draw(st.integers(VAL + TEST, 16))
    clean = draw(st.integers(0, 9)) < 3  # some examples hold only good records
    lines, good, files = [], {}, {}
    seen: set[str] = set()
    for index in range(count):
        name = rng.choice(["img_{}.png", "photos/ü {}.png", "a b/{}.jpeg"]).format(index)
        line_kind = "good" if clean else draw(st.sampled_from(LINE_KINDS))
        image_kind = draw(st.sampled_from(GOOD_MODES if clean else GOOD_MODES * 2 + BAD_IMAGES))
        captions = draw(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=4))
        if line_kind == "duplicate" and seen:
            name = rng.choice(sorted(seen))
        elif line_kind != "duplicate":
            files[name] = _image_bytes(image_kind, rng) if image_kind != "bomb" else b"bomb"
        record = {"image": name, "captions": captions}
        if line_kind == "bad_json":
            lines.append(json.dumps(record).encode()[:-1])
        elif line_kind == "bad_bytes":
            lines.append(json.dumps(record).encode().replace(b'"image"', b'"\xff\xfeimage"'))
        elif line_kind == "bad_captions":
            lines.append(
                json.dumps({"image": name, "captions": rng.choice(["x", [], [1], None])}).encode()
            )
        elif line_kind == "escape":
            lines.append(json.dumps({"image": "../outside.png", "captions": ["x"]}).encode())
        elif line_kind == "blank":
            lines.append(b"   ")
        else:
            lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())).encode())
            stripped = tuple(c.strip() for c in captions if c.strip())
            valid = image_kind in GOOD_MODES and name in files and name not in seen
            if line_kind == "good" and valid and stripped:
                good[name] = stripped
            if stripped:  # a record with no caption is dropped before duplicates are looked for
                seen.add(name)
    if draw(st.booleans()):
        lines[0] = b"\xef\xbb\xbf" + lines[0]  # a byte-order mark
    return Case(lines, good), files


def _write(root: Path, case: Case, files: dict[str, bytes | None]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == b"bomb":
            write_png(path, 12000, 12000, 1, 0, b"\x00" * 10)
        elif content is not None:
            path.write_bytes(content)
    (root / "captions.jsonl").write_bytes(b"\n".join(case.lines) + b"\n")


@settings(
    max_examples=80,
    derandomize=True,  # the same examples on every run (CI)
    database=None,  # nothing replayed from (or written to) .hypothesis/
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_ingestion_returns_the_good_records_or_names_the_file_and_line(generated):
    case, files = generated
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        root.mkdir()
        _write(root, case, files)
        overrides = {
            "jsonl": {
                "captions_file": "captions.jsonl",
                "val_images": VAL,
                "test_images": TEST,
                "train_images": None,
                "split_salt": "",
            }
        }
        for policy in ("error", "skip"):
            data, error = _ingest(folder_params("jsonl", root, on_bad_record=policy, **overrides))
            if isinstance(error, BadRecordError):  # names the file and the line
                assert policy == "error"
                assert "line " in str(error)
                assert str(root) in str(error)
            elif error is not None:  # too few good images for the requested splits
                assert len(case.good) < VAL + TEST + 1, str(error)
                assert "val_images" in str(error) or "no decodable" in str(error)
            else:
                _check(data, case, policy)


def _ingest(params):
    try:
        return ingest(params), None
    except (BadRecordError, ValueError) as error:  # anything else fails the test as it is
        return None, error


def _check(data, case: Case, policy: str) -> None:
    kept = {s: t.shape[0] for s, t in data.images.items()}
    assert sum(kept.values()) == len(case.good), (policy, kept, sorted(case.good))
    assert kept["val"] == VAL
    assert kept["test"] == TEST
    for tensor in data.images.values():
        assert tensor.dtype == torch.uint8
        assert tensor.shape[1:] == (3, 8, 8)
    table = data.captions
    assert set(table.image_id) == set(case.good)
    for name, captions in case.good.items():
        assert tuple(table[table.image_id == name].caption) == captions
    if policy == "error":
        assert data.report["bad_records"] == {"total": 0}
