"""Named tensors plus JSON metadata, stored as one safetensors file (never pickled)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

_META_KEY = "lors_distill"


@dataclass
class TensorBundle:
    """A set of named tensors with free-form JSON-serialisable metadata.

    Attributes:
        tensors: name -> tensor (any shape/dtype safetensors supports).
        metadata: JSON-serialisable description (encoder name, split, config, ...).
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

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


def save_bundle(bundle: TensorBundle, path: str | Path) -> None:
    """Write ``bundle`` to ``path`` atomically (temp file + rename): never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in bundle.tensors.items()}
    header = {_META_KEY: json.dumps(bundle.metadata, sort_keys=True)}
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
    try:
        save_file(tensors, tmp_name, metadata=header)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_bundle(path: str | Path, names: list[str] | None = None) -> TensorBundle:
    """Read a bundle written by :func:`save_bundle` (or any safetensors file).

    Args:
        path: the ``.safetensors`` file.
        names: load only these tensors (default: all).
    """
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        keys = list(handle.keys()) if names is None else names
        tensors = {name: handle.get_tensor(name) for name in keys}
    metadata = json.loads(header[_META_KEY]) if _META_KEY in header else dict(header)
    return TensorBundle(tensors=tensors, metadata=metadata)


def read_bundle_metadata(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[str, list]]]:
    """Metadata and ``name -> (dtype, shape)`` without reading tensor data."""
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        layout = {}
        for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            tensor_slice = handle.get_slice(name)
            layout[name] = (tensor_slice.get_dtype(), list(tensor_slice.get_shape()))
    metadata = json.loads(header[_META_KEY]) if _META_KEY in header else dict(header)
    return metadata, layout
