import math

import pytest
import torch

from lors_distill.core.modality import mean_pairwise_distance, modality_numbers, pca_basis


def test_numbers_of_a_hand_made_embedding_set():
    # three orthogonal images, each paired with itself: paired cosine 1, every distance sqrt 2
    image = torch.eye(3)
    numbers = modality_numbers(image, image.clone())
    assert numbers["paired_cosine"] == pytest.approx(1.0)
    assert numbers["image_spread"] == pytest.approx(math.sqrt(2))
    assert numbers["text_spread"] == pytest.approx(math.sqrt(2))
    # collapse: every text at one point, orthogonal to every image
    text = torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand(3, 4)
    wide = torch.cat([image, torch.zeros(3, 1)], dim=1)
    collapsed = modality_numbers(wide, text)
    assert collapsed == pytest.approx(
        {"paired_cosine": 0.0, "image_spread": math.sqrt(2), "text_spread": 0.0}
    )
    # a pair of opposite points and an unrelated one: (2 + sqrt2 + sqrt2) * 2 / 6
    points = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    assert mean_pairwise_distance(points) == pytest.approx((2 + 2 * math.sqrt(2)) / 3)
    half = modality_numbers(points, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    assert half["paired_cosine"] == pytest.approx((1 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="at least two"):
        mean_pairwise_distance(torch.ones(1, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        modality_numbers(torch.ones(2, 3), torch.ones(3, 3))


def test_pca_basis_finds_the_spread_direction_with_a_fixed_sign():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(500, 3, generator=g) * torch.tensor([5.0, 1.0, 0.1])
    mean, basis = pca_basis(data)
    assert basis.shape == (3, 2)
    assert abs(float(basis[0, 0])) > 0.99
    assert float(basis[0, 0]) > 0
    assert abs(float(basis[1, 1])) > 0.99
    torch.testing.assert_close(mean.float(), data.mean(0))
    _, flipped = pca_basis(-data)  # the same plane, the same signs
    torch.testing.assert_close(flipped, basis)
