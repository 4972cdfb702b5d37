import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from lors_distill.core.blend import BlendConfig, Mix, draw_mix
from lors_distill.core.bundle import (
    BundleIntegrityError,
    TensorBundle,
    content_hash,
    load_bundle,
    save_bundle,
)
from lors_distill.core.config import DistillationParams
from lors_distill.core.distill import (
    DistillationDivergedError,
    Distiller,
    ExpertBank,
    FastPath,
    SyntheticSet,
    TrajectoryMatcher,
    init_synthetic_pairs,
    method_settings,
    run_distillation,
)
from lors_distill.core.distill.matcher import _mini_batches
from lors_distill.core.flat import ParameterLayout, flatten_parameters
from lors_distill.core.losses import soft_loss
from lors_distill.core.models import ModelRecipe
from lors_distill.core.similarity import (
    FullSimilarity,
    IdentitySimilarity,
    LowRankSimilarity,
    build_similarity,
    similarity_stats,
)
from tests.params import section

N, TEXT_DIM, SIZE = 12, 6, 8
RECIPE = ModelRecipe.convnet(SIZE, TEXT_DIM, width=4, depth=1)
OUTER = dict(lr_images=10.0, lr_texts=10.0, lr_lr=1e-3, lr_sim=1.0, momentum=0.5, min_inner_lr=1e-4)


def matching_config(**overrides) -> DistillationParams:
    """The ``distillation`` parameters of a tiny inner loop, outer SGD as :data:`OUTER`."""
    values = dict(
        **OUTER,
        syn_steps=4,
        expert_epochs=1,
        max_start_epoch=2,
        mini_batch_size=4,
        loss="wbce",
        merge_branches=False,
        grad_mode="tesla",
        mini_batch_remainder="keep",
    )
    values.update(overrides)
    return section("distillation", **{"num_pairs": N, **values})


def synthetic(kind="lowrank", seed=0, lr=0.05) -> SyntheticSet:
    g = torch.Generator().manual_seed(seed)
    sim = build_similarity(kind, N, rank=3, alpha=2.0, generator=g)
    if kind == "lowrank":  # make S != I so every path carries gradient
        with torch.no_grad():
            sim.right.normal_(generator=g)
    images = torch.randn(N, 3, SIZE, SIZE, generator=g)
    texts = torch.randn(N, TEXT_DIM, generator=g)
    return SyntheticSet(images, texts, lr, sim)


def fake_trajectories(seed=0, experts=2, epochs=3):
    """Trajectories that start at real initialisations and drift (stand-ins for experts)."""
    out = []
    for e in range(experts):
        start = flatten_parameters(RECIPE.build(seed + e))
        g = torch.Generator().manual_seed(100 + e)
        steps = [torch.zeros_like(start)]
        for _ in range(epochs):
            steps.append(steps[-1] + 0.02 * torch.randn(start.shape, generator=g))
        out.append(start + torch.stack(steps))
    return out


# ------------------------------------------------------------------ similarity


def test_lowrank_starts_at_identity_and_is_o_n_r():
    sim = LowRankSimilarity(1000, rank=10, alpha=3.0, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in sim.parameters()) == 1000 + 2 * 1000 * 10  # 21,000 << 10^6
    assert sum(p.numel() for p in FullSimilarity(1000).parameters()) == 1000 * 1000
    assert sum(p.numel() for p in IdentitySimilarity(1000).parameters()) == 0
    index = torch.tensor([5, 900, 17])
    torch.testing.assert_close(sim.block(index), torch.eye(3))
    assert torch.equal(sim.left.std() > 0.5, torch.tensor(True))


def test_blocks_are_sub_blocks_of_the_matrix():
    sim = synthetic("lowrank").similarity
    index = torch.tensor([7, 2, 11, 0])
    full = sim.matrix()
    torch.testing.assert_close(sim.block(index), full[index][:, index])
    expected = torch.diag(sim.diagonal) + (sim.alpha / sim.rank) * sim.left @ sim.right.T
    torch.testing.assert_close(full, expected)
    stats = similarity_stats(sim)
    off = full[~torch.eye(N, dtype=torch.bool)].mean()
    assert stats["s_diag_mean"] == pytest.approx(float(full.diagonal().mean()), rel=1e-5)
    assert stats["s_offdiag_mean"] == pytest.approx(float(off), rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="unknown similarity 'dense'"):
        build_similarity("dense", 3, 1, 1.0, torch.Generator())


# ------------------------------------------------------------------ matching gradients

