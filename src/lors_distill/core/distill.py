"""LoRS trajectory matching: learn synthetic pairs, their similarity and two inner learning rates.

One outer iteration (PAPER.md section 3):

1. pick a random expert and start epoch ``s`` in ``[0, max_start_epoch)``; the target is
   snapshot ``s + expert_epochs``;
2. from ``theta_s`` run ``syn_steps`` SGD steps on mini-batches of the synthetic set (without
   replacement), ``theta <- theta - eta * g`` with one learnable ``eta`` per branch;
3. loss = ``||theta_end - theta_target||^2 / ||theta_s - theta_target||^2`` per branch, summed
   (or over all parameters at once with ``merge_branches``);
4. backpropagate into images, texts, similarity parameters and the etas.

Gradients (``grad_mode``; PAPER.md section 3):

* ``tesla``: TESLA's first-order gradient in constant memory. With ``G = sum_i g_i`` and
  ``theta_end = theta_s - eta G``, ``dL/dg_i = 2 eta (theta_target - theta_end) / D``, so a first
  pass without graph computes ``G``, and a second pass recomputes each ``g_i`` with a graph and
  backpropagates that constant vector into step ``i`` only. Each ``g_i`` is taken at the
  parameters of step ``i`` held constant: how ``theta_i`` depends on the synthetic data of
  earlier steps and on ``eta`` is dropped (as in the LoRS reference).
* ``tesla_one_graph``: the same first-order gradient from one graph over all steps (memory
  grows with ``syn_steps``; faster where memory is no concern); tested to equal ``tesla``.
* ``full``: the exact gradient of the matching loss through the unrolled inner loop (MTT, and
  MTT-VL's reference code): ``theta_{i+1} = theta_i - eta g_i(theta_i)`` keeps its graph, so
  the gradient includes the dependence of every ``theta_i`` on the synthetic data of earlier
  steps and on ``eta``. Memory grows with ``syn_steps``.

With ``merge_branches`` the synthetic data and ``S`` follow one distance ratio over all
parameters, while the two inner learning rates follow the per-branch ratios (as the reference
does for COCO). Dropout masks are seeded per step, so every pass sees identical networks.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from lors_distill.core.bundle import BundleIntegrityError, TensorBundle, load_bundle, save_bundle
from lors_distill.core.device import seeded_rng
from lors_distill.core.flat import ParameterLayout, functional_forward
from lors_distill.core.losses import soft_loss
from lors_distill.core.similarity import Similarity, similarity_stats

logger = logging.getLogger(__name__)


FIRST_ORDER = ("tesla", "tesla_one_graph")


def method_settings(method: str, grad_mode: str) -> dict[str, str]:
    """The settings that define a trajectory-matching method (PAPER.md sections 3 and 5).

    * ``lors``: the configuration as it is (learned similarity, the configured gradient);
    * ``tesla_vl``: ``S = I`` fixed, TESLA's first-order gradient (in the configured variant,
      ``tesla`` or ``tesla_one_graph``: the same gradient; under ``full``, whose memory grows
      with ``syn_steps`` anyway, the faster ``tesla_one_graph``);
    * ``mtt_vl``: ``S = I`` fixed, the exact gradient through the unrolled inner loop.

    Args:
        grad_mode: the configured ``distillation.grad_mode``.
    """
    if method == "lors":
        return {}
    if method == "tesla_vl":
        return {
            "sim_type": "identity",
            "grad_mode": grad_mode if grad_mode in FIRST_ORDER else "tesla_one_graph",
        }
    if method == "mtt_vl":
        return {"sim_type": "identity", "grad_mode": "full"}
    raise ValueError(f"unknown trajectory-matching method {method!r}: use lors, tesla_vl or mtt_vl")


METHODS = ("lors", "tesla_vl", "mtt_vl")


class DistillationDivergedError(RuntimeError):
    """The matching loss became NaN or infinite."""


@dataclass(frozen=True)
class MatchingConfig:
    """The inner loop and the matching loss."""

    syn_steps: int
    expert_epochs: int
    max_start_epoch: int
    mini_batch_size: int
    loss: str
    merge_branches: bool
    grad_mode: Literal["tesla", "tesla_one_graph", "full"]
    mini_batch_remainder: Literal["keep", "drop"]
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: encoders under autocast
    channels_last: bool = False  # NHWC images for the convolutions


@dataclass(frozen=True)
class OuterConfig:
    """The outer SGD (momentum, four parameter groups)."""

    lr_images: float
    lr_texts: float
    lr_lr: float
    lr_sim: float
    momentum: float
    min_inner_lr: float


class SyntheticSet(nn.Module):
    """The learned distilled set.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in the models' normalised pixel space.
        texts: ``(N, d)`` float32 in the frozen text encoder's space.
        lrs: ``(2,)`` inner learning rates (image encoder, text head).
        similarity: the learned targets ``S`` (``N x N``, possibly low-rank).
    """

    def __init__(
        self, images: torch.Tensor, texts: torch.Tensor, lr_init: float, similarity: Similarity
    ) -> None:
        super().__init__()
        if images.shape[0] != texts.shape[0] or images.shape[0] != similarity.size:
            raise ValueError("images, texts and similarity must have the same N")
        self.images = nn.Parameter(images.float().clone())
        self.texts = nn.Parameter(texts.float().clone())
        self.lrs = nn.Parameter(torch.full((2,), float(lr_init)))
        self.similarity = similarity

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


def init_synthetic_pairs(
    images: torch.Tensor,
    text: torch.Tensor,
    caption_image: torch.Tensor,
    count: int,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    init: Literal["real", "noise"] = "real",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` random real pairs (one random caption per chosen image), or Gaussian noise.

    Args:
        images: ``(N_real, 3, S, S)`` uint8; text: ``(M, d)``; caption_image: ``(M,)``.

    Returns:
        ``(images (count, 3, S, S) float32 normalised, texts (count, d), chosen image indices)``.
    """
    if count > images.shape[0]:
        raise ValueError(f"cannot draw {count} pairs from {images.shape[0]} train images")
    chosen = torch.randperm(images.shape[0], generator=generator)[:count]
    order = torch.argsort(caption_image, stable=True)
    counts = torch.bincount(caption_image, minlength=images.shape[0])
    offsets = torch.cumsum(counts, 0) - counts
    if (counts[chosen] == 0).any():
        raise ValueError("a chosen train image has no caption")
    pick = (torch.rand(count, generator=generator) * counts[chosen]).long()
    captions = order[offsets[chosen] + pick]
    if init == "noise":
        pixels = torch.randn((count, *images.shape[1:]), generator=generator)
        texts = torch.randn((count, text.shape[1]), generator=generator) * text.std()
        return pixels, texts, chosen
    return normalize(images[chosen]).float(), text[captions].float().clone(), chosen


