"""The ConvNet's 2x2 average pool: PyTorch's CPU kernel against ``models.AvgPool2x2``, side by side.

``AvgPool2x2`` computes the pool and its gradient with strided element-wise ops in the order of
PyTorch's kernel, so every value is the same bit for bit; PyTorch's CPU ``avg_pool2d`` and its
backward are 2-4x slower at the ConvNet's shapes. This runs the workload of
``benchmarks/allocator.py`` (an evaluation run of 100 epochs on 100 pairs and its scoring,
6 outer distillation iterations with the built-in LoRS gradient ``full``, one expert epoch), at
the built-in shape on random data, once with the pool patched back to ``F.avg_pool2d``
(``native``) and once as shipped (``strided``), in fresh child processes, alternating for
``--rounds`` rounds; it prints the medians, the speed-ups and whether every result (losses,
recall, SHA-256 of the trained parameters, the distilled images and the expert trajectory) is
identical:

    python benchmarks/pool.py               # 3 rounds
    python benchmarks/pool.py --rounds 5 --json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmarks

VARIANTS = ("native", "strided")


def _child(variant: str) -> None:
    from allocator import _workload

    from lors_distill.core.device import keep_freed_memory
    from lors_distill.core.models import AvgPool2x2

    keep_freed_memory()
    if variant == "native":
        AvgPool2x2.forward = lambda self, x: F.avg_pool2d(x, kernel_size=2, stride=2)
    print(json.dumps({"variant": variant, **_workload(grad_mode="full")}))


def main() -> None:
    from allocator import side_by_side

    side_by_side(__doc__, __file__, VARIANTS, _child)


if __name__ == "__main__":
    main()
