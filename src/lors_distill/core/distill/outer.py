"""The outer loop: an SGD step on the synthetic set after each matching pass, with its
resumable state."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch

from lors_distill.core.distill.expert_bank import ExpertBank
from lors_distill.core.distill.matcher import TrajectoryMatcher
from lors_distill.core.distill.synthetic import SyntheticSet
from lors_distill.core.similarity import similarity_stats

if TYPE_CHECKING:
    from lors_distill.core.config import DistillationParams

logger = logging.getLogger(__name__)


class DistillationDivergedError(RuntimeError):
    """The matching loss became NaN or infinite."""


def build_optimizer(syn: SyntheticSet, outer: DistillationParams) -> torch.optim.SGD:
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
        config: DistillationParams,
        generator: torch.Generator,
    ) -> None:
        self.syn = syn
        self.matcher = matcher
        self.bank = bank
        self.config = config  # the outer SGD and the expert window (the matcher holds the same)
        self.generator = generator
        self.optimizer = build_optimizer(syn, config)
        self.iteration = 0

    def step(self) -> dict[str, Any]:
        """One outer iteration; returns its history row."""
        config = self.config
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
        self._step_optimizer()
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

    def _step_optimizer(self) -> None:
        """The SGD step, with the inner learning rates held for ``lr_warmup`` iterations,
        their gradient clamped to ``[-lr_grad_clip, lr_grad_clip]`` and, in ``lr_space: log``,
        stepped on their logarithms (the momentum buffer then holds the log-space gradient);
        then the floor ``min_inner_lr``."""
        config, lrs = self.config, self.syn.lrs
        if self.iteration < config.lr_warmup:
            lrs.grad = None  # SGD leaves a parameter without a gradient (and its momentum) as is
        elif config.lr_grad_clip is not None and lrs.grad is not None:
            lrs.grad.clamp_(-config.lr_grad_clip, config.lr_grad_clip)
        log = config.lr_space == "log" and lrs.grad is not None
        if log:
            with torch.no_grad():
                lrs.grad.mul_(lrs)  # d loss / d log(lr) = lr * d loss / d lr
                lrs.log_()
        self.optimizer.step()
        with torch.no_grad():
            if log:
                lrs.exp_()
            lrs.clamp_(min=config.min_inner_lr)

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