BLEND_ON = {"enabled": True, "alpha": 1.0}


def grads_after_match(mode: str, kind: str = "lowrank", recipe=RECIPE, **overrides):
    model = recipe.build(0)
    layout = ParameterLayout.of(model)
    syn = synthetic(kind)
    matcher = TrajectoryMatcher(model, layout, matching_config(grad_mode=mode, **overrides))
    trajectory = fake_trajectories()[0]
    losses = matcher.match(syn, trajectory[0], trajectory[1], torch.Generator().manual_seed(5))
    return losses, {
        name: p.grad.clone() for name, p in syn.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("lowrank", {}),
        ("full", {"loss": "infonce"}),
        ("identity", {"merge_branches": True}),
        ("lowrank", {"blend": BLEND_ON}),  # RepBlend: the second pass must reuse each mix
        ("identity", {"blend": BLEND_ON, "merge_branches": True}),
    ],
)
def test_tesla_equals_tesla_one_graph(kind, overrides):
    tesla_losses, tesla = grads_after_match("tesla", kind, **overrides)
    graph_losses, graph = grads_after_match("tesla_one_graph", kind, **overrides)
    assert tesla_losses.keys() == graph_losses.keys() == {"loss", "loss_image", "loss_text"}
    for name in tesla_losses:
        torch.testing.assert_close(tesla_losses[name], graph_losses[name])
    assert tesla.keys() == graph.keys()
    expected = {"images", "texts", "lrs"} | ({"similarity.weight"} if kind == "full" else set())
    assert expected <= set(tesla)
    for name in tesla:
        assert tesla[name].abs().sum() > 0, name
        torch.testing.assert_close(tesla[name], graph[name], rtol=1e-4, atol=1e-7)


# no dropout: the hand-written loops below need no seeded masks
NO_DROPOUT = ModelRecipe(RECIPE.encoder, TEXT_DIM, 0.0, 0.07)


def hand_unrolled(syn, batches, theta_start, theta_target, *, exact: bool, merge=False):
    """The matching loss by a plain loop over ``torch.func.functional_call``, independent of
    TrajectoryMatcher. ``exact``: every step's parameters keep their graph (MTT); otherwise
    each gradient is taken at detached parameters and summed (TESLA's first-order quantity).
    Returns (data loss, per-branch loss sum)."""
    model = NO_DROPOUT.build(0).to(syn.images.dtype)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    image_size = sum(
        n for name, n in zip(names, sizes, strict=True) if name.startswith("image_encoder")
    )
    lrs = torch.cat([syn.lrs[0].expand(image_size), syn.lrs[1].expand(sum(sizes) - image_size)])
    theta = theta_start.clone().requires_grad_(True)
    total = torch.zeros_like(theta_start)
    for index in batches:
        current = theta if exact else theta.detach().requires_grad_(True)
        params = {
            n: t.view(shape)
            for n, t, shape in zip(names, current.split(sizes), shapes, strict=True)
        }
        logits = torch.func.functional_call(model, params, (syn.images[index], syn.texts[index]))
        loss = soft_loss("wbce")(logits, syn.similarity.block(index))
        (grad,) = torch.autograd.grad(loss, current, create_graph=True)
        if exact:
            theta = theta - lrs * grad
        else:
            total = total + grad
            theta = theta.detach() - lrs.detach() * grad.detach()
    end = theta if exact else theta_start - lrs * total
    cut = {"image": slice(0, image_size), "text": slice(image_size, None)}
    ratio = {
        k: (end[c] - theta_target[c]).pow(2).sum() / (theta_start[c] - theta_target[c]).pow(2).sum()
        for k, c in cut.items()
    }
    merged = (end - theta_target).pow(2).sum() / (theta_start - theta_target).pow(2).sum()
    branch_sum = ratio["image"] + ratio["text"]
    return (merged if merge else branch_sum), branch_sum


def reference_setup(seed=5, **overrides):
    """The synthetic set, the inner loop's batches (drawn as the matcher draws them) and a
    trajectory, for the hand-written loops."""
    config = matching_config(**overrides)
    g = torch.Generator().manual_seed(seed)
    batches = _mini_batches(N, config.mini_batch_size, config.syn_steps, g)
    trajectory = fake_trajectories()[0]
    return batches, trajectory[0], trajectory[1]


# a small inner step: the ReLU ConvNet's loss surface is smooth enough for finite differences
SMALL_LR = 0.02


