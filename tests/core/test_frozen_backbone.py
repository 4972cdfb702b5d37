"""The frozen-backbone protocol (RepBlend's): an image head on a fixed backbone, experts,
matching and evaluation that train the two heads only."""

import pytest
import torch

from lors_distill.core.bundle import TensorBundle
from lors_distill.core.data import Normalizer
from lors_distill.core.distill import ExpertBank, TrajectoryMatcher
from lors_distill.core.distill.matcher import FastPath
from lors_distill.core.evaluate import SmallSet, train_on_small_set
from lors_distill.core.experts import train_expert
from lors_distill.core.flat import ParameterLayout, flatten_parameters
from lors_distill.core.models import ModelRecipe, backbone_digest
from lors_distill.core.similarity import IdentitySimilarity
from tests.core.test_distill import BLEND_ON, matching_config, synthetic
from tests.core.test_evaluate import CONFIG as EVALUATION
from tests.core.test_experts import augment, scene_split, training_config

FINE_TUNE = ModelRecipe.convnet(16, 48, width=8, depth=2)
NORMALIZER = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
CPU = torch.device("cpu")


def backbone_bundle(seed: int = 7) -> TensorBundle:
    """A backbone: the image encoder of a (here untrained) fine-tuning model."""
    encoder = FINE_TUNE.build(seed).image_encoder
    return TensorBundle({k: v.clone() for k, v in encoder.state_dict().items()})


BACKBONE = backbone_bundle()
FROZEN = FINE_TUNE.frozen(BACKBONE)


def same_weights(module: torch.nn.Module, bundle: TensorBundle) -> bool:
    state = module.state_dict()
    return state.keys() == bundle.tensors.keys() and all(
        torch.equal(state[k], bundle[k]) for k in state
    )


def test_the_frozen_model_has_an_image_head_and_trains_heads_only():
    model = FROZEN.build(0, backbone=BACKBONE)
    layout = ParameterLayout.of(model)
    assert {name.split(".")[0] for name in layout.names} == {"image_head", "text_head"}
    assert layout.names[0].startswith("image_head.")  # the image branch first
    assert layout.image_size == sum(p.numel() for p in model.image_head.parameters())
    dim = model.image_head.project.in_features
    assert model.image_head.project.out_features == dim == model.text_head.fc.out_features
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert same_weights(model.image_encoder, BACKBONE)
    model.train()
    assert model.training
    assert not model.image_encoder.training
    # full fine-tuning is unchanged: no head, the encoder trains
    plain = FINE_TUNE.build(0)
    assert plain.image_head is None
    assert not plain.frozen_backbone
    assert all(
        n.split(".")[0] in ("image_encoder", "text_head") for n in ParameterLayout.of(plain).names
    )


def test_a_frozen_recipe_needs_its_own_backbone():
    with pytest.raises(ValueError, match="give it the backbone bundle"):
        FROZEN.build(0)
    with pytest.raises(ValueError, match="not the one this model was trained with"):
        FROZEN.build(0, backbone=backbone_bundle(seed=8))
    assert FROZEN.backbone == backbone_digest(BACKBONE)
    assert ModelRecipe.from_json(FROZEN.to_json()) == FROZEN
    # a full fine-tuning recipe writes what it wrote before the protocol existed
    assert "frozen_backbone" not in FINE_TUNE.to_json()
    assert ModelRecipe.from_json(FINE_TUNE.to_json()) == FINE_TUNE


@pytest.fixture(scope="module")
def data():
    return scene_split(128, 0), scene_split(32, 1)


@pytest.mark.parametrize("cache", [True, False])
def test_frozen_experts_record_heads_only_and_leave_the_backbone_byte_identical(data, cache):
    train, val = data
    model = FROZEN.build(3, backbone=BACKBONE)
    result = train_expert(
        model, train, val, training_config(3), NORMALIZER, 3, CPU, cache_features=cache
    )
    layout = ParameterLayout.of(model)
    assert result.trajectory.shape == (4, layout.size)
    assert torch.equal(result.trajectory[-1], flatten_parameters(model))
    assert not torch.equal(result.trajectory[-1], result.trajectory[0])  # the heads moved
    assert result.train_loss[-1] < result.train_loss[0]
    assert same_weights(model.image_encoder, BACKBONE)  # byte for byte


