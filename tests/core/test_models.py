import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lors_distill.core.models import (
    AvgPool2x2,
    ConvNet,
    ConvNetConfig,
    DualEncoder,
    ImageEncoderSpec,
    ModelRecipe,
    build_image_encoder,
    default_normalization,
)
from tests.tiny_models import TINY_CLIP


def tiny_recipe(name="convnet", pretrained=False, size=16) -> ModelRecipe:
    spec = ImageEncoderSpec(
        name, size, pretrained, ConvNetConfig(width=8, depth=2, norm="instancenorm")
    )
    return ModelRecipe(spec, text_dim=12, dropout=0.1, temperature=0.07)


def test_convnet_shapes_and_blocks():
    net = ConvNet(ConvNetConfig(width=8, depth=3, norm="instancenorm"), 32)
    assert net.output_dim == 8 * 4 * 4
    assert net(torch.randn(5, 3, 32, 32)).shape == (5, 128)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == 3
    assert all(n.num_groups == n.num_channels == 8 for n in norms)  # instance norm
    with pytest.raises(ValueError, match="divisible"):
        ConvNet(ConvNetConfig(width=8, depth=3, norm="none"), 20)


def test_dual_encoder_logits_are_scaled_cosines():
    model = tiny_recipe().build(seed=0).eval()
    images, text = torch.randn(4, 3, 16, 16), torch.randn(6, 12)
    logits = model(images, text)
    assert logits.shape == (4, 6)
    expected = model.encode_image(images) @ model.encode_text(text).T / 0.07
    torch.testing.assert_close(logits, expected)
    assert logits.abs().max() <= 1 / 0.07 + 1e-4
    torch.testing.assert_close(model.encode_text(text).norm(dim=1), torch.ones(6))


def test_text_head_structure():
    head = tiny_recipe().build(seed=0).text_head.eval()
    x = torch.randn(3, 12)
    h = head.project(x)
    expected = head.norm(h + head.fc(torch.nn.functional.gelu(h)))
    torch.testing.assert_close(head(x), expected)
    assert head.project.out_features == head.fc.out_features == 8 * 4 * 4


def test_recipe_seeded_and_round_trips():
    recipe = tiny_recipe()
    a, b, c = recipe.build(1), recipe.build(1), recipe.build(2)
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.text_head.project.weight, c.text_head.project.weight)
    assert ModelRecipe.from_json(recipe.to_json()) == recipe