def run_matcher(mode, merge=False):
    model = NO_DROPOUT.build(0)
    syn = synthetic("lowrank", lr=SMALL_LR)
    config = matching_config(grad_mode=mode, merge_branches=merge)
    matcher = TrajectoryMatcher(model, ParameterLayout.of(model), config)
    trajectory = fake_trajectories()[0]
    losses = matcher.match(syn, trajectory[0], trajectory[1], torch.Generator().manual_seed(5))
    return losses, {name: p.grad.clone() for name, p in syn.named_parameters()}


def reference_grads(exact, merge=False):
    syn = synthetic("lowrank", lr=SMALL_LR)
    batches, start, target = reference_setup()
    data_loss, lr_loss = hand_unrolled(syn, batches, start, target, exact=exact, merge=merge)
    learnable = [syn.images, syn.texts, *syn.similarity.parameters()]
    data = torch.autograd.grad(data_loss, learnable, retain_graph=True)
    (lrs,) = torch.autograd.grad(lr_loss, [syn.lrs])
    names = ["images", "texts", *(f"similarity.{n}" for n, _ in syn.similarity.named_parameters())]
    return data_loss.detach(), {**dict(zip(names, data, strict=True)), "lrs": lrs}


def test_full_gradient_equals_a_hand_unrolled_loop_and_differs_from_tesla():
    losses, full = run_matcher("full")
    expected_loss, expected = reference_grads(exact=True)
    torch.testing.assert_close(losses["loss"], expected_loss)
    for name, value in expected.items():
        torch.testing.assert_close(full[name], value, rtol=1e-4, atol=1e-7)
    # TESLA equals the hand-written first-order loop ...
    _, tesla = run_matcher("tesla")
    _, first_order = reference_grads(exact=False)
    for name, value in first_order.items():
        torch.testing.assert_close(tesla[name], value, rtol=1e-4, atol=1e-7)
    # ... and differs measurably from the exact gradient on this non-linear model (measured:
    # 3 % for the images and texts, 5 % for the diagonal of S, 0.9 % for the learning rates)
    for name, least in [("images", 0.01), ("texts", 0.01), ("similarity.diagonal", 0.01)]:
        relative = (full[name] - tesla[name]).norm() / full[name].norm()
        assert relative > least, (name, float(relative))
    assert (full["lrs"] - tesla["lrs"]).norm() / full["lrs"].norm() > 0.004


def test_full_gradient_matches_finite_differences():
    """Directional derivatives of the matching loss (float64 central differences of the
    hand-written loop; a ReLU network is only piecewise smooth, hence the 1 % tolerance) agree
    with the exact gradient, and not with TESLA's, for the images and the learning rates."""
    _, full = run_matcher("full")
    _, tesla = run_matcher("tesla")
    batches, start, target = reference_setup()
    direction = torch.randn(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))

    def loss_at(shift_images=0.0, shift_lrs=(0.0, 0.0)):
        syn = synthetic("lowrank", lr=SMALL_LR).double()
        with torch.no_grad():
            syn.images += shift_images * direction.double()
            syn.lrs += torch.tensor(shift_lrs, dtype=torch.float64)
        loss, _ = hand_unrolled(syn, batches, start.double(), target.double(), exact=True)
        return float(loss.detach())

    eps = 1e-4  # smaller steps hit the round-off of the tiny ratio denominators
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert float((full["images"] * direction).sum()) == pytest.approx(numeric, rel=0.01)
    assert abs(float((tesla["images"] * direction).sum()) - numeric) > 0.1 * abs(numeric)
    for branch in range(2):
        up, down = [0.0, 0.0], [0.0, 0.0]
        up[branch], down[branch] = eps, -eps
        numeric = (loss_at(shift_lrs=up) - loss_at(shift_lrs=down)) / (2 * eps)
        # eta's effect on the later steps is small at this step size, yet it is measurable
        assert float(full["lrs"][branch]) == pytest.approx(numeric, rel=1e-3)
        assert abs(float(tesla["lrs"][branch]) - numeric) > 2e-3 * abs(numeric)


@pytest.mark.parametrize("mode", ["tesla", "tesla_one_graph", "full"])
def test_merged_branches_learning_rates_follow_the_per_branch_ratios(mode):
    """COCO (merge_branches): the data follows the merged ratio, the two learning rates the sum
    of the per-branch ratios (the reference), each checked against a hand-written loop."""
    losses, merged = run_matcher(mode, merge=True)
    exact = mode == "full"
    expected_loss, expected = reference_grads(exact=exact, merge=True)
    torch.testing.assert_close(losses["loss"], expected_loss)
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value, rtol=1e-4, atol=1e-7)
    _, separate = run_matcher(mode, merge=False)
    torch.testing.assert_close(merged["lrs"], separate["lrs"])  # the same ratios
    assert not torch.allclose(merged["images"], separate["images"])  # another objective


