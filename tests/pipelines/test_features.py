import pytest
import torch

from tests.conftest import require_flickr8k
from tests.kedro_helpers import load_catalog, run_kedro


def test_features_align_with_caption_table(project_copy):
    run_kedro(project_copy, ["ingestion", "features"])
    catalog = load_catalog(project_copy)
    captions = catalog.load("captions")
    for split in ("train", "val", "test"):
        bundle = catalog.load(f"{split}_text_features")
        rows = captions[captions.split == split]
        embeddings = bundle["embeddings"]
        assert embeddings.shape == (len(rows), 384)
        assert embeddings.dtype == torch.float32
        assert bundle.metadata == {
            "split": split,
            "encoder": "minilm",
            "dim": 384,
            "pooling": None,
            "clean_captions": "none",
        }
        assert bundle["image_index"].tolist() == rows.image_index.tolist()
        assert bundle["caption_index"].tolist() == rows.caption_index.tolist()
        torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(rows)))
    # equal caption strings get identical vectors, different ones differ
    train = captions[captions.split == "train"].reset_index(drop=True)
    vectors = catalog.load("train_text_features")["embeddings"]
    duplicated = train[train.caption.duplicated(keep=False)]
    if len(duplicated):
        first = duplicated.groupby("caption").head(2).index.tolist()[:2]
        assert torch.equal(vectors[first[0]], vectors[first[1]])
    assert not torch.equal(vectors[0], vectors[1])


@pytest.mark.slow
@pytest.mark.shared_data
def test_flickr8k_environment_wiring(project_copy):
    root = require_flickr8k()
    params = {
        "ingestion": {
            "root": str(root),
            "jsonl": {"train_images": 40, "val_images": 10, "test_images": 10},
        }
    }
    run_kedro(project_copy, ["ingestion", "features"], env="flickr8k", params=params)
    catalog = load_catalog(project_copy, env="flickr8k", params=params)
    assert catalog.load("train_images")["images"].shape == (40, 3, 64, 64)
    captions = catalog.load("captions")
    assert len(captions) == 60 * 5
    assert catalog.load("test_text_features")["embeddings"].shape == (50, 384)
