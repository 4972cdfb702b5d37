import base64
import io

import pytest
import torch
from kedro.io import DataCatalog, DatasetError
from PIL import Image

from lors_distill.core.bundle import TensorBundle
from lors_distill.datasets import TensorBundleDataset


def test_catalog_round_trip_and_image_preview(tmp_path):
    catalog = DataCatalog.from_config(
        {
            "imgs": {
                "type": "lors_distill.datasets.TensorBundleDataset",
                "filepath": str(tmp_path / "imgs.safetensors"),
                "image_key": "images",
                "preview_images": 4,
            }
        }
    )
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    bundle = TensorBundle({"images": images}, {"split": "train"})
    catalog.save("imgs", bundle)
    assert catalog.load("imgs").equals(bundle)
    preview = catalog.get("imgs").preview()
    picture = Image.open(io.BytesIO(base64.b64decode(preview)))
    # 4 images of 16 px in a 2x2 grid with 2 px padding, upscaled to >= 256 px
    assert picture.size[0] == picture.size[1]
    assert picture.size[0] >= 256
    assert picture.size[0] % (2 * 18 + 2) == 0


def test_table_preview_lists_tensors_and_metadata(tmp_path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "f.safetensors"))
    dataset.save(TensorBundle({"embeddings": torch.zeros(7, 3)}, {"encoder": "minilm", "dim": 3}))
    table = dataset.preview()
    assert table["columns"] == ["name", "dtype", "shape/value"]
    assert ["embeddings", "F32", "7x3"] in table["data"]
    assert ["meta:encoder", "", "minilm"] in table["data"]


def test_missing_file_and_wrong_type(tmp_path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "none.safetensors"))
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="does not exist"):
        dataset.load()
    with pytest.raises(DatasetError, match="expected a TensorBundle"):
        dataset.save({"a": torch.zeros(1)})