def test_mini_batches_keep_or_drop_the_remainder():
    g = torch.Generator().manual_seed(0)
    kept = _mini_batches(10, 4, 4, g, "keep")
    assert [b.numel() for b in kept] == [4, 4, 2, 4]
    assert sorted(torch.cat(kept[:3]).tolist()) == list(range(10))
    dropped = _mini_batches(10, 4, 5, torch.Generator().manual_seed(0), "drop")
    assert [b.numel() for b in dropped] == [4, 4, 4, 4, 4]
    assert len(set(torch.cat(dropped[:2]).tolist())) == 8  # no repeats within a permutation


def test_expert_cycling_visits_every_expert_once_per_pass_and_resumes():
    trajectories = fake_trajectories(experts=3)
    bank = ExpertBank(trajectories, 2, torch.device("cpu"), sampling="cycle")
    g = torch.Generator().manual_seed(0)
    seen = [bank.sample(g, 2, 1)[0] for _ in range(6)]
    assert sorted(seen[:3]) == sorted(seen[3:]) == [0, 1, 2]
    uniform = ExpertBank(trajectories, 2, torch.device("cpu"))
    draws = [uniform.sample(torch.Generator().manual_seed(s), 2, 1)[0] for s in range(30)]
    assert set(draws) == {0, 1, 2}
    # the cycle position survives a checkpoint
    g = torch.Generator().manual_seed(1)
    first = ExpertBank(trajectories, 2, torch.device("cpu"), sampling="cycle")
    first.sample(g, 2, 1)
    state, g_state = first.state(), g.get_state()
    rest = [first.sample(g, 2, 1)[0] for _ in range(4)]
    again = ExpertBank(trajectories, 2, torch.device("cpu"), sampling="cycle")
    again.load_state(state)
    g.set_state(g_state)
    assert [again.sample(g, 2, 1)[0] for _ in range(4)] == rest


def saved_tensor_peak(mode: str, steps: int) -> int:
    """Peak bytes held by autograd for backward during one matching call."""
    live, peak = [0], [0]

    class Held:
        def __init__(self, tensor):
            self.tensor, self.size = tensor, tensor.numel() * tensor.element_size()
            live[0] += self.size
            peak[0] = max(peak[0], live[0])

        def __del__(self):
            live[0] -= self.size

    model = RECIPE.build(0)
    matcher = TrajectoryMatcher(
        model, ParameterLayout.of(model), matching_config(grad_mode=mode, syn_steps=steps)
    )
    trajectory = fake_trajectories()[0]
    with torch.autograd.graph.saved_tensors_hooks(Held, lambda held: held.tensor):
        matcher.match(synthetic(), trajectory[0], trajectory[1], torch.Generator().manual_seed(5))
    return peak[0]


def test_tesla_memory_does_not_grow_with_syn_steps():
    tesla_2, tesla_8 = saved_tensor_peak("tesla", 2), saved_tensor_peak("tesla", 8)
    assert tesla_8 < 1.2 * tesla_2
    for mode in ("tesla_one_graph", "full"):  # one graph over every step
        graph_2, graph_8 = saved_tensor_peak(mode, 2), saved_tensor_peak(mode, 8)
        assert graph_8 > 3 * graph_2, mode
        assert tesla_8 < graph_8 / 3, mode


# ------------------------------------------------------------------ outer loop


def make_distiller(kind="lowrank", seed=1, **outer) -> Distiller:
    model = RECIPE.build(0)
    config = matching_config(**outer)
    matcher = TrajectoryMatcher(model, ParameterLayout.of(model), config)
    bank = ExpertBank(fake_trajectories(), last_needed=2, device=torch.device("cpu"))
    return Distiller(synthetic(kind), matcher, bank, config, torch.Generator().manual_seed(seed))


