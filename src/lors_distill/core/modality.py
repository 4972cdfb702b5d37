"""The modality-collapse diagnostic (RepBlend's motivation, PAPER.md section 7): where a set's
image and text embeddings lie, compared with real pairs.

Under one trained model (the first expert's final parameters), a set's images and texts are
embedded (unit vectors), and two kinds of number are taken:

* ``paired_cosine``: the mean cosine between each image and its own text (how close the two
  halves of a pair are);
* ``image_spread`` / ``text_spread``: the mean Euclidean distance between two different
  embeddings of one modality (how spread out the modality is; 0 when all collapse to one
  point, at most 2).

LoRS's failure as RepBlend describes it: synthetic images and texts concentrate in separate
regions, so ``paired_cosine`` and the spreads fall below those of real pairs.
"""

from __future__ import annotations

import torch


def mean_pairwise_distance(embeddings: torch.Tensor) -> float:
    """The mean Euclidean distance over distinct rows ``i != j`` of ``(N, D)``."""
    count = embeddings.shape[0]
    if count < 2:
        raise ValueError("the spread of a modality needs at least two embeddings")
    distances = torch.cdist(embeddings.double(), embeddings.double())
    return float(distances.sum() / (count * (count - 1)))


def modality_numbers(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """``paired_cosine``, ``image_spread``, ``text_spread`` of paired ``(N, D)`` unit
    embeddings (row ``i`` of each is pair ``i``)."""
    if image.shape != text.shape:
        raise ValueError(
            f"paired embeddings differ in shape: {tuple(image.shape)} vs {tuple(text.shape)}"
        )
    image, text = image.double(), text.double()
    return {
        "paired_cosine": float((image * text).sum(dim=1).mean()),
        "image_spread": mean_pairwise_distance(image),
        "text_spread": mean_pairwise_distance(text),
    }


def pca_basis(embeddings: torch.Tensor, components: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (D,), basis (D, components))`` of the principal components of ``(N, D)``,
    each sign fixed so its largest loading is positive (the same picture on every run)."""
    data = embeddings.double()
    mean = data.mean(dim=0)
    _, _, vh = torch.linalg.svd(data - mean, full_matrices=False)
    basis = vh[:components].T
    signs = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
    return mean, basis * signs


@torch.no_grad()
def embed_pairs(model, images: torch.Tensor, texts: torch.Tensor, batch_size: int = 256):
    """Unit image and text embeddings of a set under ``model`` (eval mode): ``images`` already
    in the model's normalised pixel space, ``texts`` frozen text vectors."""
    was_training = model.training
    model.eval()
    try:
        image = torch.cat([model.encode_image(part) for part in images.split(batch_size)])
        text = torch.cat([model.encode_text(part) for part in texts.split(batch_size)])
    finally:
        model.train(was_training)
    return image.float(), text.float()
