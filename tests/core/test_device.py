"""Fast-path switches: TF32 scoping and what ``auto`` resolves to per device."""

import pytest
import torch

from lors_distill.core import device as device_module
from lors_distill.core.config import parse_section
from lors_distill.core.device import seeded_rng, tf32_matmuls
from lors_distill.pipelines.distillation import nodes
from tests.params import base_params

CUDA = torch.device("cuda")  # the flags are process settings: setting them needs no GPU


def _flags():
    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


def test_tf32_is_scoped_to_the_block_and_explicit_both_ways():
    before = _flags()
    with tf32_matmuls(CUDA, enabled=True):
        assert _flags() == ("tf32", "tf32")
    assert _flags() == before
    with tf32_matmuls(CUDA, enabled=False):  # cuDNN convolutions default to TF32
        assert _flags() == ("ieee", "ieee")
    assert _flags() == before
    with tf32_matmuls(torch.device("cpu"), enabled=True):
        assert _flags() == before


@pytest.mark.parametrize(
    ("device", "native_bf16", "overrides", "expected"),
    [
        ("cpu", False, {}, ("fp32", False)),
        ("cuda", True, {}, ("bf16", True)),
        ("cuda", False, {}, ("fp32", True)),  # pre-Ampere: no native bf16
        ("cuda", True, {"precision": "fp32", "channels_last": False}, ("fp32", False)),
        ("cpu", False, {"precision": "bf16", "channels_last": True}, ("bf16", True)),
    ],
)
def test_auto_resolves_per_device(monkeypatch, device, native_bf16, overrides, expected):
    monkeypatch.setattr(nodes, "bf16_supported", lambda _device: native_bf16)
    config = parse_section("distillation", {**base_params()["distillation"], **overrides})
    matching = nodes.fast_path(config, torch.device(device))
    assert (matching.precision, matching.channels_last) == expected


def test_bf16_supported_is_false_off_cuda():
    assert device_module.bf16_supported(torch.device("cpu")) is False


def test_seeded_rng_depends_on_the_seed_only_and_restores_the_process_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded_rng(7, torch.device("cpu")):
        first = torch.rand(4)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(10)  # a different process state going in
    with seeded_rng(7):
        assert torch.equal(torch.rand(4), first)
    with seeded_rng(8):
        assert not torch.equal(torch.rand(4), first)
