import pytest
import torch

from lors_distill.core.augment import AugmentConfig
from lors_distill.core.config import ExpertsParams
from lors_distill.core.data import ImageTextSplit, Normalizer
from lors_distill.core.experts import epoch_pairs, train_expert
from lors_distill.core.flat import flatten_parameters
from lors_distill.core.images import hwc_to_tensor
from lors_distill.core.models import ModelRecipe
from lors_distill.core.scenes import generate_scenes
from tests.params import section


def scene_split(count: int, seed: int, text_dim: int = 48) -> ImageTextSplit:
    """Generated scenes with bag-of-words caption vectors (fast stand-in for MiniLM)."""
    images, captions, _ = generate_scenes(count, 16, seed, num_captions=2)
    vocabulary: dict[str, int] = {}
    rows, owners = [], []
    for index, image_captions in enumerate(captions):
        for caption in image_captions:
            vector = torch.zeros(text_dim)
            for word in caption.lower().replace(",", " ").split():
                vector[hash_word(word, vocabulary) % text_dim] += 1.0
            rows.append(vector / vector.norm())
            owners.append(index)
    return ImageTextSplit(hwc_to_tensor(images), torch.stack(rows), torch.tensor(owners))


def hash_word(word: str, vocabulary: dict[str, int]) -> int:
    return vocabulary.setdefault(word, len(vocabulary))


def training_config(epochs: int = 4, **overrides) -> ExpertsParams:
    values = dict(
        epochs=epochs,
        batch_size=32,
        lr_image=0.1,
        lr_text=0.1,
        momentum=0.0,
        weight_decay=0.0,
        captions_per_epoch="random_one",
        augment=augment(flip=True),
        mixed_precision=False,
        eval_batch_size=64,
    )
    values.update(overrides)
    return section("experts", **values)


def augment(**switches) -> AugmentConfig:
    """The shipped augmentation with crop, flip and RandAugment off, but for ``switches``."""
    off = dict(random_resized_crop=False, flip=False, rand_augment=False)
    return section("experts").augment.updated(**{**off, **switches})


RECIPE = ModelRecipe.convnet(16, 48, width=16, depth=2)


@pytest.fixture(scope="module")
def data():
    return scene_split(256, 0), scene_split(32, 1)


def run(data, seed=0, epochs=4, **overrides):
    train, val = data
    model = RECIPE.build(seed)
    normalizer = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    result = train_expert(
        model,
        train,
        val,
        training_config(epochs, **overrides),
        normalizer,
        seed,
        torch.device("cpu"),
    )
    return model, result


def test_loss_falls_and_recall_beats_chance(data):
    model, result = run(data, epochs=6)
    assert result.trajectory.shape == (7, sum(p.numel() for p in model.parameters()))
    assert torch.equal(result.trajectory[-1], flatten_parameters(model))
    assert result.train_loss[-1] < result.train_loss[0] - 0.2
    # chance for R@10 with 32 validation images is 10/32 = 31%
    assert result.val_recall["ir@10"] > 40.0
    assert result.val_recall["tr@10"] > 40.0
    assert result.images_per_second > 0


def test_trajectory_reproducible_from_seed(data):
    _, a = run(data, seed=3, epochs=2)
    _, b = run(data, seed=3, epochs=2)
    _, c = run(data, seed=4, epochs=2)
    assert torch.equal(a.trajectory, b.trajectory)
    assert torch.equal(a.trajectory[0], flatten_parameters(RECIPE.build(3)))
    assert not torch.equal(a.trajectory, c.trajectory)
    assert not torch.equal(a.trajectory[1], a.trajectory[0])


def test_epoch_pairs_modes(data):
    train, _ = data
    images, captions = epoch_pairs(train, "random_one", torch.Generator().manual_seed(0))
    assert sorted(images.tolist()) == list(range(train.num_images))
    assert torch.equal(train.caption_image[captions], images)
    images, captions = epoch_pairs(train, "all", torch.Generator().manual_seed(0))
    assert sorted(captions.tolist()) == list(range(train.text.shape[0]))
    assert torch.equal(train.caption_image[captions], images)


def test_momentum_and_augmentation_options_change_the_path(data):
    _, plain = run(data, epochs=1)
    _, momentum = run(data, epochs=1, momentum=0.5)
    crop = augment(random_resized_crop=True, crop_scale=(0.5, 1.0), flip=True)
    _, cropped = run(data, epochs=1, augment=crop)
    assert not torch.equal(plain.trajectory[1], momentum.trajectory[1])
    assert not torch.equal(plain.trajectory[1], cropped.trajectory[1])
