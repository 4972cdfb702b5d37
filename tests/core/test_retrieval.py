import pytest
import torch

from lors_distill.core.retrieval import recall_at_k


def test_hand_computed_recalls_with_multiple_captions():
    # 3 images; captions 0,1 -> image 0; 2 -> image 1; 3,4 -> image 2
    caption_image = torch.tensor([0, 0, 1, 2, 2])
    sim = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.2, 0.0],  # image 0: own caption 1 is top-1
            [0.8, 0.1, 0.3, 0.9, 0.2],  # image 1: own caption 2 is 3rd of the others -> rank 2
            [0.5, 0.4, 0.1, 0.2, 0.3],  # image 2: best own 0.3; 0.5, 0.4 above -> rank 2
        ]
    )
    r = recall_at_k(sim, caption_image, ks=(1, 2, 3))
    assert r["tr@1"] == pytest.approx(100 / 3)
    assert r["tr@2"] == pytest.approx(100 / 3)
    assert r["tr@3"] == pytest.approx(100.0)
    # IR ranks (images scoring >= own image per caption):
    # c0: own 0.1, others 0.8, 0.5 -> 2; c1: 0.9 top -> 0; c2: own 0.3, 0.5 above -> 1;
    # c3: own 0.2, 0.2 (image 0) ties and 0.9 -> 2; c4: own 0.3, 0.2 and 0.0 below -> 0
    assert r["ir@1"] == pytest.approx(40.0)
    assert r["ir@2"] == pytest.approx(60.0)
    assert r["ir@3"] == pytest.approx(100.0)
    assert r["mean_recall"] == pytest.approx(sum(v for k, v in r.items() if "@" in k) / 6)


def test_ties_count_against_the_model():
    caption_image = torch.arange(4)
    flat = recall_at_k(torch.zeros(4, 4), caption_image, ks=(1, 3))
    assert flat["tr@1"] == 0.0
    assert flat["ir@1"] == 0.0
    assert flat["tr@3"] == 0.0  # 3 wrong captions tie with the right one
    perfect = recall_at_k(torch.eye(4), caption_image, ks=(1,))
    assert perfect["tr@1"] == perfect["ir@1"] == 100.0


def test_chunking_does_not_change_results():
    torch.manual_seed(0)
    sim = torch.randn(30, 70)
    caption_image = torch.arange(70) % 30
    assert recall_at_k(sim, caption_image, chunk=7) == recall_at_k(sim, caption_image)
    with pytest.raises(ValueError, match="caption_image"):
        recall_at_k(sim, caption_image[:-1])
