"""Device selection shared by every stage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def resolve_device(device: str) -> torch.device:
    """Turn a device string into a :class:`torch.device`.

    ``"auto"`` picks ``cuda`` when available, else ``cpu``; ``"cpu"``, ``"cuda"`` and
    ``"cuda:<index>"`` are passed through unchanged. Anything else raises ``ValueError``.
    """
    if not isinstance(device, str):
        raise ValueError(f"device must be a string, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if _DEVICE_RE.match(device):
        return torch.device(device)
    raise ValueError(f"invalid device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:<index>'")


@contextmanager
def tf32_matmuls(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """TF32 for fp32 matmuls and convolutions on CUDA inside the block (restored after)."""
    if not enabled or device.type != "cuda":
        yield
        return
    precision, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn
