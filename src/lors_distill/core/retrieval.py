"""Image-text retrieval Recall@K (TR: image -> text, IR: text -> image).

Ties count against the model: a correct item is at rank ``r`` where ``r`` is the number of wrong
candidates scoring **at least** as high. A collapsed model that scores everything equally thus
gets (near) zero recall instead of a perfect one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

KS = (1, 5, 10)


def recall_at_k(
    similarity: torch.Tensor, caption_image: torch.Tensor, ks: Sequence[int] = KS, chunk: int = 1024
) -> dict[str, float]:
    """Recall@K both ways, in percent, plus their mean.

    Args:
        similarity: ``(N_images, M_captions)`` scores.
        caption_image: ``(M,)`` int64, the image index of each caption.
        ks: the K values.
        chunk: rows processed at once (bounds memory for large test sets).

    Returns:
        ``{"tr@1", ..., "ir@1", ..., "mean_recall"}``; TR counts a hit when any of the image's
        captions is within the top K, IR when the caption's image is.
    """
    n_images, n_captions = similarity.shape
    caption_image = caption_image.to(similarity.device)
    if caption_image.shape != (n_captions,):
        raise ValueError(
            f"caption_image has shape {tuple(caption_image.shape)}, need ({n_captions},)"
        )
    # IR: for each caption, how many images score >= its own image
    ir_ranks = []
    for start in range(0, n_captions, chunk):
        block = similarity[:, start : start + chunk]  # (N, c)
        own = caption_image[start : start + chunk]
        correct = block.gather(0, own[None, :]).squeeze(0)
        ir_ranks.append((block >= correct[None, :]).sum(0) - 1)
    ir_rank = torch.cat(ir_ranks)
    # TR: for each image, the best of its captions vs. the wrong captions scoring >= it
    is_own = caption_image[None, :] == torch.arange(n_images, device=similarity.device)[:, None]
    tr_ranks = []
    for start in range(0, n_images, chunk):
        block = similarity[start : start + chunk]
        own = is_own[start : start + chunk]
        best = block.masked_fill(~own, float("-inf")).max(dim=1).values
        tr_ranks.append(((block >= best[:, None]) & ~own).sum(1))
    tr_rank = torch.cat(tr_ranks)
    has_caption = is_own.any(dim=1)
    result = {}
    for k in ks:
        result[f"tr@{k}"] = 100.0 * (tr_rank[has_caption] < k).float().mean().item()
    for k in ks:
        result[f"ir@{k}"] = 100.0 * (ir_rank < k).float().mean().item()
    result["mean_recall"] = sum(result.values()) / len(result)
    return result


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    images: torch.Tensor,
    text: torch.Tensor,
    caption_image: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    batch_size: int = 512,
) -> dict[str, float]:
    """Recall@K of a dual encoder on one split (eval mode, no augmentation).

    Args:
        model: a :class:`~lors_distill.core.models.DualEncoder`.
        images: ``(N, 3, S, S)`` uint8; text: ``(M, d)``; caption_image: ``(M,)``.
        normalize: uint8 -> model input.
    """
    was_training = model.training
    model.eval()
    try:
        image_features = torch.cat(
            [
                model.encode_image(normalize(images[i : i + batch_size].to(device)))
                for i in range(0, images.shape[0], batch_size)
            ]
        )
        text_features = torch.cat(
            [
                model.encode_text(text[i : i + batch_size].to(device))
                for i in range(0, text.shape[0], batch_size)
            ]
        )
    finally:
        model.train(was_training)
    return recall_at_k(image_features @ text_features.T, caption_image)
