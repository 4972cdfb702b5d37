"""SHA-256 of every output of a pipeline run, to prove that a refactor changed no behaviour.

    kedro run --env test && python benchmarks/hash_outputs.py data > before.txt
    # ... refactor ...
    kedro run --env test && python benchmarks/hash_outputs.py data > after.txt
    diff before.txt after.txt        # empty: the same tensors, tables and reports

Hashes the tensors (``.safetensors``: the header's metadata and every tensor's dtype, shape and
bytes), the tables (``.csv``, ``.parquet``), the reports (``.json``, ``.md``) and the figures
(``.png``: matplotlib writes no date into them). Left out: logs, ``mlflow.db`` and ``mlruns/``.
Timings differ between two runs of the same code, so JSON keys matching ``VOLATILE_KEYS``
(images per second) are replaced by ``"<volatile>"`` before hashing. Compare hashes made on
one machine: reports name the machine, and CPU kernels differ between machines. Prints one line
per file, ``<sha256>  <path>``, sorted by path; the count goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

HASHED = {".safetensors", ".csv", ".parquet", ".json", ".md", ".png"}
# keys whose values are timings of this run, not results of the method (images_per_second)
VOLATILE_KEYS = re.compile(r"(per_second|seconds|elapsed)", re.IGNORECASE)


def _canonical_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "<volatile>" if VOLATILE_KEYS.search(str(k)) else _canonical_json(v)
            for k, v in sorted(value.items())
        }
    if isinstance(value, list):
        return [_canonical_json(v) for v in value]
    return value


def _tensor_digest(path: Path) -> str:
    """The metadata and every tensor's dtype, shape and bytes, in name order (independent of
    how the writer laid the file out)."""
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as handle:
        digest.update(json.dumps(handle.metadata() or {}, sort_keys=True).encode())
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of one output, volatile values masked (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _tensor_digest(path)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from exc
        text = json.dumps(_canonical_json(data), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hash_tree(root: Path) -> list[tuple[str, str]]:
    """``(relative path, digest)`` of every hashed file under ``root``, sorted by path."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in HASHED)
    return [(p.relative_to(root).as_posix(), file_digest(p)) for p in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the data folder of a finished run")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    rows = hash_tree(args.root)
    for path, digest in rows:
        print(f"{digest}  {path}")
    print(f"{len(rows)} files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
