"""Running the outer loop to a number of iterations with checkpoints it can resume from."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lors_distill.core.bundle import BundleIntegrityError, TensorBundle, load_bundle, save_bundle
from lors_distill.core.distill.outer import Distiller

logger = logging.getLogger(__name__)


def run_distillation(
    distiller: Distiller,
    iterations: int,
    checkpoint: Path | None = None,
    every: int | None = None,
    fingerprint: str = "",
    show_progress: bool = True,
    description: str = "distillation",
) -> list[dict[str, Any]]:
    """Run the outer loop to ``iterations``, checkpointing to ``checkpoint`` every ``every``
    iterations (``distillation.checkpoint_every``; both or neither).

    A checkpoint with the same ``fingerprint`` (configuration + experts) and at most
    ``iterations`` done is resumed exactly (so a finished run can be extended). Any other
    (unreadable, damaged: its tensors no longer match their content hash, another fingerprint,
    or a longer run) is never used: it is set aside as ``<name>.rejected`` with a warning
    saying why, and the run starts over. When the loss diverges the exception propagates and
    the last good checkpoint stays on disk.

    Returns:
        One history row per iteration (all of them, including resumed ones).
    """
    if (checkpoint is None) != (every is None):
        raise ValueError(
            "run_distillation: give both a checkpoint path and its interval, or neither"
        )
    history: list[dict[str, Any]] = []
    if checkpoint is not None and checkpoint.is_file():
        reason = None
        try:
            saved = load_bundle(checkpoint, require_hash=True)
        except BundleIntegrityError as error:
            reason = str(error)
        else:
            saved_at = int(saved["iteration"][0]) if "iteration" in saved.tensors else -1
            if saved.metadata.get("fingerprint") != fingerprint:
                reason = f"{checkpoint}: written for another configuration or other experts"
            elif saved_at > iterations:
                reason = f"{checkpoint}: {saved_at} iterations done, more than {iterations}"
        if reason is None:
            distiller.load_state(saved.tensors)
            # the metadata JSON sorts keys: restore each row's column order as it was written
            columns = saved.metadata.get("columns") or []
            history = [
                {**{k: row[k] for k in columns if k in row}, **row}
                for row in saved.metadata["history"]
            ]
            logger.info(
                "resuming distillation at iteration %d from %s", distiller.iteration, checkpoint
            )
        else:
            rejected = checkpoint.with_name(checkpoint.name + ".rejected")
            os.replace(checkpoint, rejected)
            logger.warning("%s; set aside as %s, distilling from the start", reason, rejected)
    bar = tqdm(
        total=iterations,
        initial=distiller.iteration,
        desc=description,
        disable=not show_progress,
    )
    while distiller.iteration < iterations:
        row = distiller.step()
        history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr_image']:.3g}/{row['lr_text']:.3g}")
        done = distiller.iteration == iterations
        if checkpoint is not None and (distiller.iteration % every == 0 or done):
            metadata = {"fingerprint": fingerprint, "history": history, "columns": list(row)}
            save_bundle(TensorBundle(distiller.state(), metadata), checkpoint)
    bar.close()
    return history