def test_checkpoint_resume_is_exact():
    straight = make_distiller()
    rows = [straight.step() for _ in range(6)]
    first = make_distiller()
    for _ in range(3):
        first.step()
    saved = first.state()
    resumed = make_distiller(seed=999)  # a different generator: the checkpoint must override it
    resumed.load_state(saved)
    assert resumed.iteration == 3
    resumed_rows = [resumed.step() for _ in range(3)]
    assert resumed_rows == rows[3:]
    for (name, a), (_, b) in zip(
        straight.syn.named_parameters(), resumed.syn.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_learning_rates_stay_positive_and_s_moves():
    distiller = make_distiller(lr_lr=10.0)
    for _ in range(5):
        row = distiller.step()
    assert row["lr_image"] >= 0.99e-4  # float32 of the clamp bound
    assert row["lr_text"] >= 0.99e-4
    assert row["s_offdiag_mean"] != 0.0
    identity = make_distiller("identity")
    row = identity.step()
    assert row["s_diag_mean"] == 1.0
    assert row["s_offdiag_mean"] == 0.0


def test_a_warm_up_holds_the_learning_rates_while_the_data_move():
    distiller = make_distiller(lr_lr=10.0, lr_warmup=3)
    images = distiller.syn.images.detach().clone()
    rows = [distiller.step() for _ in range(4)]
    for row in rows[:3]:
        assert (row["lr_image"], row["lr_text"]) == (rows[0]["lr_image"], rows[0]["lr_text"])
        assert row["lr_image"] == torch.tensor(0.05).item()  # synthetic()'s lr_init
    assert not torch.equal(distiller.syn.images.detach(), images)
    assert rows[3]["lr_image"] != rows[2]["lr_image"]  # learned from iteration 4 on
    # the held iterations leave no momentum behind: iteration 4 is a first SGD step
    fresh = make_distiller(lr_lr=10.0, lr_warmup=3)
    for _ in range(3):
        fresh.step()
    assert "momentum_buffer" not in fresh.optimizer.state.get(fresh.syn.lrs, {})


def test_log_space_steps_the_logarithm_of_the_learning_rates():
    """One step in ``lr_space: log`` is SGD on log(lr) with the chain rule's gradient
    lr * dL/dlr; the data's own step is the same as in linear space."""
    linear = make_distiller(lr_lr=0.0)
    linear.step()
    grad = linear.syn.lrs.grad.detach().clone()
    assert torch.all(grad != 0)
    lr0 = torch.full((2,), 0.05)
    rate = 0.5 / float((lr0 * grad).abs().max())  # a log-step of at most 0.5: above the floor
    log = make_distiller(lr_lr=rate, lr_space="log")
    log.step()
    expected = torch.exp(torch.log(lr0) - rate * lr0 * grad)
    torch.testing.assert_close(log.syn.lrs.detach(), expected)
    assert not torch.allclose(log.syn.lrs.detach(), lr0)
    torch.testing.assert_close(log.syn.images.detach(), linear.syn.images.detach())
    # and resumes exactly (the momentum buffer holds the log-space gradient)
    straight = make_distiller(lr_lr=5.0, lr_space="log", lr_warmup=1)
    rows = [straight.step() for _ in range(4)]
    first = make_distiller(lr_lr=5.0, lr_space="log", lr_warmup=1)
    first.step(), first.step()
    resumed = make_distiller(lr_lr=5.0, lr_space="log", lr_warmup=1, seed=7)
    resumed.load_state(first.state())
    assert [resumed.step() for _ in range(2)] == rows[2:]


def test_the_learning_rates_gradient_is_clipped_to_its_bound():
    linear = make_distiller(lr_lr=0.0)
    linear.step()
    grad = linear.syn.lrs.grad.detach().clone()
    bound = 0.5 * float(grad.abs().min())  # below both rates' gradients: both are clipped
    clipped = make_distiller(lr_lr=1e-3, lr_grad_clip=bound)
    clipped.step()
    expected = torch.full((2,), 0.05) - 1e-3 * bound * torch.sign(grad)
    torch.testing.assert_close(clipped.syn.lrs.detach(), expected)
    torch.testing.assert_close(clipped.syn.images.detach(), linear.syn.images.detach())
    rate = 0.025 / float(grad.abs().max())  # a step of at most half the rate: above the floor
    loose = make_distiller(lr_lr=rate, lr_grad_clip=2 * float(grad.abs().max()))
    loose.step()
    torch.testing.assert_close(loose.syn.lrs.detach(), torch.full((2,), 0.05) - rate * grad)


def test_non_finite_loss_stops_with_a_clear_message():
    distiller = make_distiller()
    with torch.no_grad():
        distiller.syn.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DistillationDivergedError, match="iteration 1"):
        distiller.step()


def test_expert_bank_checks_epochs():
    with pytest.raises(ValueError, match="max_start_epoch - 1 \\+ expert_epochs"):
        ExpertBank(fake_trajectories(epochs=2), last_needed=3, device=torch.device("cpu"))


