"""Train a fresh dual encoder on a small (distilled or coreset) set, then score it on real data.

PAPER.md section 4: SGD with momentum and weight decay, the set's own learning rates (the learned
etas for distilled sets, the experts' lr for coresets), its similarity ``S`` as soft targets, the
learning rate divided by 10 at mid-training, and Recall@K on the test split after the **last**
epoch (never an epoch picked on the test set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lors_distill.core.device import seeded_rng
from lors_distill.core.losses import soft_loss
from lors_distill.core.models import DualEncoder
from lors_distill.core.retrieval import evaluate_model
from lors_distill.core.similarity import Similarity


@dataclass(frozen=True)
class EvalTrainingConfig:
    """How the fresh model is trained on the small set (paper: 100 epochs, batch 128,
    momentum 0.9, weight decay 5e-4, lr x0.1 at mid-training, WBCE)."""

    epochs: int
    batch_size: int
    momentum: float
    weight_decay: float
    lr_decay_epoch: int
    lr_decay_factor: float
    loss: str


@dataclass
class SmallSet:
    """A training set for evaluation.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in the model's normalised pixel space.
        texts: ``(N, d)`` frozen text vectors.
        similarity: the soft targets ``S`` (identity for one-hot); mini-batches use ``S[B, B]``.
        lrs: ``(2,)`` learning rates for the image encoder and the text head.
    """

    images: torch.Tensor
    texts: torch.Tensor
    similarity: Similarity
    lrs: torch.Tensor


def train_on_small_set(
    model: DualEncoder,
    data: SmallSet,
    config: EvalTrainingConfig,
    seed: int,
    device: torch.device,
    show_progress: bool = False,
) -> list[float]:
    """Train ``model`` in place on ``data``; returns the mean loss per epoch."""
    loss_fn = soft_loss(config.loss)
    model.to(device).train()
    lr_image, lr_text = (float(x) for x in data.lrs)
    optimizer = torch.optim.SGD(
        [
            {"params": model.image_encoder.parameters(), "lr": lr_image},
            {"params": model.text_head.parameters(), "lr": lr_text},
        ],
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[config.lr_decay_epoch], gamma=config.lr_decay_factor
    )
    images, texts = data.images.to(device), data.texts.to(device)
    similarity = data.similarity.to(device)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    with seeded_rng(seed, device):  # dropout
        for _ in tqdm(range(config.epochs), desc="evaluation training", disable=not show_progress):
            order = torch.randperm(images.shape[0], generator=generator)
            total = 0.0
            for batch in order.split(config.batch_size):
                batch = batch.to(device)
                logits = model(images[batch], texts[batch])
                with torch.no_grad():
                    targets = similarity.block(batch)
                loss = loss_fn(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * batch.numel()
            scheduler.step()
            losses.append(total / images.shape[0])
    return losses


def evaluate_small_set(
    build_model: Callable[[int], DualEncoder],
    data: SmallSet,
    test_images: torch.Tensor,
    test_text: torch.Tensor,
    test_caption_image: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    config: EvalTrainingConfig,
    seeds: list[int],
    device: torch.device,
) -> list[dict[str, float]]:
    """Recall@K on the test split of one fresh model per seed (last epoch)."""
    results = []
    for seed in seeds:
        model = build_model(seed)
        train_on_small_set(model, data, config, seed, device)
        results.append(
            evaluate_model(model, test_images, test_text, test_caption_image, normalize, device)
        )
    return results
