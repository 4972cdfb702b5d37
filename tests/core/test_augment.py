import torch

from lors_distill.core.augment import (
    AugmentConfig,
    _blip_op,
    blip_rand_augment_uint8,
    crop_and_flip,
    rand_augment_uint8,
)


def config(**overrides) -> AugmentConfig:
    values = dict(
        random_resized_crop=False,
        crop_scale=(0.5, 1.0),
        flip=False,
        rand_augment=False,
        rand_augment_ops=2,
        rand_augment_magnitude=5,
        rand_augment_style="torchvision",
    )
    values.update(overrides)
    return AugmentConfig(**values)


def test_disabled_is_identity():
    images = torch.randn(3, 3, 8, 8)
    out = crop_and_flip(images, config(), torch.Generator().manual_seed(0))
    assert out is images


def test_flip_mirrors_exactly_some_images():
    images = torch.randn(64, 3, 8, 8)
    out = crop_and_flip(images, config(flip=True), torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, images, strict=True)]
    kept = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_crop_is_seeded_and_zooms_in():
    images = torch.zeros(16, 1, 16, 16)
    images[:, :, :, :8] = 1.0  # left half bright
    a = crop_and_flip(images, config(random_resized_crop=True), torch.Generator().manual_seed(3))
    b = crop_and_flip(images, config(random_resized_crop=True), torch.Generator().manual_seed(3))
    c = crop_and_flip(images, config(random_resized_crop=True), torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == images.shape
    # crops change how much of the image is bright, but never invent values
    assert a.min() >= -1e-6
    assert a.max() <= 1 + 1e-6
    assert a.mean(dim=(1, 2, 3)).std() > 0.01


def test_rand_augment_seeded_uint8():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    a = rand_augment_uint8(images, 2, 9, torch.Generator().manual_seed(0))
    b = rand_augment_uint8(images, 2, 9, torch.Generator().manual_seed(0))
    assert a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, images)


def test_blip_rand_augment_is_seeded_and_applies_each_op_half_the_time():
    images = torch.randint(0, 256, (200, 3, 16, 16), dtype=torch.uint8)
    a = blip_rand_augment_uint8(images, 2, 5, torch.Generator().manual_seed(0))
    b = blip_rand_augment_uint8(images, 2, 5, torch.Generator().manual_seed(0))
    assert a.dtype == torch.uint8
    assert torch.equal(a, b)
    unchanged = sum(torch.equal(x, y) for x, y in zip(a, images, strict=True))
    # each draw leaves the image as it is when skipped (p 0.5) or when it is a no-op (identity;
    # brightness and sharpness, whose factor is 1.0 at magnitude 5): 0.5 + 0.5 * 3/10 = 0.65,
    # so 0.42 of the images (85 of 200; autocontrast adds a few: 81 measured with this seed)
    assert 60 < unchanged < 110


def test_blip_ops_at_magnitude_5():
    image = torch.zeros(3, 21, 21, dtype=torch.uint8)
    image[:, 10, 10] = 200
    # brightness / sharpness factor 1.0 at level 5: no change
    assert torch.equal(_blip_op(image, "brightness", 5.0, 1.0), image)
    # translate by 5 pixels (half of 10), the uncovered border filled with grey 128
    moved = _blip_op(image, "translate_x", 5.0, 1.0)
    assert moved[0, 10, 15] == 200
    assert moved[0, 10, 0] == 128
    rotated = _blip_op(image, "rotate", 5.0, -1.0)  # 15 degrees about the centre
    assert rotated[0, 10, 10] == 200
    assert rotated[0, 0, 0] == 128
