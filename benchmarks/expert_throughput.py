"""Expert training throughput (images per second) at a given shape, with random data.

Runs the real expert trainer (augmentation, forward, backward, SGD step; the validation pass is
not timed) for one epoch over random images and caption vectors, after a two-batch warm-up
epoch, and prints one JSON line:

    python benchmarks/expert_throughput.py                      # built-in shape (CPU)
    python benchmarks/expert_throughput.py --case paper         # NFNet-L0, 224 px, batch 128
    python benchmarks/expert_throughput.py --case paper --mixed-precision

Cases:
  builtin  convnet width 32 depth 3, 32 px, 384-d text, batch 128, crop + flip.
  paper    timm nfnet_l0 (random init), 224 px, 768-d text, batch 128, crop + flip +
           RandAugment(2, 5) as the paper's experts.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from lors_distill.config_loader import load_section
from lors_distill.core.augment import AugmentConfig
from lors_distill.core.config import ExpertsParams
from lors_distill.core.data import ImageTextSplit, Normalizer
from lors_distill.core.experts import train_expert
from lors_distill.core.models import ConvNetConfig, ImageEncoderSpec, ModelRecipe

CONF = Path(__file__).resolve().parents[1] / "conf"

CASES = {
    "builtin": dict(encoder="convnet", size=32, text_dim=384, images=2560, rand_augment=False),
    "paper": dict(encoder="timm:nfnet_l0", size=224, text_dim=768, images=1280, rand_augment=True),
}


def split(images: int, size: int, text_dim: int, generator: torch.Generator) -> ImageTextSplit:
    pixels = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
    captions = torch.arange(images).repeat_interleave(5)
    text = torch.randn(captions.numel(), text_dim, generator=generator)
    return ImageTextSplit(pixels, text, captions)


def one_epoch_config(rand_augment: bool, mixed_precision: bool) -> ExpertsParams:
    """One epoch of the paper's expert recipe (SGD lr 0.1, batch 128, crop + flip)."""
    return load_section(
        "experts",
        CONF,
        "base",
        epochs=1,
        batch_size=128,
        lr_image=0.1,
        lr_text=0.1,
        momentum=0.0,
        weight_decay=0.0,
        captions_per_epoch="random_one",
        augment=AugmentConfig(
            random_resized_crop=True,
            crop_scale=(0.5, 1.0),
            flip=True,
            rand_augment=rand_augment,
            rand_augment_ops=2,
            rand_augment_magnitude=5,
            rand_augment_style="torchvision",
        ),
        mixed_precision=mixed_precision,
        eval_batch_size=256,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="builtin", choices=sorted(CASES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=None, help="images in the timed epoch")
    parser.add_argument("--mixed-precision", action="store_true", help="bf16 autocast on CUDA")
    args = parser.parse_args()
    case = CASES[args.case]
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    train = split(args.images or case["images"], case["size"], case["text_dim"], generator)
    val = split(64, case["size"], case["text_dim"], generator)
    recipe = ModelRecipe(
        ImageEncoderSpec(
            case["encoder"],
            case["size"],
            False,
            ConvNetConfig(width=32, depth=3, norm="instancenorm"),
        ),
        case["text_dim"],
        0.1,
        0.07,
    )
    config = one_epoch_config(case["rand_augment"], args.mixed_precision)
    normalizer = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    # warm-up (allocator, cuDNN algorithm choice) on a few batches, not timed
    warm = split(2 * config.batch_size, case["size"], case["text_dim"], generator)
    train_expert(recipe.build(seed=1), warm, val, config, normalizer, seed=1, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = train_expert(
        recipe.build(seed=0),
        train,
        val,
        config,
        normalizer,
        seed=0,
        device=device,
    )
    extra = (
        {"gpu": torch.cuda.get_device_name(device),
         "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}
        if device.type == "cuda"
        else {"cpu_threads": torch.get_num_threads()}
    )  # fmt: skip
    print(
        json.dumps(
            {
                "case": args.case,
                "device": device.type,
                "mixed_precision": args.mixed_precision and device.type == "cuda",
                "images": train.num_images,
                "batch_size": config.batch_size,
                "images_per_second": round(result.images_per_second, 1),
                **extra,
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
