"""The expert trajectories that matching draws a start and a target from."""

from __future__ import annotations

import logging
from typing import Literal

import torch

logger = logging.getLogger(__name__)


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
