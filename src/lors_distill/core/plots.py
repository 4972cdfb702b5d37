"""Report figures (matplotlib ``Figure`` objects, no pyplot global state)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

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


def recall_bars(done: Sequence[dict[str, Any]]) -> Figure:
    """Mean recall per evaluated set, last epoch and (hatched) the validation-chosen epoch."""
    figure = Figure(figsize=(9, 4))
    axis = figure.add_subplot()
    names = [r["method"] for r in done]
    positions = range(len(names))
    colours = [
        "tab:red" if n == "lors" else "tab:grey" if n == "full_data" else "tab:blue" for n in names
    ]
    width = 0.4
    axis.bar(
        [x - width / 2 for x in positions],
        [r["mean"]["mean_recall"] for r in done],
        width,
        yerr=[r["std"]["mean_recall"] for r in done],
        capsize=3,
        color=colours,
        label="last epoch",
    )
    chosen = [
        (x, r["val_selected"]) for x, r in zip(positions, done, strict=True) if "val_selected" in r
    ]
    if chosen:
        axis.bar(
            [x + width / 2 for x, _ in chosen],
            [c["mean"]["mean_recall"] for _, c in chosen],
            width,
            yerr=[c["std"]["mean_recall"] for _, c in chosen],
            capsize=3,
            color=[colours[x] for x, _ in chosen],
            alpha=0.45,
            hatch="//",
            label="epoch chosen on validation",
        )
        axis.legend(fontsize=8)
    axis.set_xticks(list(positions), names, rotation=30)
    axis.set_ylabel("mean of IR/TR Recall@1/5/10 (%)")
    axis.set_title(
        "Retrieval on the test split after training on each set (error bars: std over seeds)",
        fontsize=10,
    )
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def recall_vs_budget_figure(entries: Sequence[dict[str, Any]], methods: Sequence[str]) -> Figure:
    """Mean recall (± std over seeds) against the number of pairs, one line per method of
    ``methods`` (``entries``: the archived budgets of one setup, by number of pairs), with the
    full-data bound."""
    figure = Figure(figsize=(7, 4.5))
    axis = figure.add_subplot()
    for method in methods:
        points = [e for e in entries if f"{method}.mean_recall.mean" in e]
        if points:
            axis.errorbar(
                [e["num_pairs"] for e in points],
                [e[f"{method}.mean_recall.mean"] for e in points],
                yerr=[e[f"{method}.mean_recall.std"] for e in points],
                marker="o",
                capsize=3,
                label=method,
                linewidth=2.5 if method == "lors" else 1.2,
            )
    full = [e["full_data.mean_recall.mean"] for e in entries if "full_data.mean_recall.mean" in e]
    if full:
        axis.axhline(full[-1], color="grey", linestyle="--", label="full data (experts)")
    axis.set_xscale("log")
    axis.set_xlabel("pairs in the set (distillation.num_pairs)")
    axis.set_ylabel("mean of IR/TR Recall@1/5/10 (%)")
    title = "Retrieval vs budget (error bars: std over seeds)"
    if len(entries) < 2:
        title += "\none budget so far: rerun with --params distillation.num_pairs=<N> to add one"
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def modality_figure(
    panels: Sequence[tuple[str, torch.Tensor, torch.Tensor, dict[str, float]]],
    real: tuple[torch.Tensor, torch.Tensor],
    title: str,
) -> Figure:
    """One panel per set: its image (circles) and text (triangles) embeddings in 2-D, each pair
    joined by a thin line, over real pairs drawn faintly behind. ``panels``: ``(name, image
    (N, 2), text (N, 2), numbers)``; ``real``: the real pairs' ``(image (M, 2), text (M, 2))``."""
    columns = min(3, max(1, len(panels)))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 4.0 * rows))
    real_image, real_text = (x.numpy() for x in real)
    for index, (name, image, text, numbers) in enumerate(panels):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.scatter(*real_image.T, s=4, c="tab:blue", alpha=0.08, linewidths=0)
        axis.scatter(*real_text.T, s=4, c="tab:orange", alpha=0.08, linewidths=0, marker="^")
        image, text = image.numpy(), text.numpy()
        for a, b in zip(image, text, strict=True):
            axis.plot([a[0], b[0]], [a[1], b[1]], c="0.6", lw=0.3, alpha=0.6)
        axis.scatter(*image.T, s=12, c="tab:blue", label="image", edgecolors="k", linewidths=0.2)
        axis.scatter(
            *text.T, s=14, c="tab:orange", label="text", marker="^", edgecolors="k", linewidths=0.2
        )
        axis.set_title(
            f"{name}\npaired cos {numbers['paired_cosine']:.2f}, spread image "
            f"{numbers['image_spread']:.2f} / text {numbers['text_spread']:.2f}",
            fontsize=8,
        )
        axis.tick_params(labelsize=6)
        if index == 0:
            axis.legend(fontsize=7, loc="best")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
