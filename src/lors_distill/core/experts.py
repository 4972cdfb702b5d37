"""Expert training: InfoNCE on the full real data, one flat parameter snapshot per epoch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from lors_distill.core.augment import RAND_AUGMENT_STYLES, crop_and_flip
from lors_distill.core.data import ImageTextSplit, Normalizer
from lors_distill.core.device import seeded_rng, to_device
from lors_distill.core.flat import ParameterLayout, flatten_parameters
from lors_distill.core.losses import symmetric_infonce
from lors_distill.core.models import DualEncoder
from lors_distill.core.retrieval import evaluate_model

if TYPE_CHECKING:
    from lors_distill.core.config import ExpertsParams

logger = logging.getLogger(__name__)

_POSTFIX_EVERY = 25  # progress-bar loss refresh (each refresh waits for the device)


@dataclass
class ExpertResult:
    """Trajectory and diagnostics of one expert.

    Attributes:
        trajectory: ``(epochs + 1, P)`` float32; row 0 is the initialisation.
        train_loss: mean InfoNCE loss per epoch, ``(epochs,)``.
        val_recall: Recall@K on the validation split after the last epoch.
        images_per_second: training throughput (augmentation + forward + backward + step).
    """

    trajectory: torch.Tensor
    train_loss: torch.Tensor
    val_recall: dict[str, float]
    images_per_second: float


def epoch_pairs(
    split: ImageTextSplit, mode: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (image, caption) pairs of one epoch, shuffled.

    ``random_one``: every image once, with one of its captions drawn at random;
    ``all``: every caption once, with its image.
    """
    if mode == "all":
        captions = torch.arange(split.text.shape[0])
        images = split.caption_image
    else:
        order, offsets, counts = split.captions_by_image()
        has = counts > 0
        images = torch.arange(split.num_images)[has]
        pick = (torch.rand(images.shape[0], generator=generator) * counts[has]).long()
        captions = order[offsets[has] + pick]
    permutation = torch.randperm(images.shape[0], generator=generator)
    return images[permutation], captions[permutation]


@torch.no_grad()
def backbone_features(
    model: DualEncoder,
    images: torch.Tensor,
    normalize: Normalizer | Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    batch_size: int,
) -> torch.Tensor:
    """A frozen backbone's features of ``(N, 3, S, S)`` uint8 images (eval mode, on
    ``device``), ``batch_size`` at a time."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat(
            [
                model.backbone_features(normalize(to_device(images[i : i + batch_size], device)))
                for i in range(0, images.shape[0], batch_size)
            ]
        )
    finally:
        model.train(was_training)


def train_expert(
    model: DualEncoder,
    train: ImageTextSplit,
    val: ImageTextSplit,
    config: ExpertsParams,
    normalize: Normalizer | Callable[[torch.Tensor], torch.Tensor],
    seed: int,
    device: torch.device,
    description: str = "expert",
    cache_features: bool = False,
    record: bool = True,
) -> ExpertResult:
    """Train ``model`` in place with symmetric InfoNCE and record its trajectory.

    Every random choice (caption picks, order, augmentation, dropout) comes from ``seed``, so the
    same inputs give the same trajectory on CPU.

    With a frozen backbone (the frozen-backbone protocol) only the two heads train. With
    ``cache_features`` the backbone then encodes each train image once, un-augmented, and the
    epochs train the heads on those features (no augmentation: it would need the backbone
    again). ``record: false`` keeps only the first and the last parameters (a backbone's
    training, whose trajectory nobody matches).
    """
    layout = ParameterLayout.of(model)
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        [
            {"params": model.image_parameters(), "lr": config.lr_image},
            {"params": model.text_head.parameters(), "lr": config.lr_text},
        ],
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    autocast = config.mixed_precision and device.type == "cuda"
    cached = None
    if cache_features:
        if not model.frozen_backbone:
            raise ValueError("cache_features needs a frozen backbone (its features never change)")
        cached = backbone_features(model, train.images, normalize, device, config.eval_batch_size)
        logger.info(
            "%s: %d train images encoded once by the frozen backbone (no augmentation)",
            description,
            cached.shape[0],
        )
    snapshots = [flatten_parameters(model, layout).cpu()]
    losses, seen, elapsed = [], 0, 0.0
    with seeded_rng(seed, device):  # dropout masks
        for epoch in range(config.epochs):
            images, captions = epoch_pairs(train, config.captions_per_epoch, generator)
            batches = list(torch.split(torch.arange(images.shape[0]), config.batch_size))
            if len(batches) > 1 and batches[-1].numel() < 2:
                batches = batches[:-1]  # InfoNCE needs at least two pairs
            total, start = torch.zeros((), device=device), time.perf_counter()
            bar = tqdm(
                batches, desc=f"{description} epoch {epoch + 1}/{config.epochs}", leave=False
            )
            for step, batch in enumerate(bar):
                text = train.text[captions[batch]]
                if cached is not None:
                    inputs = cached[to_device(images[batch], device)]
                else:
                    pixels = train.images[images[batch]]
                    if config.augment.rand_augment:
                        pixels = RAND_AUGMENT_STYLES[config.augment.rand_augment_style](
                            pixels,
                            config.augment.rand_augment_ops,
                            config.augment.rand_augment_magnitude,
                            generator,
                        )
                    pixels = to_device(pixels, device)
                    inputs = crop_and_flip(normalize(pixels), config.augment, generator)
                text = to_device(text, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = symmetric_infonce(model(inputs, text, from_features=cached is not None))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * batch.numel()  # no host sync per step (GPU)
                if step % _POSTFIX_EVERY == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            total = float(total)  # waits for the epoch's last step, so the clock is honest
            elapsed += time.perf_counter() - start
            seen += sum(b.numel() for b in batches)
            losses.append(total / max(1, sum(b.numel() for b in batches)))
            if record or epoch == config.epochs - 1:
                snapshots.append(flatten_parameters(model, layout).cpu())
            logger.info(
                "%s epoch %d/%d: loss %.4f", description, epoch + 1, config.epochs, losses[-1]
            )
    recall = evaluate_model(
        model, val.images, val.text, val.caption_image, normalize, device, config.eval_batch_size
    )
    return ExpertResult(
        trajectory=torch.stack(snapshots),
        train_loss=torch.tensor(losses, dtype=torch.float32),
        val_recall=recall,
        images_per_second=seen / max(elapsed, 1e-9),
    )
