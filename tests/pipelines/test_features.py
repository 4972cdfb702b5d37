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


def test_sharded_encoding_writes_the_bytes_of_one_node(project_copy):
    """``features.shards: 3``: three encoding nodes and a merge node write the three feature
    bundles byte for byte as the single node does (the test env's 5 batches of 64 distinct
    captions: 1 + 2 + 2 per shard)."""
    run_kedro(project_copy, ["ingestion", "features"])
    names = [
        f"data/04_feature/{split}_text_features.safetensors" for split in ("train", "val", "test")
    ]
    one_node = {name: (project_copy / name).read_bytes() for name in names}
    for name in names:
        (project_copy / name).unlink()
    run_kedro(project_copy, ["features"], params={"features": {"shards": 3}})
    for name in names:
        assert (project_copy / name).read_bytes() == one_node[name], name
    shards = sorted((project_copy / "data/04_feature/shards").iterdir())
    assert [p.name for p in shards] == [f"text_features_{k}.safetensors" for k in range(3)]
    catalog = load_catalog(project_copy, params={"features": {"shards": 3}})
    sizes = [catalog.load(f"text_features_shard_{k}")["distinct"].numel() for k in range(3)]
    captions = catalog.load("captions")
    assert sum(sizes) == captions.caption.nunique()
    assert min(sizes) > 0
