"""One flat parameter vector <-> named parameters, and running a model from a flat vector.

Trajectories and distillation work on flat vectors: one expert snapshot is one ``(P,)`` tensor.
The layout (names, shapes, offsets, branch) is explicit and stored with every trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class ParameterLayout:
    """Where each trainable parameter lives in the flat vector.

    Attributes:
        names: parameter names in ``named_parameters()`` order.
        shapes: their shapes.
        branches: ``"image"`` or ``"text"`` per parameter (image encoder vs text head).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    branches: tuple[str, ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        branches = tuple("text" if n.startswith("text_head.") else "image" for n, _ in named)
        first_text = branches.index("text") if "text" in branches else len(branches)
        if "image" in branches[first_text:]:
            raise ValueError("image-encoder parameters must precede the text head's")
        return cls(
            names=tuple(n for n, _ in named),
            shapes=tuple(tuple(p.shape) for _, p in named),
            branches=branches,
        )

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @property
    def size(self) -> int:
        """Total number of trainable parameters ``P``."""
        return sum(self.numels)

    @property
    def image_size(self) -> int:
        """Number of image-encoder parameters; ``flat[:image_size]`` is the image branch."""
        return sum(n for n, b in zip(self.numels, self.branches, strict=True) if b == "image")

    def branch_slices(self) -> dict[str, slice]:
        """``{"image": slice, "text": slice}`` into the flat vector."""
        return {"image": slice(0, self.image_size), "text": slice(self.image_size, self.size)}

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` ``(P,)`` shaped like the named parameters (gradients flow)."""
        if flat.shape != (self.size,):
            raise ValueError(
                f"flat vector has shape {tuple(flat.shape)}, layout needs ({self.size},)"
            )
        parts = torch.split(flat, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate named tensors (parameters or gradients) in layout order -> ``(P,)``."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "branches": list(self.branches),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParameterLayout:
        return cls(
            names=tuple(data["names"]),
            shapes=tuple(tuple(s) for s in data["shapes"]),
            branches=tuple(data["branches"]),
        )


def flatten_parameters(model: nn.Module, layout: ParameterLayout | None = None) -> torch.Tensor:
    """The model's trainable parameters as one detached float32 ``(P,)`` vector."""
    layout = layout or ParameterLayout.of(model)
    named = dict(model.named_parameters())
    return layout.flatten({n: named[n].detach() for n in layout.names}).float().clone()


@torch.no_grad()
def load_flat(model: nn.Module, flat: torch.Tensor, layout: ParameterLayout | None = None) -> None:
    """Copy a flat vector into the model's parameters in place."""
    layout = layout or ParameterLayout.of(model)
    named = dict(model.named_parameters())
    for name, value in layout.unflatten(flat).items():
        named[name].copy_(value)


def functional_forward(
    model: nn.Module, layout: ParameterLayout, flat: torch.Tensor, *args: Any, **kwargs: Any
) -> Any:
    """``model(*args, **kwargs)`` with its trainable parameters taken from ``flat``
    (differentiable w.r.t. ``flat``); parameters outside the layout (a frozen backbone) are
    the model's own."""
    return functional_call(model, layout.unflatten(flat), args, kwargs)
