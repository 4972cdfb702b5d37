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
def seeded_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Inside the block the process RNG (CPU, and ``device``'s generator on CUDA) starts from
    ``seed``; outside it is untouched. For the draws that cannot take a generator (dropout,
    initialisation, torchvision transforms), so that they depend on the seed only."""
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def tf32_matmuls(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """On CUDA, fp32 matmuls and convolutions use TF32 inside the block when ``enabled`` and
    full IEEE fp32 when not (cuDNN convolutions default to TF32, so "off" must be explicit).
    The previous settings are restored after. Process-wide: not for concurrent threads."""
    if device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    previous = (matmul.fp32_precision, conv.fp32_precision)
    mode = "tf32" if enabled else "ieee"
    matmul.fp32_precision, conv.fp32_precision = mode, mode
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = previous


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 on this device (CUDA compute capability >= 8.0; emulation does not count)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor -> ``device`` without making the host wait for the GPU: a copy from pageable
    memory synchronises the stream, one from pinned memory with ``non_blocking`` does not."""
    if device.type != "cuda" or tensor.device.type == "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
