"""Named tensors plus JSON metadata, stored as one safetensors file (never pickled)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

# The header holds ONE key (safetensors writes its metadata map in no fixed order, so two keys
# would make equal bundles differ in bytes): {"metadata": ..., "sha256": content hash}.
_BUNDLE_KEY = "lors_distill.bundle"
_LEGACY_KEY = "lors_distill"  # metadata only, no content hash (files of earlier versions)


def _parse_header(header: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """``(metadata, content hash or None)`` from a safetensors header."""
    if _BUNDLE_KEY in header:
        stored = json.loads(header[_BUNDLE_KEY])
        return stored["metadata"], stored["sha256"]
    if _LEGACY_KEY in header:
        return json.loads(header[_LEGACY_KEY]), None
    return dict(header), None


class BundleIntegrityError(ValueError):
    """A bundle file cannot be trusted: unreadable (truncated, not safetensors) or its tensors
    differ from the content hash written with them. The message names the file."""


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of tensor names, dtypes, shapes and bytes (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class TensorBundle:
    """A set of named tensors with free-form JSON-serialisable metadata.

    Attributes:
        tensors: name -> tensor (any shape/dtype safetensors supports).
        metadata: JSON-serialisable description (encoder name, split, config, ...).
        content_sha256: the verified content hash when read from a file by
            :func:`load_bundle` (not part of equality).
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    content_sha256: str | None = field(default=None, compare=False, repr=False)

    def sha256(self) -> str:
        """The content hash (the one verified on load, else computed)."""
        return self.content_sha256 or content_hash(self.tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def equals(self, other: TensorBundle) -> bool:
        """Exact equality of tensor names, dtypes, values and metadata."""
        if self.metadata != other.metadata or self.tensors.keys() != other.tensors.keys():
            return False
        return all(
            self.tensors[k].dtype == other.tensors[k].dtype
            and torch.equal(self.tensors[k], other.tensors[k])
            for k in self.tensors
        )


def _prepared(bundle: TensorBundle) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors as safetensors stores them and the header that records their hash."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in bundle.tensors.items()}
    stored = {"metadata": bundle.metadata, "sha256": content_hash(tensors)}
    return tensors, {_BUNDLE_KEY: json.dumps(stored, sort_keys=True)}


def bundle_bytes(bundle: TensorBundle) -> bytes:
    """The bytes :func:`save_bundle` writes for ``bundle`` (for storage reached through
    fsspec, where an object is uploaded whole)."""
    tensors, header = _prepared(bundle)
    return save_safetensors(tensors, metadata=header)


def bundle_from_bytes(
    data: bytes, origin: str, names: list[str] | None = None, *, require_hash: bool = False
) -> TensorBundle:
    """Read the bytes of a bundle file, checked as :func:`load_bundle` checks a file; ``origin``
    (the file's URL) names it in errors."""
    try:
        metadata, expected, _ = read_bundle_header(data[:8], data[8:])
        tensors = load_safetensors(data)
        if names is not None:
            tensors = {name: tensors[name] for name in names}
    except (KeyError, ValueError, RuntimeError, SafetensorError) as error:
        raise BundleIntegrityError(f"{origin}: unreadable safetensors file ({error})") from error
    return _checked(tensors, metadata, expected, origin, names, require_hash)


def read_bundle_header(
    prefix: bytes, rest: bytes | Any
) -> tuple[dict[str, Any], str | None, dict[str, tuple[str, list]]]:
    """A bundle's header from its first 8 bytes (the header's length) and what follows (bytes,
    or a binary file positioned after the prefix): ``(metadata, content hash or None, name ->
    (dtype, shape))``. Reads no tensor data.

    Raises:
        ValueError, KeyError: not a safetensors header.
    """
    if len(prefix) != 8:
        raise ValueError("shorter than a safetensors header")
    length = int.from_bytes(prefix, "little")
    raw = rest[:length] if isinstance(rest, bytes | bytearray) else rest.read(length)
    if len(raw) != length:
        raise ValueError("truncated safetensors header")
    header = json.loads(raw)
    metadata, expected = _parse_header(header.pop("__metadata__", None) or {})
    layout = {name: (entry["dtype"], list(entry["shape"])) for name, entry in header.items()}
    return metadata, expected, layout


def save_bundle(bundle: TensorBundle, path: str | Path) -> None:
    """Write ``bundle`` to ``path`` atomically (temp file + rename): never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, header = _prepared(bundle)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        save_file(tensors, tmp_name, metadata=header)
        # mkstemp (and safetensors' writer) leave 0600: give the file the umask's permissions
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_bundle(
    path: str | Path, names: list[str] | None = None, *, require_hash: bool = False
) -> TensorBundle:
    """Read a bundle written by :func:`save_bundle` (or any safetensors file).

    A full read is checked against the content hash :func:`save_bundle` wrote (files without
    one, written elsewhere, are read as they are).

    Args:
        path: the ``.safetensors`` file.
        names: load only these tensors (default: all; a partial read is not hash-checked).
        require_hash: refuse a file without a content hash (for files this project wrote
            itself, such as checkpoints).

    Raises:
        BundleIntegrityError: the file is unreadable or its tensors do not match their hash.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            keys = list(handle.keys()) if names is None else names
            tensors = {name: handle.get_tensor(name) for name in keys}
        metadata, expected = _parse_header(header)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise BundleIntegrityError(f"{path}: unreadable safetensors file ({error})") from error
    return _checked(tensors, metadata, expected, path, names, require_hash)


def _checked(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    expected: str | None,
    path: str | Path,
    names: list[str] | None,
    require_hash: bool,
) -> TensorBundle:
    """The bundle of ``tensors``, checked against the content hash written with them."""
    if require_hash and expected is None:
        raise BundleIntegrityError(f"{path}: no content hash (not written by save_bundle)")
    if names is None and expected is not None and content_hash(tensors) != expected:
        raise BundleIntegrityError(
            f"{path}: its tensors do not match the content hash written with them (the file was "
            "changed or damaged after it was written)"
        )
    verified = expected if names is None else None
    return TensorBundle(tensors=tensors, metadata=metadata, content_sha256=verified)


def read_bundle_metadata(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[str, list]]]:
    """Metadata and ``name -> (dtype, shape)`` of a bundle file without reading tensor data."""
    try:
        with open(path, "rb") as handle:
            metadata, _, layout = read_bundle_header(handle.read(8), handle)
    except (OSError, ValueError, KeyError) as error:
        raise BundleIntegrityError(f"{path}: unreadable safetensors file ({error})") from error
    return metadata, layout