def test_init_from_real_pairs():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    text = torch.arange(30, dtype=torch.float32).view(15, 2)
    caption_image = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4])
    pixels, texts, chosen = init_synthetic_pairs(
        images, text, caption_image, 6, lambda x: x.float() / 255, torch.Generator().manual_seed(0)
    )
    assert pixels.shape == (6, 3, 4, 4)
    torch.testing.assert_close(pixels, images[chosen].float() / 255)
    for row, image in zip(texts, chosen.tolist(), strict=True):
        caption = int(row[0].item()) // 2
        assert caption_image[caption] == image
    with pytest.raises(ValueError, match="cannot draw 11"):
        init_synthetic_pairs(images, text, caption_image, 11, lambda x: x, torch.Generator())


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    distiller = make_distiller()
    checkpoint = tmp_path / "checkpoint.safetensors"
    healthy_step = distiller.step

    def step_that_breaks_after_two():
        if distiller.iteration == 2:
            with torch.no_grad():
                distiller.syn.images[0, 0, 0, 0] = float("nan")
        return healthy_step()

    distiller.step = step_that_breaks_after_two
    with pytest.raises(DistillationDivergedError, match="iteration 3"):
        run_distillation(distiller, 6, checkpoint, every=2, fingerprint="f", show_progress=False)
    saved = load_bundle(checkpoint)
    assert int(saved["iteration"][0]) == 2
    assert torch.isfinite(saved["syn.images"]).all()
    assert len(saved.metadata["history"]) == 2
    # the same configuration resumes from it; another configuration ignores it
    resumed = make_distiller()
    rows = run_distillation(resumed, 3, checkpoint, every=2, fingerprint="f", show_progress=False)
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    fresh = make_distiller()
    rows = run_distillation(fresh, 1, checkpoint, every=5, fingerprint="g", show_progress=False)
    assert [row["iteration"] for row in rows] == [1]


def test_a_checkpoint_needs_its_interval():
    with pytest.raises(ValueError, match="both a checkpoint path and its interval"):
        run_distillation(make_distiller(), 1, Path("x.safetensors"), show_progress=False)


def test_a_finished_run_can_be_extended_exactly(tmp_path):
    checkpoint = tmp_path / "checkpoint.safetensors"
    straight = run_distillation(make_distiller(), 5, None, show_progress=False)
    run_distillation(
        make_distiller(), 3, checkpoint, every=10, fingerprint="f", show_progress=False
    )
    extended = run_distillation(
        make_distiller(), 5, checkpoint, every=50, fingerprint="f", show_progress=False
    )
    assert extended == straight
    # and in the same column order (the checkpoint's JSON sorts keys; the history CSV must not)
    assert [list(row) for row in extended] == [list(row) for row in straight]
    assert list(straight[0]) != sorted(straight[0])
    # a checkpoint further along than the requested run is not reused
    shorter = run_distillation(
        make_distiller(), 2, checkpoint, every=50, fingerprint="f", show_progress=False
    )
    assert shorter == straight[:2]


# ------------------------------------------------------------------ fast path numerics


def test_bf16_channels_last_gradient_matches_fp32():
    """The fast path (bf16 autocast encoders, NHWC images) gives the fp32 path's matching
    gradient w.r.t. the synthetic images: cosine > 0.99 on the same batches and trajectory."""
    recipe = ModelRecipe.convnet(16, TEXT_DIM, width=16, depth=2)
    trajectory = flatten_parameters(recipe.build(1))
    drift = 0.02 * torch.randn(trajectory.shape, generator=torch.Generator().manual_seed(2))
    grads = {}
    for precision, channels_last in [("fp32", False), ("bf16", True)]:
        model = recipe.build(0)
        g = torch.Generator().manual_seed(0)
        sim = build_similarity("lowrank", 20, rank=4, alpha=2.0, generator=g)
        with torch.no_grad():
            sim.right.normal_(generator=g)
        syn = SyntheticSet(
            torch.randn(20, 3, 16, 16, generator=g),
            torch.randn(20, TEXT_DIM, generator=g),
            0.05,
            sim,
        )
        config = matching_config(syn_steps=4, mini_batch_size=10, num_pairs=20)
        fast = FastPath(precision, channels_last)
        matcher = TrajectoryMatcher(model, ParameterLayout.of(model), config, fast)
        matcher.match(syn, trajectory, trajectory + drift, torch.Generator().manual_seed(5))
        grads[precision] = {name: p.grad.flatten().clone() for name, p in syn.named_parameters()}
    for name in ["images", "texts", "similarity.right"]:
        cosine = torch.nn.functional.cosine_similarity(
            grads["fp32"][name], grads["bf16"][name], dim=0
        )
        assert cosine > 0.99, name
    assert not torch.equal(grads["fp32"]["images"], grads["bf16"]["images"])  # bf16 really ran


