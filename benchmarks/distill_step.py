"""Time one outer distillation iteration and its peak memory.

Random tensors stand in for data and expert trajectories (only shapes matter for speed), so no
dataset or pipeline run is needed. Prints one JSON line per case:

    python benchmarks/distill_step.py                 # CPU: the built-in shape, all 3 gradients
    python benchmarks/distill_step.py --cases paper   # CUDA: the paper's Flickr30k shapes
    python benchmarks/distill_step.py --cases paper --paths fp32,fast   # side by side, one run

Cases:
  builtin   convnet (width 32, depth 3), 32 px, 384-d text, N=100, mini-batch 20, rank 10,
            syn_steps 8 (conf/base/parameters_distillation.yml).
  paper99   timm nfnet_l0 (random init), 224 px, 768-d text, N=99, mini-batch 20, rank 10.
  paper499  same, N=499, mini-batch 40, rank 20.
Gradient modes (--grad-modes, default all three): ``tesla`` (first-order, constant memory),
``tesla_one_graph`` (the same gradient from one graph), ``full`` (exact, through the unrolled
inner loop: MTT-VL). On CPU each (case, mode, path) runs in a child process of its own, in turn,
so the peak RSS (the process's high-water mark) is that measurement's alone.
Paths (--paths): ``fp32`` (plain fp32, NCHW, no TF32) and ``fast`` (bf16 autocast for the
encoders with fp32 master tensors, channels_last, TF32: what ``precision/channels_last: auto``
and ``tf32: true`` give on CUDA). Seconds per iteration are the median of --repeat iterations
after --warmup; on CUDA the device is synchronised before each clock read.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from lors_distill.config_loader import load_section
from lors_distill.core.device import tf32_matmuls
from lors_distill.core.distill import (
    Distiller,
    ExpertBank,
    FastPath,
    SyntheticSet,
    TrajectoryMatcher,
)
from lors_distill.core.flat import ParameterLayout, flatten_parameters
from lors_distill.core.models import ConvNetConfig, ImageEncoderSpec, ModelRecipe
from lors_distill.core.similarity import build_similarity

CASES = {
    "builtin": dict(encoder="convnet", width=32, size=32, text_dim=384, n=100, batch=20, rank=10),
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


CONF = Path(__file__).resolve().parents[1] / "conf"


def step_config(num_pairs: int, syn_steps: int, batch: int, grad_mode: str):
    """The ``distillation`` parameters of the timed step: conf/base's, with the inner loop and
    the outer rates fixed here so that a change of defaults leaves the benchmark as it was."""
    return load_section(
        "distillation",
        CONF,
        "base",
        num_pairs=num_pairs,
        syn_steps=syn_steps,
        expert_epochs=1,
        max_start_epoch=2,
        mini_batch_size=batch,
        loss="wbce",
        merge_branches=False,
        grad_mode=grad_mode,
        mini_batch_remainder="keep",
        lr_images=10.0,
        lr_texts=10.0,
        lr_lr=1e-3,
        lr_sim=1.0,
        momentum=0.5,
        min_inner_lr=1e-4,
    )


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
            ConvNetConfig(width=case["width"] or 64, depth=3, norm="instancenorm"),
        ),
        case["text_dim"],
        0.1,
        0.07,
    )
    model = recipe.build(seed=0).to(device).train()
    layout = ParameterLayout.of(model)
    start = flatten_parameters(model).detach().cpu()  # trajectories are drawn on the CPU
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
    config = step_config(n, syn_steps, case["batch"], grad_mode)
    matcher = TrajectoryMatcher(model, layout, config, FastPath(**PATHS[path]))
    bank = ExpertBank(trajectories, last_needed=2, device=device)
    return Distiller(syn, matcher, bank, config, generator), layout.size


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


def measure(name: str, device: torch.device, args, path: str, grad_mode: str) -> dict:
    case = CASES[name]
    distiller, parameters = build(case, device, args.syn_steps, grad_mode, path)
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
        "grad_mode": grad_mode,
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
        "commit": git_commit(),
    }


def git_commit() -> str:
    """The short hash of the checked-out commit (what a reported number came from)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", default="builtin", help="comma list of builtin,paper99,paper499 or 'paper'"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--syn-steps", type=int, default=8)
    parser.add_argument(
        "--grad-modes",
        default="tesla,tesla_one_graph,full",
        help="comma list of tesla,tesla_one_graph,full",
    )
    parser.add_argument("--in-process", action="store_true", help="no child process per case")
    parser.add_argument("--paths", default="fp32", help="comma list of fp32,fast")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    names = ["paper99", "paper499"] if args.cases == "paper" else args.cases.split(",")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    modes = args.grad_modes.split(",")
    unknown = set(modes) - {"tesla", "tesla_one_graph", "full"}
    if unknown:
        parser.error(f"--grad-modes: unknown {sorted(unknown)}")
    for name in names:
        for path in args.paths.split(","):
            for mode in modes:
                if device.type == "cpu" and not args.in_process:
                    _child(args, name, path, mode)
                else:
                    print(json.dumps(_measure_or_oom(name, device, args, path, mode)), flush=True)


def _measure_or_oom(name: str, device: torch.device, args, path: str, mode: str) -> dict:
    """``measure``, or a line saying the case ran out of GPU memory (the next case still runs)."""
    try:
        return measure(name, device, args, path, mode)
    except torch.OutOfMemoryError as error:
        if device.type != "cuda":
            raise
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        first_line = str(error).splitlines()[0] if str(error) else "CUDA out of memory"
        return {
            "case": name,
            "path": path,
            "device": device.type,
            "grad_mode": mode,
            "syn_steps": args.syn_steps,
            "error": "out of memory",
            "peak_gpu_gib_before_failure": round(peak, 3),
            "gpu_total_gib": round(total, 1),
            "detail": first_line[:200],
            "commit": git_commit(),
        }
    finally:
        if device.type == "cuda":
            gc.collect()  # the failed case's tensors, before the next case allocates
            torch.cuda.empty_cache()


def _child(args, name: str, path: str, mode: str) -> None:
    """One measurement in a fresh process (clean peak RSS); its JSON line is passed through."""
    command = [sys.executable, __file__, "--in-process", "--device", "cpu", "--cases", name]
    command += ["--paths", path, "--grad-modes", mode, "--syn-steps", str(args.syn_steps)]
    command += ["--warmup", str(args.warmup), "--repeat", str(args.repeat)]
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
