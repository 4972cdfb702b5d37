#!/usr/bin/env bash
# The GPU numbers of the README's "On a GPU" section, in one go, each case in its own process
# under its own time limit (an out-of-memory or a stuck case costs only itself):
#
#   bash benchmarks/gpu_table.sh [OUT_DIR]      # JSON lines in OUT_DIR/gpu.jsonl, log beside it
#
# Order: a smoke run of all three gradients at the built-in shape on CUDA, then the paper's
# Flickr30k shapes (TESLA's gradient first, the reference's own numbers being for it), expert
# throughput, the exact (MTT-VL) gradient at paper scale, and how far the gradients of the modes
# and paths are apart there (gradient_agreement.py).
set -u
out="${1:-benchmarks/out}"
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
log="$out/gpu.log"
step() {  # step SECONDS COMMAND...: run it, its JSON lines to gpu.jsonl, everything to the log
  local limit="$1"; shift
  echo "### $(date -u +%T) $*" >>"$log"
  timeout "$limit" "$@" 2>>"$log" | tee -a "$out/gpu.jsonl"
  echo "### rc=${PIPESTATUS[0]}" >>"$log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$log" 2>&1
"$py" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" >>"$log" 2>&1
step 60 "$py" benchmarks/distill_step.py --cases builtin --device cuda --paths fp32,fast \
  --warmup 2 --repeat 5
step 120 "$py" benchmarks/distill_step.py --cases paper99,paper499 --device cuda \
  --paths fp32,fast --grad-modes tesla --warmup 1 --repeat 3
step 60 "$py" benchmarks/expert_throughput.py --case paper --device cuda --images 640
step 60 "$py" benchmarks/expert_throughput.py --case paper --device cuda --images 640 \
  --mixed-precision
step 150 "$py" benchmarks/distill_step.py --cases paper99,paper499 --device cuda \
  --paths fp32,fast --grad-modes full --warmup 1 --repeat 2
step 120 "$py" benchmarks/gradient_agreement.py --case paper99 --device cuda
