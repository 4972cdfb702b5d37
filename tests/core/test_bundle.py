import json

import pytest
import torch
from safetensors import safe_open

from lors_distill.core.bundle import TensorBundle, load_bundle, read_bundle_metadata, save_bundle


def test_round_trip_is_exact(tmp_path):
    bundle = TensorBundle(
        tensors={
            "images": torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8),
            "embeddings": torch.randn(10, 5),
            "index": torch.arange(10),
        },
        metadata={"encoder": "minilm", "dim": 5, "nested": {"a": [1, 2]}},
    )
    path = tmp_path / "sub" / "b.safetensors"
    save_bundle(bundle, path)
    loaded = load_bundle(path)
    assert loaded.equals(bundle)
    assert loaded["index"].dtype == torch.int64
    assert not loaded.equals(TensorBundle(bundle.tensors, {"encoder": "other"}))
    # a plain safetensors file, readable by any safetensors tool
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["lors_distill.bundle"])["metadata"]["dim"] == 5


def test_partial_load_and_layout(tmp_path):
    path = tmp_path / "b.safetensors"
    save_bundle(TensorBundle({"a": torch.zeros(2, 3), "b": torch.ones(4)}, {"k": "v"}), path)
    assert list(load_bundle(path, names=["b"]).tensors) == ["b"]
    metadata, layout = read_bundle_metadata(path)
    assert metadata == {"k": "v"}
    assert layout == {"a": ("F32", [2, 3]), "b": ("F32", [4])}


def test_failed_save_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "b.safetensors"
    good = TensorBundle({"a": torch.arange(3)}, {"v": 1})
    save_bundle(good, path)
    with pytest.raises(TypeError):
        save_bundle(TensorBundle({"a": torch.arange(3)}, {"v": object()}), path)
    assert load_bundle(path).equals(good)
    assert [p.name for p in tmp_path.iterdir()] == ["b.safetensors"]
