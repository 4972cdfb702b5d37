"""How far apart the matching gradients of the gradient modes and precision paths are.

One matching pass (one outer iteration's gradient, no optimiser step) per (gradient mode, path)
on the same synthetic set, model initialisation, trajectory segment and mini-batches, at one of
``distill_step.py``'s shapes. Prints one JSON line per comparison, with the cosine similarity
and the norm ratio of the gradients w.r.t. each synthetic tensor:

    python benchmarks/gradient_agreement.py                    # built-in shape, CPU
    python benchmarks/gradient_agreement.py --case paper99     # NFNet-L0 at 224 px (a GPU)

Comparisons:
  tesla_one_graph vs tesla (fp32)   the same gradient from two graphs: cosine 1 up to rounding;
  fast vs fp32 (tesla, full)        bf16 autocast + channels_last + TF32 against plain fp32;
  full vs tesla (fp32)              the exact gradient (MTT-VL's) against TESLA's first-order one.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from distill_step import CASES, build, git_commit

from lors_distill.core.device import tf32_matmuls

RUNS = [
    ("tesla", "fp32"),
    ("tesla_one_graph", "fp32"),
    ("full", "fp32"),
    ("tesla", "fast"),
    ("full", "fast"),
]
COMPARISONS = [
    (("tesla_one_graph", "fp32"), ("tesla", "fp32")),
    (("tesla", "fast"), ("tesla", "fp32")),
    (("full", "fast"), ("full", "fp32")),
    (("full", "fp32"), ("tesla", "fp32")),
]


def gradients(case: dict, device: torch.device, syn_steps: int, mode: str, path: str) -> dict:
    """The synthetic tensors' gradients after one matching pass (on the CPU)."""
    distiller, _ = build(case, device, syn_steps, mode, path)
    config = distiller.matcher.config
    _, _, start, target = distiller.bank.sample(
        torch.Generator().manual_seed(3), config.max_start_epoch, config.expert_epochs
    )
    with tf32_matmuls(device, enabled=path == "fast"):
        distiller.matcher.match(distiller.syn, start, target, torch.Generator().manual_seed(5))
    return {
        name: p.grad.detach().flatten().double().cpu()  # float64: sums over 15M entries
        for name, p in distiller.syn.named_parameters()
        if p.grad is not None
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="builtin", choices=sorted(CASES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--syn-steps", type=int, default=8)
    args = parser.parse_args()
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    case = CASES[args.case]
    grads = {}
    for mode, path in RUNS:
        grads[mode, path] = gradients(case, device, args.syn_steps, mode, path)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for a, b in COMPARISONS:
        row = {
            "case": args.case,
            "device": device.type,
            "compare": f"{a[0]}/{a[1]} vs {b[0]}/{b[1]}",
        }
        for name in grads[b]:
            x, y = grads[a][name], grads[b][name]
            if x.norm() == 0 or y.norm() == 0:
                # e.g. the low-rank factor initialised at zero gets no gradient in step one
                row[name] = {"norms": [x.norm().item(), y.norm().item()]}
                continue
            cosine = torch.nn.functional.cosine_similarity(x, y, dim=0).item()
            row[name] = {
                "cos": round(cosine, 6),
                "norm_ratio": round((x.norm() / y.norm()).item(), 4),
            }
        row["gpu" if device.type == "cuda" else "machine"] = (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
        )
        row["torch"] = torch.__version__
        row["commit"] = git_commit()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
