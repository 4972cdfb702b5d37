"""The pipeline's CPU hot loops with glibc's default allocator and with the tuned one, side by side.

``lors_distill.core.device.keep_freed_memory`` (run before every node) makes glibc reuse freed
memory instead of unmapping every large tensor and faulting fresh zeroed pages in for the next.
This times, at the built-in shape on random data, what the built-in run spends its time on:

- one evaluation run: a fresh ConvNet trained 100 epochs on 100 pairs (the evaluation protocol),
  then scored on a 1,000-image / 5,000-caption split (3 times);
- 6 outer distillation iterations (``tesla_one_graph``, the built-in shape of
  ``benchmarks/distill_step.py``);
- one expert epoch over 2,560 images (crop + flip).

Each variant runs in a fresh child process (the allocator is per process), alternating
default / tuned for ``--rounds`` rounds; the medians, their ratio and the results (final losses,
recall and SHA-256 hashes of the trained parameters, the distilled images and the expert
trajectory: equal when the tuning changes only speed) are printed:

    python benchmarks/allocator.py              # 3 rounds
    python benchmarks/allocator.py --rounds 5 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = ("default", "tuned")


sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmarks, imported lazily


def _sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def _workload(grad_mode: str = "tesla_one_graph") -> dict:
    """The timed work of one child process: seconds per part, and values to compare
    (``grad_mode``: the distillation's gradient)."""
    import distill_step
    from expert_throughput import one_epoch_config, split

    from lors_distill.config_loader import load_section
    from lors_distill.core.data import Normalizer
    from lors_distill.core.evaluate import SmallSet, train_on_small_set
    from lors_distill.core.experts import train_expert
    from lors_distill.core.models import ModelRecipe
    from lors_distill.core.retrieval import evaluate_model
    from lors_distill.core.similarity import IdentitySimilarity

    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    recipe = ModelRecipe.convnet(32, 384, width=32, depth=3)
    small = SmallSet(
        torch.randn(100, 3, 32, 32, generator=generator),
        torch.randn(100, 384, generator=generator),
        IdentitySimilarity(100),
        torch.tensor([0.1, 0.1]),
    )
    test_images = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    test_text = torch.randn(5000, 384, generator=generator)
    caption_image = torch.arange(1000).repeat_interleave(5)

    normalizer = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    config = load_section(
        "evaluation",
        distill_step.CONF,
        "base",
        epochs=100,
        batch_size=128,
        momentum=0.9,
        weight_decay=5e-4,
        lr_decay_epoch=50,
        lr_decay_factor=0.1,
        loss="wbce",
    )
    warm = config.updated(epochs=10)
    train_on_small_set(recipe.build(1), small, warm, 1, cpu)  # warm-up, not timed
    seconds: dict[str, float] = {}
    model = recipe.build(0)
    begin = time.perf_counter()
    losses = train_on_small_set(model, small, config, 0, cpu)
    seconds["evaluation_training"] = time.perf_counter() - begin
    begin = time.perf_counter()
    for _ in range(3):
        scores = evaluate_model(model, test_images, test_text, caption_image, normalizer, cpu)
    seconds["evaluation_scoring_x3"] = time.perf_counter() - begin

    distiller, _ = distill_step.build(distill_step.CASES["builtin"], cpu, 8, grad_mode)
    distiller.step()  # warm-up
    begin = time.perf_counter()
    for _ in range(6):
        distill_loss = float(distiller.step()["loss"])
    seconds["distillation_x6"] = time.perf_counter() - begin

    train = split(2560, 32, 384, generator)
    val = split(64, 32, 384, generator)
    expert_config = one_epoch_config(rand_augment=False, mixed_precision=False)
    begin = time.perf_counter()
    expert = train_expert(
        recipe.build(0), train, val, expert_config, normalizer, seed=0, device=cpu
    )
    seconds["expert_epoch"] = time.perf_counter() - begin
    return {
        "seconds": seconds,
        "values": {
            "evaluation_last_loss": losses[-1],
            "evaluation_mean_recall": scores["mean_recall"],
            "evaluation_parameters_sha256": _sha256(
                torch.cat([p.flatten() for p in model.parameters()])
            ),
            "distillation_last_loss": distill_loss,
            "distilled_images_sha256": _sha256(distiller.syn.images),
            "expert_trajectory_sha256": _sha256(expert.trajectory),
        },
    }


def _child(variant: str) -> None:
    from lors_distill.core.device import keep_freed_memory

    tuned = keep_freed_memory() if variant == "tuned" else False
    result = _workload()
    print(json.dumps({"variant": variant, "tuned": tuned, **result}))


def run_rounds(script: str, variants: tuple[str, ...], rounds: int) -> dict[str, list[dict]]:
    """``script --child <variant>`` in a fresh process per run, alternating the variants for
    ``rounds`` rounds (the tuned allocator switched on in every child that asks for it)."""
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    env = {**os.environ, "LORS_KEEP_FREED_MEMORY": "1"}
    for _ in range(rounds):
        for variant in variants:
            out = subprocess.run(
                [sys.executable, script, "--child", variant],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def report(runs: dict[str, list[dict]], as_json: bool) -> None:
    """Medians per part, the speed-up of the second variant over the first, and whether every
    run of every variant gave the same values; a Markdown table or one JSON object."""
    import distill_step

    base, other = list(runs)
    parts = list(runs[base][0]["seconds"])
    median = {
        v: {p: statistics.median(r["seconds"][p] for r in rs) for p in parts}
        for v, rs in runs.items()
    }
    summary = {
        "median_seconds": {v: {p: round(s, 3) for p, s in m.items()} for v, m in median.items()},
        "speedup": {p: round(median[base][p] / median[other][p], 2) for p in parts},
        "values_equal": all(
            r["values"] == runs[base][0]["values"] for rs in runs.values() for r in rs
        ),
        "values": runs[base][0]["values"],
        "rounds": len(runs[base]),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "commit": distill_step.git_commit(),
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"| part | {base} (s) | {other} (s) | speedup |  (median of {summary['rounds']})")
    print("|---|---|---|---|")
    for part in parts:
        print(
            f"| {part} | {median[base][part]:.2f} | {median[other][part]:.2f} "
            f"| {summary['speedup'][part]}x |"
        )
    print(
        f"same losses, recall and hashes in every run: {summary['values_equal']} "
        f"(commit {summary['commit']}, {summary['cpu_threads']} threads, torch {summary['torch']})"
    )


def side_by_side(doc: str, script: str, variants: tuple[str, ...], child, check=None) -> None:
    """The command line of a side-by-side benchmark: ``--child <variant>`` runs ``child`` (one
    timed workload, a JSON line), otherwise ``--rounds`` alternating rounds are reported after
    ``check(runs)`` (which may exit with a reason)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--child", choices=variants, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    runs = run_rounds(script, variants, args.rounds)
    if check is not None:
        check(runs)
    report(runs, args.json)


def _check_tuned(runs: dict[str, list[dict]]) -> None:
    if not runs["tuned"][0]["tuned"]:
        sys.exit("the allocator could not be tuned here (not glibc?): nothing to compare")


def main() -> None:
    side_by_side(__doc__, __file__, VARIANTS, _child, _check_tuned)


if __name__ == "__main__":
    main()
