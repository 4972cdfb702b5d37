"""How the learned similarity scales with the number of synthetic pairs N: ``lowrank`` vs ``full``.

For each N and similarity type, builds the real distillation objects (a small ConvNet, random
tensors in place of data and trajectories, mini-batch 20, rank 10, 4 inner steps) and reports:
the similarity's parameter count, the memory its parameters, gradients and momentum buffers
take after a few outer iterations (measured from the tensors themselves), and the seconds per
outer iteration (median after warm-up). One JSON line per case:

    python benchmarks/similarity_scale.py                   # N = 100, 1000, 10000 on CPU
    python benchmarks/similarity_scale.py --sizes 100,1000 --types lowrank
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from distill_step import step_config  # the sibling benchmark's timed step

from lors_distill.core.distill import (
    Distiller,
    ExpertBank,
    SyntheticSet,
    TrajectoryMatcher,
)
from lors_distill.core.flat import ParameterLayout, flatten_parameters
from lors_distill.core.models import ModelRecipe
from lors_distill.core.similarity import build_similarity

RECIPE = ModelRecipe.convnet(16, 32, width=8, depth=2)


def build(n: int, kind: str, rank: int, batch: int, steps: int) -> Distiller:
    model = RECIPE.build(seed=0).train()
    layout = ParameterLayout.of(model)
    generator = torch.Generator().manual_seed(0)
    start = flatten_parameters(model)
    trajectory = start + 0.01 * torch.randn(3, layout.size, generator=generator).cumsum(0)
    syn = SyntheticSet(
        torch.randn(n, 3, 16, 16, generator=generator),
        torch.randn(n, 32, generator=generator),
        0.1,
        build_similarity(kind, n, rank, 3.0, generator),
    )
    config = step_config(n, steps, batch, "tesla")
    matcher = TrajectoryMatcher(model, layout, config)
    bank = ExpertBank([trajectory], last_needed=2, device=torch.device("cpu"))
    return Distiller(syn, matcher, bank, config, generator)


def similarity_bytes(distiller: Distiller) -> int:
    """Bytes held for S: its parameters, their gradients and their momentum buffers."""
    total = 0
    for param in distiller.syn.similarity.parameters():
        total += param.numel() * param.element_size()
        if param.grad is not None:
            total += param.grad.numel() * param.grad.element_size()
        buffer = distiller.optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            total += buffer.numel() * buffer.element_size()
    return total


def measure(n: int, kind: str, args) -> dict:
    distiller = build(n, kind, args.rank, args.batch, args.steps)
    times = []
    for index in range(args.warmup + args.repeat):
        begin = time.perf_counter()
        distiller.step()
        if index >= args.warmup:
            times.append(time.perf_counter() - begin)
    return {
        "num_pairs": n,
        "sim_type": kind,
        "rank": args.rank if kind == "lowrank" else None,
        "similarity_parameters": sum(p.numel() for p in distiller.syn.similarity.parameters()),
        "similarity_mib": round(similarity_bytes(distiller) / 2**20, 3),
        "seconds_per_iteration": round(statistics.median(times), 4),
        "iterations_timed": len(times),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--types", default="lowrank,full")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for n in map(int, args.sizes.split(",")):
        for kind in args.types.split(","):
            print(json.dumps(measure(n, kind, args)), flush=True)


if __name__ == "__main__":
    main()
