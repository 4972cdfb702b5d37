"""Train a fresh dual encoder on a small (distilled or coreset) set, then score it on real data.

PAPER.md section 4: SGD with momentum and weight decay, the set's own learning rates (the learned
etas for distilled sets, the experts' lr for coresets), its similarity ``S`` as soft targets, the
learning rate divided by 10 at mid-training, and Recall@K on the test split after the **last**
epoch. Optionally also at the epoch picked on the **validation** split (every ``select_every``
epochs; never an epoch picked on the test set, which is what the reference code does).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from lors_distill.core.device import seeded_rng
from lors_distill.core.losses import soft_loss
from lors_distill.core.models import DualEncoder
from lors_distill.core.retrieval import evaluate_model
from lors_distill.core.similarity import Similarity

if TYPE_CHECKING:
    from lors_distill.core.config import EvaluationParams


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


@dataclass(frozen=True)
class RetrievalSplit:
    """A real split to score on: ``images (N, 3, S, S)`` uint8, ``text (M, d)`` frozen
    vectors, ``caption_image (M,)`` the image of each caption."""

    images: torch.Tensor
    text: torch.Tensor
    caption_image: torch.Tensor


class ValidationSelector:
    """Scores the model on the validation split every ``every`` epochs (and after the last) and
    keeps a copy of the parameters with the best mean recall (the earliest on ties)."""

    def __init__(
        self,
        val: RetrievalSplit,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        every: int,
        epochs: int,
    ) -> None:
        self.val, self.normalize, self.device = val, normalize, device
        self.every, self.epochs = every, epochs
        self.best_epoch, self.best_recall = 0, float("-inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.curve: dict[int, float] = {}  # epoch -> validation mean recall (for tuning)

    def __call__(self, epoch: int, model: DualEncoder) -> None:
        if epoch % self.every and epoch != self.epochs:
            return
        recall = _score(model, self.val, self.normalize, self.device)["mean_recall"]
        self.curve[epoch] = recall
        if recall > self.best_recall:
            self.best_epoch, self.best_recall = epoch, recall
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def score_selected(
        self, model: DualEncoder, test: RetrievalSplit, last_epoch_scores: dict[str, float]
    ) -> dict[str, float]:
        """Test Recall@K of the selected parameters, with the epoch, its validation recall and
        the validation curve (what tuning reads: never the test split)."""
        scores = last_epoch_scores
        if self.best_epoch != self.epochs and self.best_state is not None:
            selected = copy.deepcopy(model)
            selected.load_state_dict(self.best_state)
            scores = _score(selected, test, self.normalize, self.device)
        return {
            **scores,
            "epoch": self.best_epoch,
            "val_mean_recall": self.best_recall,
            "val_curve": {str(epoch): value for epoch, value in self.curve.items()},
        }


def _score(model, split: RetrievalSplit, normalize, device) -> dict[str, float]:
    return evaluate_model(model, split.images, split.text, split.caption_image, normalize, device)


def train_on_small_set(
    model: DualEncoder,
    data: SmallSet,
    config: EvaluationParams,
    seed: int,
    device: torch.device,
    show_progress: bool = False,
    after_epoch: Callable[[int, DualEncoder], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``data``; returns the mean loss per epoch.

    With a frozen backbone (the frozen-backbone protocol) only the heads train, on the
    backbone's features of the set's images computed once.

    ``after_epoch(epoch, model)`` (1-based epoch) may score the model; it must leave the model's
    parameters, mode and the random state as they were (:class:`ValidationSelector` does).
    """
    loss_fn = soft_loss(config.loss)
    model.to(device).train()
    lr_image, lr_text = (float(x) for x in data.lrs)
    optimizer = torch.optim.SGD(
        [
            {"params": model.image_parameters(), "lr": lr_image},
            {"params": model.text_head.parameters(), "lr": lr_text},
        ],
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[config.lr_decay_epoch], gamma=config.lr_decay_factor
    )
    images, texts = data.images.to(device), data.texts.to(device)
    frozen = model.frozen_backbone
    if frozen:  # a frozen backbone (eval mode, no augmentation here): its features once
        with torch.no_grad():
            images = torch.cat(
                [model.backbone_features(part) for part in images.split(config.batch_size)]
            )
    similarity = data.similarity.to(device)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    with seeded_rng(seed, device):  # dropout
        for _ in tqdm(range(config.epochs), desc="evaluation training", disable=not show_progress):
            order = torch.randperm(images.shape[0], generator=generator)
            total = 0.0
            for batch in order.split(config.batch_size):
                batch = batch.to(device)
                logits = model(images[batch], texts[batch], from_features=frozen)
                with torch.no_grad():
                    targets = similarity.block(batch)
                loss = loss_fn(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * batch.numel()
            scheduler.step()
            losses.append(total / images.shape[0])
            if after_epoch is not None:
                after_epoch(len(losses), model)
    return losses


def evaluate_small_set(
    build_model: Callable[[int], DualEncoder],
    data: SmallSet,
    test: RetrievalSplit,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    config: EvaluationParams,
    seeds: list[int],
    device: torch.device,
    val: RetrievalSplit | None = None,
    select_every: int | None = None,
) -> tuple[list[dict[str, Any]], DualEncoder]:
    """Recall@K on the test split of one fresh model per seed.

    Each run reports the **last** epoch; with ``val`` and ``select_every`` it also holds
    ``val_selected``: the test Recall@K at the epoch with the best validation mean recall
    (scored every ``select_every`` epochs and after the last one), that epoch and its
    validation recall.

    Returns:
        The runs, and the first seed's model after its last epoch.
    """
    if not seeds:
        raise ValueError("evaluate_small_set needs at least one seed (evaluation.num_eval)")
    results: list[dict[str, Any]] = []
    first: DualEncoder | None = None
    for seed in seeds:
        model = build_model(seed)
        selector = (
            ValidationSelector(val, normalize, device, select_every, config.epochs)
            if val is not None and select_every
            else None
        )
        train_on_small_set(model, data, config, seed, device, after_epoch=selector)
        run: dict[str, Any] = _score(model, test, normalize, device)
        if selector is not None:
            run = {**run, "val_selected": selector.score_selected(model, test, run)}
        results.append(run)
        if first is None:
            first = model
    return results, first  # type: ignore[return-value]