def test_methods_are_presets_of_the_gradient_the_similarity_and_blending():
    def settings(method, grad_mode, **more):
        return method_settings(method, matching_config(grad_mode=grad_mode, **more))

    assert settings("lors", "tesla") == {}
    assert settings("tesla_vl", "tesla_one_graph") == {
        "sim_type": "identity",
        "grad_mode": "tesla_one_graph",
    }
    assert settings("tesla_vl", "tesla") == {"sim_type": "identity", "grad_mode": "tesla"}
    # LoRS with the exact gradient leaves TESLA-VL on TESLA's (one-graph) gradient
    assert settings("tesla_vl", "full") == {
        "sim_type": "identity",
        "grad_mode": "tesla_one_graph",
    }
    assert settings("mtt_vl", "tesla") == {"sim_type": "identity", "grad_mode": "full"}
    # lors_blend: LoRS with blending on, at the configured alpha
    blend = settings("lors_blend", "full", blend={"enabled": False, "alpha": 0.5})
    assert blend == {"blend": {"enabled": True, "alpha": 0.5}}
    assert matching_config(grad_mode="full").updated(**blend).blend.active
    with pytest.raises(ValueError, match="unknown trajectory-matching method 'dm': use lors, "):
        settings("dm", "tesla")


@pytest.mark.parametrize("damage", ["zeroed_images", "truncated", "no_hash", "other_fingerprint"])
def test_a_bad_checkpoint_is_set_aside_and_never_resumed(tmp_path, caplog, damage):
    checkpoint = tmp_path / "checkpoint.safetensors"
    straight = run_distillation(make_distiller(), 4, None, show_progress=False)
    run_distillation(make_distiller(), 2, checkpoint, every=2, fingerprint="f", show_progress=False)
    saved = load_bundle(checkpoint)
    if damage == "zeroed_images":  # rewritten with its header (and so its old content hash)
        with safe_open(str(checkpoint), framework="pt") as handle:
            header = handle.metadata()
        tensors = {**saved.tensors, "syn.images": torch.zeros_like(saved["syn.images"])}
        save_file(tensors, str(checkpoint), metadata=header)
        expected = "do not match the content hash"
    elif damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
        expected = "unreadable safetensors file"
    elif damage == "no_hash":
        save_file(saved.tensors, str(checkpoint))
        expected = "no content hash"
    else:
        save_bundle(TensorBundle(saved.tensors, {**saved.metadata, "fingerprint": "g"}), checkpoint)
        expected = "another configuration"
    with caplog.at_level(logging.WARNING):
        rows = run_distillation(
            make_distiller(), 4, checkpoint, every=2, fingerprint="f", show_progress=False
        )
    assert rows == straight  # started over: exactly the uninterrupted run
    assert expected in caplog.text
    assert f"set aside as {checkpoint}.rejected" in caplog.text
    assert (tmp_path / "checkpoint.safetensors.rejected").is_file()
    assert int(load_bundle(checkpoint)["iteration"][0]) == 4  # a fresh, good checkpoint


def test_bundles_carry_a_content_hash_checked_on_load(tmp_path):
    path = tmp_path / "bundle.safetensors"
    bundle = TensorBundle(
        {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}, {"k": 1}
    )
    save_bundle(bundle, path)
    assert load_bundle(path).equals(bundle)
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    assert list(header) == ["lors_distill.bundle"]  # one key: a fixed byte layout
    assert json.loads(header["lors_distill.bundle"])["sha256"] == content_hash(bundle.tensors)
    save_file({**bundle.tensors, "a": bundle["a"] + 1}, str(path), metadata=header)
    with pytest.raises(BundleIntegrityError, match=r"bundle\.safetensors: its tensors do not"):
        load_bundle(path)
    assert load_bundle(path, names=["b"])["b"].dtype == torch.bfloat16  # partial: not checked
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(BundleIntegrityError, match=r"bundle\.safetensors: unreadable"):
        load_bundle(path)


# ------------------------------------------------------------------ representation blending


def syn_digest(distiller: Distiller) -> str:
    digest = hashlib.sha256()
    for name, p in distiller.syn.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