def test_unknown_encoder_and_bad_spec():
    with pytest.raises(ValueError, match="unknown image encoder 'resnet'"):
        build_image_encoder(ImageEncoderSpec("resnet", 16))
    with pytest.raises(ValueError, match="timm:<model name>"):
        build_image_encoder(ImageEncoderSpec("timm:", 16))
    with pytest.raises(ValueError, match="no hub weights"):
        build_image_encoder(
            ImageEncoderSpec(
                "convnet", 16, pretrained=True, convnet=ConvNetConfig(width=8, depth=2, norm="none")
            )
        )
    with pytest.raises(ValueError, match="needs its shape"):
        build_image_encoder(ImageEncoderSpec("convnet", 16))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_encoder_loads_local_checkpoint(tmp_path, suffix):
    import timm

    torch.manual_seed(7)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    state = source.state_dict()  # includes the classifier head, which must be ignored
    path = tmp_path / f"resnet{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    module, dim = build_image_encoder(ImageEncoderSpec("timm:test_resnet", 32, str(path)))
    assert dim == source.num_features
    for name, value in module.state_dict().items():
        assert torch.equal(value, state[name]), name
    fresh, _ = build_image_encoder(ImageEncoderSpec("timm:test_resnet", 32, False))
    first = next(iter(module.state_dict()))
    assert not torch.equal(fresh.state_dict()[first], state[first])
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_checkpoint_mismatch_is_an_error(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"something.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="does not match"):
        build_image_encoder(ImageEncoderSpec("timm:test_resnet", 32, str(path)))
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        build_image_encoder(ImageEncoderSpec("timm:test_resnet", 32, str(tmp_path / "nowhere.pt")))


def test_open_clip_visual_tower_from_checkpoint(tiny_clip):
    model, checkpoint = tiny_clip
    module, dim = build_image_encoder(ImageEncoderSpec(f"open_clip:{TINY_CLIP}:{checkpoint}", 32))
    assert dim == 32
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(module.eval()(images), model.visual.eval()(images))
    mean, std = default_normalization(f"open_clip:{TINY_CLIP}", module, torch.zeros(1, 3, 2, 2))
    assert len(mean) == len(std) == 3


def test_dual_encoder_with_timm_backbone():
    recipe = tiny_recipe("timm:test_nfnet", size=32)
    model = recipe.build(seed=0)
    assert isinstance(model, DualEncoder)
    assert model(torch.randn(2, 3, 32, 32), torch.randn(2, 12)).shape == (2, 2)
    mean, _ = default_normalization("timm:test_nfnet", model.image_encoder, torch.zeros(1, 3, 2, 2))
    assert len(mean) == 3


def test_convnet_normalization_is_train_statistics():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[:, 0] = 255
    images[1, 1] = 255
    mean, std = default_normalization("convnet", torch.nn.Identity(), images)
    assert mean == pytest.approx((1.0, 0.5, 0.0))
    assert std[2] == pytest.approx(1e-3)  # clamped, never zero


def test_pixel_normalization_choices():
    from lors_distill.core.models import PIXEL_STATISTICS, pixel_normalization

    images = torch.full((4, 3, 8, 8), 51, dtype=torch.uint8)  # 0.2 everywhere
    module = torch.nn.Identity()
    mean, std = pixel_normalization("encoder", "convnet", module, images)  # the train split's
    assert mean == pytest.approx((0.2, 0.2, 0.2))
    assert std == pytest.approx((1e-3, 1e-3, 1e-3))  # a constant image: the floor
    assert pixel_normalization("clip", "convnet", module, images) == PIXEL_STATISTICS["clip"]
    assert PIXEL_STATISTICS["clip"][0] == (0.48145466, 0.4578275, 0.40821073)
    with pytest.raises(ValueError, match="unknown pixel normalization 'cifar'"):
        pixel_normalization("cifar", "convnet", module, images)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7, 5, 32, 32), (3, 4, 16, 8), (2, 3, 2, 2)])
def test_avg_pool_2x2_is_bit_identical_to_avg_pool2d(shape, dtype):
    # values, gradient and the gradient of the gradient (distillation differentiates through
    # the inner steps) all equal PyTorch's kernels exactly, not just to a tolerance
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=dtype, generator=g)
    out_grad = torch.randn(
        shape[0], shape[1], shape[2] // 2, shape[3] // 2, dtype=dtype, generator=g
    )
    outer = torch.randn(shape, dtype=dtype, generator=g)
    results = []
    for pool in (AvgPool2x2(), lambda t: F.avg_pool2d(t, kernel_size=2, stride=2)):
        xs = x.clone().requires_grad_(True)
        v = out_grad.clone().requires_grad_(True)
        y = pool(xs)
        (grad_x,) = torch.autograd.grad(y, xs, v, create_graph=True)
        grad_v, grad_x2 = torch.autograd.grad((grad_x * outer).sum(), (v, xs), allow_unused=True)
        with torch.no_grad():
            plain = pool(x)
        results.append((y.detach(), plain, grad_x.detach(), grad_v))
        # the pool is linear: no second-order term in x (PyTorch returns zeros, ours nothing)
        assert grad_x2 is None or not grad_x2.any()
    for mine, reference in zip(*results, strict=True):
        assert mine.dtype == reference.dtype
        assert mine.shape == reference.shape
        assert torch.equal(mine, reference)
    assert not torch.equal(results[0][3], torch.zeros_like(results[0][3]))


