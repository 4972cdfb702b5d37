"""``features.shards`` at CC3M's size: the batch plan, the shards and the merge on 3.3 million
captions, against one pass, with a cheap stand-in encoder.

What this measures is the sharding itself: planning the batches (distinct captions, sorted by
length), encoding K contiguous runs of whole batches, and merging them back into one row per
caption. The encoder is a deterministic stand-in (each caption's vector from its characters, so
it runs in minutes on a CPU); a real model's vectors depend on each batch's padding, which is
why the shards cut at batch boundaries. ``tests/core/test_text_encoders.py`` checks the bytes
with MiniLM itself on a small set. It prints the wall time of each step, the peak resident
memory, and whether the merged vectors are the one-pass vectors byte for byte:

    python benchmarks/feature_shards.py                    # 3.3 M captions, 4 shards
    python benchmarks/feature_shards.py --captions 100000 --shards 7 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from lors_distill.core.text_encoders import (
    TextEncoder,
    distinct,
    encode_unique,
    encode_unique_shard,
    merge_unique_shards,
)

WORDS = [
    "a",
    "man",
    "woman",
    "dog",
    "cat",
    "child",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "riding",
    "sitting",
    "standing",
    "next",
    "to",
    "the",
    "on",
    "in",
    "with",
    "of",
    "street",
    "beach",
    "park",
    "table",
    "bowl",
    "plate",
    "truck",
    "bike",
    "wave",
    "kite",
    "field",
    "city",
]


class CharacterEncoder(TextEncoder):
    """A stand-in: each text's vector is a fixed linear map of its first 64 bytes (dim 16)."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(
            "characters",
            device=torch.device("cpu"),
            batch_size=batch_size,
            clean_captions="none",
            show_progress=False,
        )
        self.dim = 16

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        codes = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            raw = np.frombuffer(text.encode()[:64], dtype=np.uint8)
            codes[row, : raw.size] = raw
        return torch.nn.functional.normalize(torch.from_numpy(codes) @ _MIX, dim=1)


_MIX = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))


def captions(count: int, seed: int = 0) -> list[str]:
    """``count`` captions of 5 to 24 words; about 1 in 20 repeats an earlier one."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 25, (count,), generator=generator).tolist()
    words = torch.randint(0, len(WORDS), (count, 24), generator=generator).tolist()
    repeat = torch.rand(count, generator=generator) < 0.05
    texts: list[str] = []
    for i in range(count):
        if repeat[i] and texts:
            texts.append(texts[int(torch.randint(0, len(texts), (1,), generator=generator))])
        else:
            texts.append(" ".join(WORDS[w] for w in words[i][: lengths[i]]) + f" {i}")
    return texts


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=int, default=3_300_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    times: dict[str, float] = {}

    def timed(name, function, *arguments):
        start = time.perf_counter()
        result = function(*arguments)
        times[name] = round(time.perf_counter() - start, 1)
        return result

    texts = timed("make captions", captions, args.captions)
    encoder = CharacterEncoder(args.batch_size)
    unique, _ = timed("distinct", distinct, texts)
    one_pass = timed("one pass (encode_unique)", encode_unique, encoder, texts)
    parts = []
    for shard in range(args.shards):
        parts.append(
            timed(f"shard {shard}", encode_unique_shard, encoder, texts, shard, args.shards)
        )
    merged = timed("merge", merge_unique_shards, texts, parts, encoder.dim)
    report = {
        "captions": len(texts),
        "distinct": len(unique),
        "shards": args.shards,
        "batch_size": args.batch_size,
        "rows_per_shard": [int(rows.numel()) for rows, _ in parts],
        "identical_bytes": bool(
            merged.shape == one_pass.shape
            and merged.numpy().tobytes() == one_pass.numpy().tobytes()
        ),
        "seconds": times,
        "peak_rss_gib": round(_peak_gib(), 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
