"""One matching pass: the inner loop on synthetic mini-batches and the gradient of the
trajectory-matching loss (``tesla``, ``tesla_one_graph`` or ``full``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from lors_distill.core.blend import Mix, draw_mix
from lors_distill.core.device import seeded_rng
from lors_distill.core.distill.synthetic import SyntheticSet
from lors_distill.core.flat import ParameterLayout, functional_forward
from lors_distill.core.losses import soft_loss

if TYPE_CHECKING:
    from lors_distill.core.config import DistillationParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastPath:
    """What ``distillation.precision`` / ``channels_last: auto`` resolved to on this device
    (:func:`lors_distill.core.distill.setup.fast_path`)."""

    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: encoders under autocast
    channels_last: bool = False  # NHWC images for the convolutions
    # a frozen backbone's features of all synthetic images computed once per iteration (the
    # inner steps differentiate into them, then one backward reaches the pixels) instead of
    # a backbone pass per inner step; the same gradient up to float rounding
    backbone_once: bool = True


def _learnable(syn: SyntheticSet, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The tensors the inner losses differentiate into (not the learning rates): the images
    (or their frozen-backbone features, ``pixels``), the texts and the similarity."""
    return [pixels, syn.texts, *syn.similarity.parameters()]


def _mini_batches(
    size: int, batch: int, steps: int, generator: torch.Generator, remainder: str = "keep"
) -> list[torch.Tensor]:
    """``steps`` index batches drawn without replacement, reshuffling when the set runs out.

    ``remainder``: ``keep`` uses the short last batch of a permutation (every pair is seen
    equally often); ``drop`` skips it and reshuffles, so every batch has ``batch`` pairs (the
    LoRS reference).
    """
    batches: list[torch.Tensor] = []
    pool: list[torch.Tensor] = []
    while len(batches) < steps:
        if not pool:
            pool = list(torch.randperm(size, generator=generator).split(batch))
            if remainder == "drop" and pool[-1].numel() < batch:
                pool.pop()
            pool.reverse()
        batches.append(pool.pop())
    return batches


