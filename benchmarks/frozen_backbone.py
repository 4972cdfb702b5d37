"""The frozen-backbone protocol (RepBlend's) against full fine-tuning (LoRS's), side by side.

At the built-in shape (ConvNet width 32 / depth 3 at 32 px, 384-d text, N = 100 pairs,
mini-batch 20, syn_steps 8) on random data, each variant times in a fresh child process:

- ``distill``: seconds per outer distillation iteration (median of ``--repeat`` after 2
  warm-up iterations) with the gradient ``--grad-mode`` (default ``full``, the built-in LoRS
  gradient; ``tesla`` is the paper-scale one);
- ``expert``: one expert of ``--expert-epochs`` epochs (6, the built-in experts') over 5,000
  images (the built-in train split's size), with what it needs first (the cached variant:
  encoding every image once).

Variants:
  fine_tune        the image encoder and the text head trained (LoRS, MTT-VL, TESLA-VL);
  frozen           a frozen backbone with an image head; distillation runs the backbone once
                   per iteration over the N synthetic images, experts cache the backbone's
                   features (what this project ships);
  frozen_per_step  the same protocol computed as the reference does: the backbone in every
                   inner step, experts running it on augmented images every step.

Rounds alternate the variants; medians and the ratios to ``fine_tune`` are printed:

    python benchmarks/frozen_backbone.py                  # 3 rounds, grad mode full
    python benchmarks/frozen_backbone.py --grad-mode tesla --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmarks

VARIANTS = ("fine_tune", "frozen", "frozen_per_step")


def _workload(variant: str, grad_mode: str, repeat: int, expert_epochs: int) -> dict:
    import distill_step
    from expert_throughput import one_epoch_config, split

    from lors_distill.core.bundle import TensorBundle
    from lors_distill.core.data import Normalizer
    from lors_distill.core.distill import Distiller, ExpertBank, SyntheticSet, TrajectoryMatcher
    from lors_distill.core.distill.matcher import FastPath
    from lors_distill.core.experts import train_expert
    from lors_distill.core.flat import ParameterLayout, flatten_parameters
    from lors_distill.core.models import ModelRecipe
    from lors_distill.core.similarity import build_similarity

    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    recipe = ModelRecipe.convnet(32, 384, width=32, depth=3)
    frozen = variant != "fine_tune"
    backbone = None
    if frozen:
        backbone = TensorBundle(dict(recipe.build(100).image_encoder.state_dict()))
        recipe = recipe.frozen(backbone)
    model = recipe.build(0, backbone=backbone).train()
    layout = ParameterLayout.of(model)
    start = flatten_parameters(model)
    trajectories = [
        start + 0.01 * torch.randn(3, layout.size, generator=generator).cumsum(0) for _ in range(2)
    ]
    n = 100
    syn = SyntheticSet(
        torch.randn(n, 3, 32, 32, generator=generator),
        torch.randn(n, 384, generator=generator),
        0.1,
        build_similarity("lowrank", n, 10, 3.0, generator),
    )
    config = distill_step.step_config(n, 8, 20, grad_mode)
    fast = FastPath(backbone_once=variant != "frozen_per_step")
    distiller = Distiller(
        syn,
        TrajectoryMatcher(model, layout, config, fast),
        ExpertBank(trajectories, last_needed=2, device=cpu),
        config,
        generator,
    )
    for _ in range(2):
        distiller.step()
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        distiller.step()
        times.append(time.perf_counter() - begin)

    train = split(5000, 32, 384, generator)
    val = split(64, 32, 384, generator)
    expert_config = one_epoch_config(rand_augment=False, mixed_precision=False).updated(
        epochs=expert_epochs
    )
    normalizer = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    expert = recipe.build(1, backbone=backbone)
    begin = time.perf_counter()
    train_expert(
        expert, train, val, expert_config, normalizer, 1, cpu, cache_features=variant == "frozen"
    )
    epoch = time.perf_counter() - begin
    return {
        "variant": variant,
        "seconds": {"distill_iteration": statistics.median(times), "expert": epoch},
        "parameters_matched": layout.size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--grad-mode", default="full", choices=["tesla", "tesla_one_graph", "full"])
    parser.add_argument("--expert-epochs", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_workload(args.child, args.grad_mode, args.repeat, args.expert_epochs)))
        return
    import distill_step

    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            command = [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--grad-mode",
                args.grad_mode,
                "--repeat",
                str(args.repeat),
                "--expert-epochs",
                str(args.expert_epochs),
            ]
            out = subprocess.run(
                command, capture_output=True, text=True, check=True, env=os.environ
            )
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    parts = ("distill_iteration", "expert")
    median = {
        v: {p: statistics.median(r["seconds"][p] for r in rs) for p in parts}
        for v, rs in runs.items()
    }
    summary = {
        "median_seconds": {v: {p: round(s, 4) for p, s in m.items()} for v, m in median.items()},
        "speedup_over_fine_tune": {
            v: {p: round(median["fine_tune"][p] / m[p], 2) for p in parts}
            for v, m in median.items()
        },
        "parameters_matched": {v: rs[0]["parameters_matched"] for v, rs in runs.items()},
        "grad_mode": args.grad_mode,
        "rounds": args.rounds,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "commit": distill_step.git_commit(),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"| variant | parameters matched | distillation s/iteration | expert s |"
        f"  (median of {args.rounds}, grad_mode {args.grad_mode})"
    )
    print("|---|---|---|---|")
    for variant in VARIANTS:
        m, s = median[variant], summary["speedup_over_fine_tune"][variant]
        print(
            f"| {variant} | {summary['parameters_matched'][variant]:,} | "
            f"{m['distill_iteration']:.3f} ({s['distill_iteration']}x) | "
            f"{m['expert']:.2f} ({s['expert']}x) |"
        )
    print(f"commit {summary['commit']}, {summary['cpu_threads']} threads, torch {summary['torch']}")


if __name__ == "__main__":
    main()
