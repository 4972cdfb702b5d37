"""Report figures (matplotlib ``Figure`` objects, no pyplot global state)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import pandas as pd
import torch
from matplotlib.figure import Figure


def synthetic_pairs_figure(
    images: torch.Tensor, captions: Sequence[str], columns: int = 6, title: str = ""
) -> Figure:
    """A grid of ``(n, 3, S, S)`` uint8 images, each titled with its caption (wrapped)."""
    count = images.shape[0]
    rows = max(1, -(-count // columns))
    figure = Figure(figsize=(2.4 * columns, 2.9 * rows))
    for index in range(count):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.imshow(images[index].permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title("\n".join(textwrap.wrap(captions[index], 28)[:4]), fontsize=7)
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def similarity_heatmap(matrix: torch.Tensor, title: str) -> Figure:
    """Heatmap of an ``(N, N)`` similarity matrix (images as rows, texts as columns)."""
    figure = Figure(figsize=(6, 5))
    axis = figure.add_subplot()
    values = matrix.detach().cpu().numpy()
    bound = max(abs(values.min()), abs(values.max()), 1e-6)
    image = axis.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    axis.set_xlabel("synthetic text j")
    axis.set_ylabel("synthetic image i")
    axis.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return figure


def distillation_curves(history: pd.DataFrame) -> Figure:
    """Matching loss (and per-branch losses) and the learned inner learning rates per iteration."""
    figure = Figure(figsize=(10, 4))
    loss_axis, lr_axis = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    window = max(1, len(history) // 25)
    for column in [c for c in history.columns if c.startswith("loss")]:
        smooth = history[column].rolling(window, min_periods=1).mean()
        loss_axis.plot(history["iteration"], smooth, label=column)
    loss_axis.set_xlabel("outer iteration")
    loss_axis.set_ylabel(f"matching loss (rolling mean of {window})")
    loss_axis.legend(fontsize="small")
    loss_axis.grid(alpha=0.3)
    lr_axis.plot(history["iteration"], history["lr_image"], label="image encoder")
    lr_axis.plot(history["iteration"], history["lr_text"], label="text head")
    lr_axis.set_xlabel("outer iteration")
    lr_axis.set_ylabel("learned inner learning rate")
    lr_axis.legend(fontsize="small")
    lr_axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