class TrajectoryMatcher:
    """Computes the matching loss and accumulates its gradients into a :class:`SyntheticSet`."""

    def __init__(
        self,
        model: nn.Module,
        layout: ParameterLayout,
        config: DistillationParams,
        fast: FastPath = FastPath(),
    ) -> None:
        self.model = model
        self.layout = layout
        self.config = config  # the inner loop and the matching loss
        self.fast = fast
        self.loss_fn = soft_loss(config.loss)
        slices = layout.branch_slices()
        # the per-branch ratios (what the learning rates follow, and what is reported)
        self.branches = {name: s for name, s in slices.items() if s.stop > s.start}
        # the ratio(s) the synthetic data and S follow
        self.objective = (
            {"all": slice(0, layout.size)} if config.merge_branches else dict(self.branches)
        )

    def _lr_vector(self, lrs: torch.Tensor) -> torch.Tensor:
        image, total = self.layout.image_size, self.layout.size
        return torch.cat([lrs[0].expand(image), lrs[1].expand(total - image)])

    def _autocast(self, device: torch.device):
        return torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=self.fast.precision == "bf16"
        )

    def _inner_loss(
        self,
        theta: torch.Tensor,
        syn: SyntheticSet,
        step: _Step,
        graph: bool,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The soft loss of one inner step at ``theta``; with ``features`` (a frozen
        backbone's output for every synthetic image) the backbone is not run again."""
        index = step.index
        images = syn.images[index] if features is None else features[index]
        texts, targets = syn.texts[index], syn.similarity.block(index)
        if not graph:
            images, texts, targets = images.detach(), texts.detach(), targets.detach()
        if self.fast.channels_last and features is None:
            images = images.contiguous(memory_format=torch.channels_last)
        # same dropout masks and the same blend in every pass
        with seeded_rng(step.seed, theta.device), self._autocast(theta.device):
            logits = functional_forward(
                self.model,
                self.layout,
                theta,
                images,
                texts,
                mix=step.mix,
                from_features=features is not None,
            )
        # the master tensors (theta, images, texts, S, etas) stay fp32; so does the loss
        return self.loss_fn(logits.float(), targets.float())

    def _backbone_features(self, syn: SyntheticSet) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With a frozen backbone (and ``backbone_once``): its fp32 features of every
        synthetic image with their graph into the pixels, and a leaf copy the inner steps
        use. None otherwise."""
        if not (getattr(self.model, "frozen_backbone", False) and self.fast.backbone_once):
            return None
        images = syn.images
        if self.fast.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast(images.device):
            features = self.model.backbone_features(images).float()
        return features, features.detach().requires_grad_(True)

    @staticmethod
    def _ratios(theta_end, theta_start, theta_target, slices) -> dict[str, torch.Tensor]:
        """``||theta_end - target||^2 / ||theta_start - target||^2`` over each slice."""
        return {
            name: (theta_end[s] - theta_target[s]).pow(2).sum()
            / (theta_start[s] - theta_target[s]).pow(2).sum().clamp(min=1e-12)
            for name, s in slices.items()
        }

    def match(
        self,
        syn: SyntheticSet,
        theta_start: torch.Tensor,
        theta_target: torch.Tensor,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Run the inner loop from ``theta_start``; accumulate gradients into ``syn``'s ``.grad``.

        Returns:
            Detached losses: ``loss`` (the objective of the synthetic data: the sum of the
            per-branch ratios, or the merged ratio) and one ``loss_<branch>`` per branch.
        """
        config = self.config
        batches = _on_device(
            _mini_batches(
                syn.size,
                config.mini_batch_size,
                config.syn_steps,
                generator,
                config.mini_batch_remainder,
            ),
            syn.images.device,
        )
        seeds = torch.randint(0, 2**62, (config.syn_steps,), generator=generator).tolist()
        steps = [
            _Step(index, seed, _mix_on(draw_mix(config.blend, index.numel(), seed), index))
            for index, seed in zip(batches, seeds, strict=True)
        ]
        theta_start = theta_start.detach().float()
        theta_target = theta_target.detach().float()
        lr_vector = self._lr_vector(syn.lrs)
        backbone = self._backbone_features(syn)
        features = None if backbone is None else backbone[1]
        pixels = syn.images if features is None else features
        if config.grad_mode == "full":
            theta_end = self._unroll_exact(syn, theta_start, lr_vector, steps, features)
        else:
            theta_end = self._unroll_first_order(syn, theta_start, lr_vector, steps, features)
        branch = self._ratios(theta_end, theta_start, theta_target, self.branches)
        objective = (
            self._ratios(theta_end, theta_start, theta_target, self.objective)
            if config.merge_branches
            else branch
        )
        data_loss, lr_loss = sum(objective.values()), sum(branch.values())
        if config.grad_mode == "tesla":
            # theta_end depends on the learning rates only (the sum of gradients is constant)
            lr_loss.backward(inputs=[syn.lrs])
            self._tesla_pass(syn, theta_start, theta_end.detach(), theta_target, steps, features)
        elif config.merge_branches:
            data_loss.backward(inputs=_learnable(syn, pixels), retain_graph=True)
            lr_loss.backward(inputs=[syn.lrs])
        else:
            data_loss.backward(inputs=[*_learnable(syn, pixels), syn.lrs])
        if backbone is not None and features.grad is not None:
            # the inner steps' gradients of the features, through the backbone once
            torch.autograd.backward(backbone[0], grad_tensors=features.grad, inputs=[syn.images])
        return {
            "loss": data_loss.detach(),
            **{f"loss_{name}": value.detach() for name, value in branch.items()},
        }

    def _unroll_first_order(self, syn, theta_start, lr_vector, steps, features) -> torch.Tensor:
        """``theta_start - eta * sum_i g_i`` with each ``g_i`` taken at the constant parameters
        of step ``i``; the ``g_i`` keep their graph into the synthetic data only for
        ``tesla_one_graph`` (``tesla`` recomputes them one at a time later)."""
        keep_graph = self.config.grad_mode == "tesla_one_graph"
        step_lr = lr_vector.detach()
        theta, grad_sum = theta_start.clone(), torch.zeros_like(theta_start)
        for step in steps:
            leaf = theta.detach().requires_grad_(True)
            loss = self._inner_loss(leaf, syn, step, keep_graph, features)
            (grad,) = torch.autograd.grad(loss, leaf, create_graph=keep_graph)
            grad_sum = grad_sum + grad
            theta = theta - step_lr * grad.detach()
        return theta_start - lr_vector * grad_sum

    def _unroll_exact(self, syn, theta_start, lr_vector, steps, features) -> torch.Tensor:
        """``theta_{i+1} = theta_i - eta g_i(theta_i)`` with the graph kept through every step
        (``create_graph`` at graph-carrying parameters): the exact gradient."""
        theta = theta_start.clone().requires_grad_(True)
        for step in steps:
            loss = self._inner_loss(theta, syn, step, True, features)
            (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
            theta = theta - lr_vector * grad
        return theta

    def _tesla_pass(self, syn, theta_start, theta_end, theta_target, steps, features) -> None:
        scale = torch.empty_like(theta_start)
        for s in self.objective.values():
            distance = (theta_start[s] - theta_target[s]).pow(2).sum().clamp(min=1e-12)
            scale[s] = 2.0 / distance
        step_lr = self._lr_vector(syn.lrs).detach()
        upstream = step_lr * (theta_target - theta_end) * scale  # dL/dg_i, the same for every i
        learnable = _learnable(syn, syn.images if features is None else features)
        theta = theta_start.clone()
        for step in steps:  # each step's own batch, dropout masks and blend, recomputed
            leaf = theta.detach().requires_grad_(True)
            loss = self._inner_loss(leaf, syn, step, True, features)
            (grad,) = torch.autograd.grad(loss, leaf, create_graph=True)
            torch.autograd.backward(grad, grad_tensors=upstream, inputs=learnable)
            theta = theta - step_lr * grad.detach()


@dataclass(frozen=True)
class _Step:
    """One inner step: its mini-batch, the seed of its dropout masks and blend, its blend."""

    index: torch.Tensor
    seed: int
    mix: Mix | None


def _mix_on(mix: Mix | None, index: torch.Tensor) -> Mix | None:
    return None if mix is None else mix.to(index.device)


def _on_device(batches: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """All of an iteration's index batches in one host-to-device copy (pinned, asynchronous),
    so the inner loop itself never waits for the host."""
    if device.type != "cuda":
        return batches
    flat = torch.cat(batches).pin_memory().to(device, non_blocking=True)
    return list(flat.split([b.numel() for b in batches]))
