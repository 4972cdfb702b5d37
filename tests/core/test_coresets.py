import torch

from lors_distill.core.coresets import (
    first_captions,
    forgetting_counts,
    random_captions,
    select_forgetting,
    select_herding,
    select_k_center,
)
from lors_distill.core.data import ImageTextSplit
from lors_distill.core.models import ConvNet, ConvNetConfig, DualEncoder


def test_k_center_picks_spread_points():
    # two tight clusters far apart plus one outlier: 3 centers must hit all three groups
    cluster_a = torch.randn(20, 2) * 0.01
    cluster_b = torch.randn(20, 2) * 0.01 + torch.tensor([10.0, 0.0])
    outlier = torch.tensor([[0.0, 50.0]])
    features = torch.cat([cluster_a, cluster_b, outlier])
    chosen = select_k_center(features, 3, torch.Generator().manual_seed(0)).tolist()
    groups = {0 if i < 20 else 1 if i < 40 else 2 for i in chosen}
    assert groups == {0, 1, 2}
    assert len(set(chosen)) == 3


def test_herding_matches_the_mean_better_than_random():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(500, 8, generator=generator) + torch.linspace(0, 3, 8)
    target = features.mean(0)
    chosen = select_herding(features, 10)
    assert len(set(chosen.tolist())) == 10
    herding_error = (features[chosen].mean(0) - target).norm()
    random_errors = [
        (features[torch.randperm(500, generator=generator)[:10]].mean(0) - target).norm()
        for _ in range(50)
    ]
    assert herding_error < min(random_errors)


def test_forgetting_prefers_most_forgotten():
    events = torch.tensor([0, 3, 1, 3, 2, 0])
    chosen = select_forgetting(events, 3, torch.Generator().manual_seed(0)).tolist()
    assert set(chosen[:2]) == {1, 3}
    assert chosen[2] == 4


def test_caption_choices_belong_to_their_image():
    split = ImageTextSplit(
        torch.zeros(3, 3, 2, 2, dtype=torch.uint8),
        torch.randn(7, 4),
        torch.tensor([2, 0, 1, 0, 2, 1, 0]),
    )
    assert first_captions(split).tolist() == [1, 2, 0]
    picks = random_captions(split, torch.Generator().manual_seed(1))
    assert split.caption_image[picks].tolist() == [0, 1, 2]


def test_forgetting_counts_do_not_depend_on_the_global_rng():
    """Dropout in the counting model draws from the node's generator, not the process RNG: a
    resumed run (other nodes before it, or none) must choose the same forgetting coreset."""
    data = torch.Generator().manual_seed(1)
    split = ImageTextSplit(
        images=torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8, generator=data),
        text=torch.randn(48, 6, generator=data),
        caption_image=torch.arange(24).repeat(2),
    )

    def count(global_seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        encoder = ConvNet(ConvNetConfig(width=4, depth=2, norm="instancenorm"), 8)
        model = DualEncoder(encoder, encoder.output_dim, 6, dropout=0.5, temperature=0.07)
        torch.manual_seed(global_seed)
        before = torch.random.get_rng_state()
        events = forgetting_counts(
            model,
            split,
            lambda images: images.float() / 255,
            epochs=4,
            batch_size=8,
            lr=0.5,
            generator=torch.Generator().manual_seed(3),
            device=torch.device("cpu"),
        )
        assert torch.equal(torch.random.get_rng_state(), before)  # the process RNG is untouched
        return events

    first = count(global_seed=10)
    assert torch.equal(first, count(global_seed=99))
    assert first.sum() > 0  # events were counted: training and dropout really ran


def test_teacher_similarity_is_the_scaled_cosine_with_a_unit_diagonal():
    from lors_distill.core.coresets import teacher_similarity
    from lors_distill.core.models import ModelRecipe

    model = ModelRecipe.convnet(8, 6, width=4, depth=1, dropout=0.0).build(seed=0)
    generator = torch.Generator().manual_seed(1)
    images, texts = (
        torch.randn(5, 3, 8, 8, generator=generator),
        torch.randn(5, 6, generator=generator),
    )
    scaled = teacher_similarity(model, images, texts)
    with torch.no_grad():
        cosine = model.encode_image(images) @ model.encode_text(texts).T
    expected = (cosine - cosine.min()) / (cosine.max() - cosine.min())
    off = ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(scaled[off], expected[off])
    assert torch.equal(scaled.diagonal(), torch.ones(5))
    assert float(scaled.min()) >= 0.0
    assert float(scaled.max()) == 1.0
