"""Time one outer distillation iteration and its peak memory.

Random tensors stand in for data and expert trajectories (only shapes matter for speed), so no
dataset or pipeline run is needed. Prints one JSON line per case:

    python benchmarks/distill_step.py                 # CPU: the built-in default shape
    python benchmarks/distill_step.py --cases paper   # CUDA: the paper's Flickr30k shapes
    python benchmarks/distill_step.py --cases paper --paths fp32,fast   # side by side, one run

Cases:
  builtin   convnet (width 32, depth 3), 32 px, 384-d text, N=100, mini-batch 50, rank 10,
            syn_steps 8 (conf/base/parameters_distillation.yml).
  paper99   timm nfnet_l0 (random init), 224 px, 768-d text, N=99, mini-batch 20, rank 10.
  paper499  same, N=499, mini-batch 40, rank 20.
Paths (--paths): ``fp32`` (plain fp32, NCHW, no TF32) and ``fast`` (bf16 autocast for the
encoders with fp32 master tensors, channels_last, TF32: what ``precision/channels_last: auto``
and ``tf32: true`` give on CUDA). Seconds per iteration are the median of --repeat iterations
after --warmup; on CUDA the device is synchronised before each clock read.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from lors_distill.core.device import tf32_matmuls
from lors_distill.core.distill import (
    Distiller,
    ExpertBank,
    MatchingConfig,
    OuterConfig,
    SyntheticSet,
    TrajectoryMatcher,
)
from lors_distill.core.flat import ParameterLayout, flatten_parameters
from lors_distill.core.models import ConvNetConfig, ImageEncoderSpec, ModelRecipe
from lors_distill.core.similarity import build_similarity

CASES = {
    "builtin": dict(encoder="convnet", width=32, size=32, text_dim=384, n=100, batch=50, rank=10),
    "paper99": dict(
        encoder="timm:nfnet_l0", width=0, size=224, text_dim=768, n=99, batch=20, rank=10
    ),
    "paper499": dict(
        encoder="timm:nfnet_l0", width=0, size=224, text_dim=768, n=499, batch=40, rank=20
    ),
}


PATHS = {
    "fp32": dict(precision="fp32", channels_last=False),
    "fast": dict(precision="bf16", channels_last=True),
}


def build(
    case: dict,
    device: torch.device,
    syn_steps: int,
    grad_mode: str,
    path: str = "fp32",
    experts: int = 2,
):
    recipe = ModelRecipe(
        ImageEncoderSpec(
            case["encoder"],
            case["size"],
            False,
            ConvNetConfig(case["width"] or 64, 3, "instancenorm"),
        ),
        case["text_dim"],
        0.1,
        0.07,
    )
    model = recipe.build(seed=0).to(device).train()
    layout = ParameterLayout.of(model)
    start = flatten_parameters(model)
    generator = torch.Generator().manual_seed(0)
    trajectories = [
        start + 0.01 * torch.randn(3, layout.size, generator=generator).cumsum(0)
        for _ in range(experts)
    ]
    n = case["n"]
    similarity = build_similarity("lowrank", n, case["rank"], 3.0, generator)
    images = torch.randn(n, 3, case["size"], case["size"], generator=generator)
    texts = torch.randn(n, case["text_dim"], generator=generator)
    syn = SyntheticSet(images, texts, 0.1, similarity).to(device)
    config = MatchingConfig(syn_steps, 1, 2, case["batch"], "wbce", False, grad_mode, **PATHS[path])
    matcher = TrajectoryMatcher(model, layout, config)
    bank = ExpertBank(trajectories, last_needed=2, device=device)
    outer = OuterConfig(10.0, 10.0, 1e-3, 1.0, 0.5, 1e-4)
    return Distiller(syn, matcher, bank, outer, generator), layout.size


def _time(distiller: Distiller, device: torch.device, args) -> list[float]:
    times = []
    for index in range(args.warmup + args.repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        distiller.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - begin)
    return times


def measure(name: str, device: torch.device, args, path: str) -> dict:
    case = CASES[name]
    distiller, parameters = build(case, device, args.syn_steps, args.grad_mode, path)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tf32_matmuls(device, enabled=path == "fast"):
        times = _time(distiller, device, args)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        memory = {"peak_gpu_gib": round(peak, 3), "gpu": torch.cuda.get_device_name(device)}
    else:
        # process-wide high-water mark: measure one case per process for clean CPU numbers
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        memory = {"peak_rss_gib": round(rss, 3), "cpu_threads": torch.get_num_threads()}
    return {
        "case": name,
        "path": path,
        "device": device.type,
        "grad_mode": args.grad_mode,
        "syn_steps": args.syn_steps,
        "num_pairs": case["n"],
        "mini_batch": case["batch"],
        "rank": case["rank"],
        "parameters": parameters,
        "seconds_per_iteration": round(statistics.median(times), 4),
        "iterations_timed": len(times),
        **memory,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", default="builtin", help="comma list of builtin,paper99,paper499 or 'paper'"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--syn-steps", type=int, default=8)
    parser.add_argument("--grad-mode", default="tesla", choices=["tesla", "unrolled"])
    parser.add_argument("--paths", default="fp32", help="comma list of fp32,fast")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    names = ["paper99", "paper499"] if args.cases == "paper" else args.cases.split(",")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    for name in names:
        for path in args.paths.split(","):
            print(json.dumps(measure(name, device, args, path)), flush=True)


if __name__ == "__main__":
    main()