def test_cached_features_train_as_the_backbone_would_without_augmentation(data):
    """With augmentation off, caching the backbone's features changes nothing but the cost."""
    train, val = data
    runs = []
    config = training_config(2, augment=augment())  # no crop, no flip
    for cache in (True, False):
        model = FROZEN.build(3, backbone=BACKBONE)
        result = train_expert(model, train, val, config, NORMALIZER, 3, CPU, cache_features=cache)
        runs.append(result)
    torch.testing.assert_close(runs[0].trajectory, runs[1].trajectory, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs a frozen backbone"):
        train_expert(
            FINE_TUNE.build(0),
            train,
            val,
            training_config(1),
            NORMALIZER,
            0,
            CPU,
            cache_features=True,
        )


def frozen_trajectory(seed=0, epochs=3):
    start = flatten_parameters(FROZEN_TINY.build(seed, backbone=TINY_BACKBONE))
    g = torch.Generator().manual_seed(100 + seed)
    steps = [torch.zeros_like(start)]
    for _ in range(epochs):
        steps.append(steps[-1] + 0.02 * torch.randn(start.shape, generator=g))
    return start + torch.stack(steps)


# the matching tests' shapes (8 px images, 6-d texts), on a frozen backbone
TINY = ModelRecipe.convnet(8, 6, width=4, depth=1)
TINY_BACKBONE = TensorBundle(dict(TINY.build(11).image_encoder.state_dict()))
FROZEN_TINY = TINY.frozen(TINY_BACKBONE)


def frozen_match(mode, backbone_once=True, **overrides):
    model = FROZEN_TINY.build(0, backbone=TINY_BACKBONE)
    matcher = TrajectoryMatcher(
        model,
        ParameterLayout.of(model),
        matching_config(grad_mode=mode, **overrides),
        FastPath(backbone_once=backbone_once),
    )
    syn = synthetic()
    trajectory = frozen_trajectory()
    losses = matcher.match(syn, trajectory[0], trajectory[1], torch.Generator().manual_seed(5))
    grads = {name: p.grad.clone() for name, p in syn.named_parameters() if p.grad is not None}
    return model, losses, grads


@pytest.mark.parametrize("mode", ["tesla", "tesla_one_graph", "full"])
@pytest.mark.parametrize("blend", [{"enabled": False, "alpha": 1.0}, BLEND_ON])
def test_backbone_once_is_the_gradient_of_a_backbone_pass_per_step(mode, blend):
    model, once_losses, once = frozen_match(mode, True, blend=blend)
    _, step_losses, per_step = frozen_match(mode, False, blend=blend)
    assert once.keys() == per_step.keys()
    assert {"images", "texts", "lrs"} <= set(once)
    for name in once_losses:
        torch.testing.assert_close(once_losses[name], step_losses[name])
    for name in once:
        assert once[name].abs().sum() > 0, name  # pixels get gradients through the backbone
        torch.testing.assert_close(once[name], per_step[name], rtol=1e-4, atol=1e-7)
    assert same_weights(model.image_encoder, TINY_BACKBONE)
    assert all(p.grad is None for p in model.image_encoder.parameters())


def test_frozen_tesla_equals_tesla_one_graph_with_blending():
    _, tesla_losses, tesla = frozen_match("tesla", blend=BLEND_ON)
    _, graph_losses, graph = frozen_match("tesla_one_graph", blend=BLEND_ON)
    for name in tesla_losses:
        torch.testing.assert_close(tesla_losses[name], graph_losses[name])
    assert tesla.keys() == graph.keys()
    for name in tesla:
        torch.testing.assert_close(tesla[name], graph[name], rtol=1e-4, atol=1e-7)


def test_the_expert_bank_of_frozen_experts_holds_heads_only():
    model = FROZEN_TINY.build(0, backbone=TINY_BACKBONE)
    bank = ExpertBank([frozen_trajectory(0), frozen_trajectory(1)], 2, CPU)
    assert bank.snapshots.shape[-1] == ParameterLayout.of(model).size
    assert bank.snapshots.shape[-1] < sum(p.numel() for p in model.parameters())


def test_frozen_evaluation_trains_the_heads_on_the_fixed_backbone():
    train = scene_split(64, 0)
    order, offsets, _ = train.captions_by_image()
    small = SmallSet(
        NORMALIZER(train.images),
        train.text[order[offsets]],
        IdentitySimilarity(64),
        torch.tensor([0.05, 0.05]),
    )
    model = FROZEN.build(1, backbone=BACKBONE)
    heads = flatten_parameters(model)
    losses = train_on_small_set(model, small, EVALUATION.updated(epochs=8), 1, CPU)
    assert losses[-1] < losses[0]
    assert not torch.equal(flatten_parameters(model), heads)
    assert same_weights(model.image_encoder, BACKBONE)


def test_a_pretrained_backbone_needs_pretrained_weights():
    from lors_distill.core.config import ParameterError
    from lors_distill.pipelines.frozen.nodes import make_backbone
    from tests.params import section

    frozen = section("frozen").updated(backbone="pretrained")
    with pytest.raises(ParameterError, match="model.pretrained is false"):
        make_backbone(None, None, None, None, section("model"), section("experts"), frozen)
