import pytest
import torch

from lors_distill.core.flat import (
    ParameterLayout,
    flatten_parameters,
    functional_forward,
    load_flat,
)
from tests.core.test_models import tiny_recipe


def test_layout_orders_image_then_text():
    model = tiny_recipe().build(0)
    layout = ParameterLayout.of(model)
    assert layout.size == sum(p.numel() for p in model.parameters())
    first_text = layout.branches.index("text")
    assert set(layout.branches[:first_text]) == {"image"}
    assert set(layout.branches[first_text:]) == {"text"}
    assert layout.image_size == sum(p.numel() for p in model.image_encoder.parameters())
    slices = layout.branch_slices()
    assert slices["text"].stop - slices["text"].start == sum(
        p.numel() for p in model.text_head.parameters()
    )
    assert ParameterLayout.from_json(layout.to_json()) == layout


def test_flat_named_round_trip():
    model = tiny_recipe().build(0)
    layout = ParameterLayout.of(model)
    flat = flatten_parameters(model)
    named = layout.unflatten(flat)
    for name, param in model.named_parameters():
        assert torch.equal(named[name], param)
    assert torch.equal(layout.flatten(named), flat)
    other = tiny_recipe().build(1)
    load_flat(other, flat)
    assert torch.equal(flatten_parameters(other), flat)
    with pytest.raises(ValueError, match="shape"):
        layout.unflatten(flat[:-1])


def test_functional_forward_matches_module_and_is_differentiable():
    model = tiny_recipe().build(0).eval()
    layout = ParameterLayout.of(model)
    images, text = torch.randn(3, 3, 16, 16), torch.randn(3, 12)
    flat = flatten_parameters(model).requires_grad_(True)
    logits = functional_forward(model, layout, flat, images, text)
    torch.testing.assert_close(logits, model(images, text))
    logits.sum().backward()
    model.zero_grad()
    model(images, text).sum().backward()
    expected = layout.flatten({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(flat.grad, expected)
    # a different flat vector gives different outputs without touching the module
    shifted = functional_forward(model, layout, flat.detach() + 0.1, images, text)
    assert not torch.allclose(shifted, logits)