def test_avg_pool_2x2_falls_back_where_the_strided_path_does_not_apply():
    pool = AvgPool2x2()
    odd = torch.randn(2, 3, 5, 6)  # odd height: avg_pool2d floors it
    assert torch.equal(pool(odd), F.avg_pool2d(odd, 2, 2))
    transposed = torch.randn(2, 3, 8, 8).transpose(2, 3)  # not contiguous
    assert torch.equal(pool(transposed), F.avg_pool2d(transposed, 2, 2))
    half = torch.randn(2, 3, 8, 8).bfloat16()
    assert torch.equal(pool(half), F.avg_pool2d(half, 2, 2))


def test_convnet_pool_matches_nn_avg_pool_in_outputs_and_gradients():
    config = ConvNetConfig(width=8, depth=3, norm="instancenorm")
    torch.manual_seed(0)
    mine = ConvNet(config, 32)
    reference = ConvNet(config, 32)
    reference.load_state_dict(mine.state_dict())  # no pool state: the same keys either way
    for i, layer in enumerate(reference.features):
        if isinstance(layer, AvgPool2x2):
            reference.features[i] = torch.nn.AvgPool2d(kernel_size=2, stride=2)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for net in (mine, reference):
        pixels = images.clone().requires_grad_(True)
        out = net(pixels)
        grads.append(
            (out.detach(), *torch.autograd.grad(out.square().sum(), [pixels, *net.parameters()]))
        )
    assert sum(isinstance(m, AvgPool2x2) for m in mine.modules()) == 3
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def registered_encoder():
    """A user's image-encoder family, registered for one test and removed after it."""
    from lors_distill.core import models

    def build(spec, argument):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(int(argument))), int(
            argument
        )

    def statistics(module, train_images):
        return (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)

    models.register_image_encoder("linear", usage="linear:<width>", normalization=statistics)(build)
    yield "linear"
    del models._REGISTRY["linear"]


def test_a_registered_encoder_validates_builds_and_states_its_normalization(registered_encoder):
    from lors_distill.core.config import parse_section
    from lors_distill.core.models import check_image_encoder_name, pixel_normalization
    from tests.params import base_params

    model = base_params()["model"]
    model["image_encoder"] = "linear:7"
    assert parse_section("model", model).image_encoder == "linear:7"
    module, dim = build_image_encoder(ImageEncoderSpec("linear:7", 4))
    assert dim == 7
    assert module(torch.zeros(2, 3, 4, 4)).shape == (2, 7)
    images = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    assert pixel_normalization("encoder", "linear:7", module, images) == (
        (0.1, 0.2, 0.3),
        (0.4, 0.5, 0.6),
    )
    with pytest.raises(
        ValueError, match=r"'open_clip:<model>\[:<pretrained>\]' or 'linear:<width>'"
    ):
        check_image_encoder_name("linear")  # takes an argument


def test_names_no_family_registers_fail_validation_with_the_registered_ones():
    from lors_distill.core.config import ParameterError, parse_section
    from tests.params import base_params

    for name in ["resnet:18", "convnet:8", "convnet:", "timm:", "timm"]:
        model = base_params()["model"]
        model["image_encoder"] = name
        with pytest.raises(ParameterError, match=r"model\.image_encoder.*use 'convnet', 'timm"):
            parse_section("model", model)
    evaluation = base_params()["evaluation"]
    evaluation["cross_arch"] = {
        "image_encoder": "resnet",
        "convnet": {"width": 8, "depth": 2, "norm": "none"},
    }
    with pytest.raises(ParameterError, match=r"evaluation\.cross_arch\.image_encoder"):
        parse_section("evaluation", evaluation)


def test_the_convnet_shortcut_is_the_hand_written_recipe():
    assert ModelRecipe.convnet(16, 12, width=8, depth=2) == tiny_recipe()
    plain = ModelRecipe.convnet(8, 6, width=4, depth=1, norm="none", dropout=0.0)
    assert plain.encoder.convnet == ConvNetConfig(width=4, depth=1, norm="none")
    assert (plain.dropout, plain.temperature) == (0.0, 0.07)
