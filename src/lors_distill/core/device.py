"""Device selection shared by every stage."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import sys
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


def describe_machine(device: torch.device) -> str:
    """Where a number was computed, for the tables that report it: float results depend on the
    kernels torch picks for this processor (on CPU, its instruction set) and on the thread
    count, and training amplifies last-bit differences (README "Machines differ")."""
    if device.type == "cuda":
        return f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}"
    capability = torch.backends.cpu.get_cpu_capability()
    threads = torch.get_num_threads()
    return f"torch {torch.__version__}, {platform.machine()} CPU ({capability}), {threads} threads"


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


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache  # once per process: the first call decides
def keep_freed_memory() -> bool:
    """Let glibc's allocator keep and reuse freed memory instead of handing it back to the OS.

    By default glibc serves a large tensor with a fresh ``mmap`` and unmaps it on free, so the
    next tensor of that size page-faults in zeroed pages again; a training step on the built-in
    shape allocates such tensors dozens of times. With every allocation below 1 GiB taken from
    the heap and the heap never trimmed, the same memory is reused: on 2 cores the evaluation's
    scoring runs about 2x, its training 1.4-1.8x, an expert epoch 1.1-1.8x and a distillation
    iteration about 1.1x faster (``benchmarks/allocator.py``). The numbers computed are the
    same; the process keeps its peak memory until it exits.

    Called before every node (``hooks.ProcessSetupHook``). Does nothing off glibc (macOS, Windows,
    musl) or with ``LORS_KEEP_FREED_MEMORY=0``. Returns whether the allocator was tuned.
    """
    if os.environ.get("LORS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; older glibc caps the mmap threshold at 32 MiB
    mapped = mallopt(_M_MMAP_THRESHOLD, 1 << 30) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    trimmed = mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    return bool(mapped and trimmed)


def worker_threads() -> int:
    """Torch threads for one parallel worker process: ``LORS_WORKER_THREADS``, else 1. Two
    torch processes with a thread per core each oversubscribe the cores badly (about 15x slower
    each on 2 cores); one thread per worker and one worker per core keeps them busy."""
    value = os.environ.get("LORS_WORKER_THREADS", "1")
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"LORS_WORKER_THREADS must be a positive integer, got {value!r}")
    return threads