# The synthetic set after 3 outer iterations of make_distiller(grad_mode=mode), computed with
# the code before blending existed (commit 2ed9678) at one thread, as the suite runs (conftest),
# with torch 2.14.1's CPU kernels on the CI machine.
BEFORE_BLENDING = {
    "tesla": "27bc3416ed05d4f668af9678072ea03f",
    "tesla_one_graph": "67d58698b7555ccb3efeb72a211d8707",
    "full": "4391547a0bdaf0dc3ad66f78afc0e754",
}


@pytest.mark.parametrize("mode", sorted(BEFORE_BLENDING))
@pytest.mark.parametrize(
    "blend", [{"enabled": False, "alpha": 1.0}, {"enabled": True, "alpha": 0.0}]
)
def test_blending_off_or_alpha_zero_is_bit_identical_to_before_blending(mode, blend):
    assert torch.get_num_threads() == 1  # the digests were taken at one thread
    distiller = make_distiller(grad_mode=mode, blend=blend)
    for _ in range(3):
        distiller.step()
    assert syn_digest(distiller) == BEFORE_BLENDING[mode]
    blended = make_distiller(grad_mode=mode, blend=BLEND_ON)
    for _ in range(3):
        blended.step()
    assert syn_digest(blended) != BEFORE_BLENDING[mode]  # blending on does change the run


def test_each_step_draws_one_mix_reused_by_every_pass(monkeypatch):
    from lors_distill.core.distill import matcher as matcher_module

    drawn = []
    real = matcher_module.draw_mix

    def counting(config, size, seed):
        mix = real(config, size, seed)
        drawn.append((seed, mix.lam, mix.perm.tolist()))
        return mix

    monkeypatch.setattr(matcher_module, "draw_mix", counting)
    losses, _ = grads_after_match("tesla", blend=BLEND_ON)  # two passes over 4 steps
    monkeypatch.setattr(matcher_module, "draw_mix", real)
    assert len(drawn) == 4  # one per step, not one per pass
    assert len({seed for seed, _, _ in drawn}) == 4
    assert all(0.0 <= lam <= 1.0 for _, lam, _ in drawn)
    assert all(sorted(perm) == list(range(4)) for _, _, perm in drawn)
    # blending reaches the loss: the same match without it gives another loss
    unblended, _ = grads_after_match("tesla")
    assert float(losses["loss"]) != float(unblended["loss"])


def test_a_mix_is_drawn_from_its_step_seed_only():
    config = BlendConfig(enabled=True, alpha=1.0)
    first, again, other = draw_mix(config, 20, 7), draw_mix(config, 20, 7), draw_mix(config, 20, 8)
    assert (first.lam, first.perm.tolist()) == (again.lam, again.perm.tolist())
    assert (first.lam, first.perm.tolist()) != (other.lam, other.perm.tolist())
    assert draw_mix(BlendConfig(enabled=True, alpha=0.0), 20, 7) is None
    assert draw_mix(BlendConfig(enabled=False, alpha=1.0), 20, 7) is None
    x = torch.arange(20.0).unsqueeze(1).expand(20, 3)
    torch.testing.assert_close(first(x), first.lam * x + (1 - first.lam) * x[first.perm])
    # Beta(1, 1) is uniform on [0, 1]: the mean of many draws is near 1/2
    lams = [draw_mix(config, 4, seed).lam for seed in range(2000)]
    assert abs(sum(lams) / len(lams) - 0.5) < 0.02
    # a small alpha puts lam near 0 or 1 (Beta(0.1, 0.1) is U-shaped)
    sharp = [draw_mix(BlendConfig(enabled=True, alpha=0.1), 4, s).lam for s in range(500)]
    assert sum(min(lam, 1 - lam) < 0.05 for lam in sharp) > 0.5 * len(sharp)


def test_the_model_blends_image_embeddings_and_text_vectors_before_the_heads():
    model = NO_DROPOUT.build(0).eval()
    images, texts = torch.randn(5, 3, SIZE, SIZE), torch.randn(5, TEXT_DIM)
    mix = Mix(0.3, torch.tensor([4, 0, 1, 3, 2]))
    features = model.image_encoder(images)
    blended_image = F.normalize(mix(features), dim=-1)
    blended_text = F.normalize(model.text_head(mix(texts)), dim=-1)
    expected = blended_image @ blended_text.T / model.temperature
    torch.testing.assert_close(model(images, texts, mix=mix), expected)
    torch.testing.assert_close(model(features, texts, mix=mix, from_features=True), expected)