class ExpertBank:
    """Expert trajectories resident on the device, trimmed to the snapshots matching can use.

    Args:
        trajectories: one ``(epochs + 1, P)`` tensor per expert.
        last_needed: highest snapshot index used (``max_start_epoch - 1 + expert_epochs``).
    """

    def __init__(
        self,
        trajectories: list[torch.Tensor],
        last_needed: int,
        device: torch.device,
        sampling: Literal["uniform", "cycle"] = "uniform",
    ):
        shortest = min(t.shape[0] for t in trajectories)
        if last_needed >= shortest:
            raise ValueError(
                f"matching needs snapshot {last_needed} (max_start_epoch - 1 + expert_epochs) "
                f"but the experts only have {shortest - 1} epochs"
            )
        self.snapshots = torch.stack([t[: last_needed + 1] for t in trajectories]).to(device)
        self.sampling = sampling
        self._pending: list[int] = []  # cycle: the experts left in the current shuffled pass

    @property
    def num_experts(self) -> int:
        return int(self.snapshots.shape[0])

    def _next_expert(self, generator: torch.Generator) -> int:
        if self.sampling == "uniform":  # with replacement
            return int(torch.randint(self.num_experts, (1,), generator=generator))
        if not self._pending:  # cycle: every expert once per pass, in a fresh shuffled order
            self._pending = torch.randperm(self.num_experts, generator=generator).tolist()
        return self._pending.pop(0)

    def sample(
        self, generator: torch.Generator, max_start_epoch: int, expert_epochs: int
    ) -> tuple[int, int, torch.Tensor, torch.Tensor]:
        """``(expert, start epoch, theta_start, theta_target)``."""
        expert = self._next_expert(generator)
        start = int(torch.randint(max_start_epoch, (1,), generator=generator))
        return (
            expert,
            start,
            self.snapshots[expert, start],
            self.snapshots[expert, start + expert_epochs],
        )

    def state(self) -> torch.Tensor:
        """The cycle position: ``[count, *pending experts, -1 padding]`` (``num_experts + 1``)."""
        padding = [-1] * (self.num_experts - len(self._pending))
        return torch.tensor([len(self._pending), *self._pending, *padding], dtype=torch.int64)

    def load_state(self, state: torch.Tensor) -> None:
        count = int(state[0])
        self._pending = state[1 : 1 + count].tolist()


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

    def __init__(self, model: nn.Module, layout: ParameterLayout, config: MatchingConfig) -> None:
        self.model = model
        self.layout = layout
        self.config = config
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

    def _inner_loss(
        self, theta: torch.Tensor, syn: SyntheticSet, index: torch.Tensor, seed: int, graph: bool
    ) -> torch.Tensor:
        images, texts = syn.images[index], syn.texts[index]
        targets = syn.similarity.block(index)
        if not graph:
            images, texts, targets = images.detach(), texts.detach(), targets.detach()
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(
            theta.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        )
        with seeded_rng(seed, theta.device), autocast:  # same dropout masks in every pass
            logits = functional_forward(self.model, self.layout, theta, images, texts)
        # the master tensors (theta, images, texts, S, etas) stay fp32; so does the loss
        return self.loss_fn(logits.float(), targets.float())

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
        theta_start = theta_start.detach().float()
        theta_target = theta_target.detach().float()
        lr_vector = self._lr_vector(syn.lrs)
        if config.grad_mode == "full":
            theta_end = self._unroll_exact(syn, theta_start, lr_vector, batches, seeds)
        else:
            theta_end = self._unroll_first_order(syn, theta_start, lr_vector, batches, seeds)
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
            self._tesla_pass(syn, theta_start, theta_end.detach(), theta_target, batches, seeds)
        elif config.merge_branches:
            data_loss.backward(inputs=_learnable(syn), retain_graph=True)
            lr_loss.backward(inputs=[syn.lrs])
        else:
            data_loss.backward(inputs=[*_learnable(syn), syn.lrs])
        return {
            "loss": data_loss.detach(),
            **{f"loss_{name}": value.detach() for name, value in branch.items()},
        }

    def _unroll_first_order(self, syn, theta_start, lr_vector, batches, seeds) -> torch.Tensor:
        """``theta_start - eta * sum_i g_i`` with each ``g_i`` taken at the constant parameters
        of step ``i``; the ``g_i`` keep their graph into the synthetic data only for
        ``tesla_one_graph`` (``tesla`` recomputes them one at a time later)."""
        keep_graph = self.config.grad_mode == "tesla_one_graph"
        step_lr = lr_vector.detach()
        theta, grad_sum = theta_start.clone(), torch.zeros_like(theta_start)
        for index, seed in zip(batches, seeds, strict=True):
            leaf = theta.detach().requires_grad_(True)
            loss = self._inner_loss(leaf, syn, index, seed, graph=keep_graph)
            (grad,) = torch.autograd.grad(loss, leaf, create_graph=keep_graph)
            grad_sum = grad_sum + grad
            theta = theta - step_lr * grad.detach()
        return theta_start - lr_vector * grad_sum

    def _unroll_exact(self, syn, theta_start, lr_vector, batches, seeds) -> torch.Tensor:
        """``theta_{i+1} = theta_i - eta g_i(theta_i)`` with the graph kept through every step
        (``create_graph`` at graph-carrying parameters): the exact gradient."""
        theta = theta_start.clone().requires_grad_(True)
        for index, seed in zip(batches, seeds, strict=True):
            loss = self._inner_loss(theta, syn, index, seed, graph=True)
            (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
            theta = theta - lr_vector * grad
        return theta

    def _tesla_pass(self, syn, theta_start, theta_end, theta_target, batches, seeds) -> None:
        scale = torch.empty_like(theta_start)
        for s in self.objective.values():
            distance = (theta_start[s] - theta_target[s]).pow(2).sum().clamp(min=1e-12)
            scale[s] = 2.0 / distance
        step_lr = self._lr_vector(syn.lrs).detach()
        upstream = step_lr * (theta_target - theta_end) * scale  # dL/dg_i, the same for every i
        theta = theta_start.clone()
        for index, seed in zip(batches, seeds, strict=True):
            leaf = theta.detach().requires_grad_(True)
            loss = self._inner_loss(leaf, syn, index, seed, graph=True)
            (grad,) = torch.autograd.grad(loss, leaf, create_graph=True)
            torch.autograd.backward(grad, grad_tensors=upstream, inputs=_learnable(syn))
            theta = theta - step_lr * grad.detach()


def _on_device(batches: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """All of an iteration's index batches in one host-to-device copy (pinned, asynchronous),
    so the inner loop itself never waits for the host."""
    if device.type != "cuda":
        return batches
    flat = torch.cat(batches).pin_memory().to(device, non_blocking=True)
    return list(flat.split([b.numel() for b in batches]))


def _learnable(syn: SyntheticSet) -> list[torch.Tensor]:
    """The tensors the inner losses differentiate into (not the learning rates)."""
    return [syn.images, syn.texts, *syn.similarity.parameters()]


def build_optimizer(syn: SyntheticSet, outer: OuterConfig) -> torch.optim.SGD:
    """SGD with momentum and the four parameter groups of the paper."""
    groups = [
        {"params": [syn.images], "lr": outer.lr_images, "name": "images"},
        {"params": [syn.texts], "lr": outer.lr_texts, "name": "texts"},
        {"params": [syn.lrs], "lr": outer.lr_lr, "name": "lrs"},
    ]
    similarity = list(syn.similarity.parameters())
    if similarity:
        groups.append({"params": similarity, "lr": outer.lr_sim, "name": "similarity"})
    return torch.optim.SGD(groups, momentum=outer.momentum)


class Distiller:
    """The outer loop: matching, SGD step, positivity of the learning rates, history.

    Every random choice comes from ``generator``; :meth:`state` / :meth:`load_state` capture
    everything needed to resume exactly (tensors, optimiser momentum, generator, iteration).
    """

    def __init__(
        self,
        syn: SyntheticSet,
        matcher: TrajectoryMatcher,
        bank: ExpertBank,
        outer: OuterConfig,
        generator: torch.Generator,
    ) -> None:
        self.syn = syn
        self.matcher = matcher
        self.bank = bank
        self.outer = outer
        self.generator = generator
        self.optimizer = build_optimizer(syn, outer)
        self.iteration = 0

    def step(self) -> dict[str, Any]:
        """One outer iteration; returns its history row."""
        config = self.matcher.config
        expert, start, theta_start, theta_target = self.bank.sample(
            self.generator, config.max_start_epoch, config.expert_epochs
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.matcher.match(self.syn, theta_start, theta_target, self.generator)
        total = float(losses["loss"])  # one host sync per outer iteration
        if not math.isfinite(total):
            raise DistillationDivergedError(
                f"matching loss is {total} at iteration {self.iteration + 1} (expert {expert}, "
                f"start epoch {start}); lower the outer learning rates (distillation.lr_*) or "
                "syn_steps. The last checkpoint written is kept."
            )
        self.optimizer.step()
        with torch.no_grad():
            self.syn.lrs.clamp_(min=self.outer.min_inner_lr)
        self.iteration += 1
        row = {
            "iteration": self.iteration,
            "expert": expert,
            "start_epoch": start,
            "loss": total,
            **{name: float(value) for name, value in losses.items() if name != "loss"},
            "lr_image": float(self.syn.lrs[0].detach()),
            "lr_text": float(self.syn.lrs[1].detach()),
            **similarity_stats(self.syn.similarity),
        }
        return row

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume exactly, as named CPU tensors."""
        tensors = {
            f"syn.{name}": p.detach().cpu().clone() for name, p in self.syn.named_parameters()
        }
        names = {id(p): name for name, p in self.syn.named_parameters()}
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                buffer = self.optimizer.state.get(param, {}).get("momentum_buffer")
                if buffer is not None:
                    tensors[f"momentum.{names[id(param)]}"] = buffer.detach().cpu().clone()
        tensors["generator"] = self.generator.get_state()
        tensors["expert_cycle"] = self.bank.state()
        tensors["iteration"] = torch.tensor([self.iteration], dtype=torch.int64)
        return tensors

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state` (same synthetic-set shapes and optimiser groups)."""
        params = dict(self.syn.named_parameters())
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(tensors[f"syn.{name}"])
        for name, param in params.items():
            key = f"momentum.{name}"
            if key in tensors:
                self.optimizer.state[param]["momentum_buffer"] = (
                    tensors[key].to(param.device).clone()
                )
        self.generator.set_state(tensors["generator"])
        if "expert_cycle" in tensors:
            self.bank.load_state(tensors["expert_cycle"])
        self.iteration = int(tensors["iteration"][0])


def run_distillation(
    distiller: Distiller,
    iterations: int,
    checkpoint: Path | None = None,
    every: int = 50,
    fingerprint: str = "",
    show_progress: bool = True,
    description: str = "distillation",
) -> list[dict[str, Any]]:
    """Run the outer loop to ``iterations``, checkpointing every ``every`` iterations.

    A checkpoint with the same ``fingerprint`` (configuration + experts) and at most
    ``iterations`` done is resumed exactly (so a finished run can be extended). Any other
    (unreadable, damaged: its tensors no longer match their content hash, another fingerprint,
    or a longer run) is never used: it is set aside as ``<name>.rejected`` with a warning
    saying why, and the run starts over. When the loss diverges the exception propagates and
    the last good checkpoint stays on disk.

    Returns:
        One history row per iteration (all of them, including resumed ones).
    """
    history: list[dict[str, Any]] = []
    if checkpoint is not None and checkpoint.is_file():
        reason = None
        try:
            saved = load_bundle(checkpoint, require_hash=True)
        except BundleIntegrityError as error:
            reason = str(error)
        else:
            saved_at = int(saved["iteration"][0]) if "iteration" in saved.tensors else -1
            if saved.metadata.get("fingerprint") != fingerprint:
                reason = f"{checkpoint}: written for another configuration or other experts"
            elif saved_at > iterations:
                reason = f"{checkpoint}: {saved_at} iterations done, more than {iterations}"
        if reason is None:
            distiller.load_state(saved.tensors)
            # the metadata JSON sorts keys: restore each row's column order as it was written
            columns = saved.metadata.get("columns") or []
            history = [
                {**{k: row[k] for k in columns if k in row}, **row}
                for row in saved.metadata["history"]
            ]
            logger.info(
                "resuming distillation at iteration %d from %s", distiller.iteration, checkpoint
            )
        else:
            rejected = checkpoint.with_name(checkpoint.name + ".rejected")
            os.replace(checkpoint, rejected)
            logger.warning("%s; set aside as %s, distilling from the start", reason, rejected)
    bar = tqdm(
        total=iterations,
        initial=distiller.iteration,
        desc=description,
        disable=not show_progress,
    )
    while distiller.iteration < iterations:
        row = distiller.step()
        history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr_image']:.3g}/{row['lr_text']:.3g}")
        done = distiller.iteration == iterations
        if checkpoint is not None and (distiller.iteration % every == 0 or done):
            metadata = {"fingerprint": fingerprint, "history": history, "columns": list(row)}
            save_bundle(TensorBundle(distiller.state(), metadata), checkpoint)
    bar.close()
    return history
