"""Fast-path switches: TF32 scoping and what ``auto`` resolves to per device."""

import json
import os
import platform
import sys

import pytest
import torch

from lors_distill.core import device as device_module
from lors_distill.core.config import parse_section
from lors_distill.core.device import seeded_rng, tf32_matmuls
from lors_distill.core.distill import setup
from tests.params import base_params
from tests.processes import run_ok

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
    monkeypatch.setattr(setup, "bf16_supported", lambda _device: native_bf16)
    config = parse_section("distillation", {**base_params()["distillation"], **overrides})
    matching = setup.fast_path(config, torch.device(device))
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


_TRAIN_AND_REPORT = """
import json, sys, torch
from lors_distill.core.device import keep_freed_memory
tuned = keep_freed_memory()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(8, 8),
                          torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 64 * 64, 4))
optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
for _ in range(3):  # tensors of 1 MiB and more: served by mmap under the default allocator
    x = torch.randn(32, 3, 64, 64)
    optimizer.zero_grad()
    net(x).square().mean().backward()
    optimizer.step()
state = torch.cat([p.detach().flatten() for p in net.parameters()])
again = keep_freed_memory()
print(json.dumps({"tuned": tuned, "again": again, "bytes": state.numpy().tobytes().hex()}))
"""


def _train_in_child(env_value: str) -> dict:
    env = {**os.environ, "LORS_KEEP_FREED_MEMORY": env_value}
    out = run_ok([sys.executable, "-c", _TRAIN_AND_REPORT], 120, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory tunes glibc's allocator only",
)
def test_keep_freed_memory_tunes_glibc_changes_no_number_and_can_be_turned_off():
    tuned, default = _train_in_child("1"), _train_in_child("0")
    assert (tuned["tuned"], tuned["again"]) == (True, True)
    assert (default["tuned"], default["again"]) == (False, False)
    # the allocator decides where tensors live, never what they hold
    assert tuned["bytes"] == default["bytes"]


def test_the_process_setup_hook_runs_before_every_node(monkeypatch):
    from lors_distill import hooks, settings

    calls, threads = [], []
    monkeypatch.setattr(hooks, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(hooks.torch, "set_num_threads", threads.append)
    (hook,) = [h for h in settings.HOOKS if isinstance(h, hooks.ProcessSetupHook)]
    hook.before_node_run()  # the main process keeps torch's thread count
    assert (calls, threads) == ([1], [])
    # a ParallelRunner worker: one thread unless LORS_WORKER_THREADS says otherwise
    monkeypatch.setattr(hooks.multiprocessing, "parent_process", lambda: object())
    monkeypatch.delenv("LORS_WORKER_THREADS", raising=False)
    hook.before_node_run()
    monkeypatch.setenv("LORS_WORKER_THREADS", "3")
    hook.before_node_run()
    assert (calls, threads) == ([1, 1, 1], [1, 3])


@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_worker_threads_rejects_what_is_not_a_positive_integer(monkeypatch, value):
    monkeypatch.setenv("LORS_WORKER_THREADS", value)
    with pytest.raises(ValueError, match="LORS_WORKER_THREADS must be a positive integer"):
        device_module.worker_threads()
