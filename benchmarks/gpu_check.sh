#!/usr/bin/env bash
# What detlearn does on a GPU, measured: run on a machine with CUDA, by hand (CI never
# needs a GPU). From the repository root:
#
#     bash benchmarks/gpu_check.sh                 # everything, about 10 minutes
#     bash benchmarks/gpu_check.sh tests speed     # some of: tests speed chapters ddp
#
# 1. tests     the CUDA test classes (skipped on machines without CUDA), and two-GPU
#              NCCL training when there are two GPUs
# 2. speed     fit steps per second, CPU (2 threads, as the book's CI) vs CUDA, float32
#              and bfloat16 mixed precision, for the detect recipe's model and batch
# 3. chapters  the training chapters re-executed with nbval, on CUDA (the chapters use
#              CUDA when present; their trained numbers sit in cells whose output is
#              ignored and the asserts after them must still hold)
# 4. ddp       torchrun with one process per GPU (NCCL) for a few hundred steps
#
# Everything is printed and also written to gpu_check.log; paste it into the closing
# note of the issue.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOG=${LOG:-gpu_check.log}
PARTS=${*:-tests speed chapters ddp}
status=0

exec > >(tee "$LOG") 2>&1
echo "== detlearn gpu_check $(date -u +%Y-%m-%dT%H:%MZ)"
$PY - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: nothing to check")
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_name(i))
EOF
[ $? -eq 0 ] || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

if [[ " $PARTS " == *" tests "* ]]; then
    echo "== 1. CUDA tests"
    $PY -m pytest -q -rs -p no:cacheprovider tests -k "Cuda or cuda or TwoGpus" || status=1
fi

if [[ " $PARTS " == *" speed "* ]]; then
    echo "== 2. fit steps per second, CPU vs CUDA"
    $PY - <<'EOF' || status=1
import time

import torch

from detlearn.data import ShapesDataset
from detlearn.train import RECIPES, build_model, fit, seed_everything

recipe = RECIPES["detect"]
data = ShapesDataset(512, task="detect", seed=0)
print(f"model {recipe.model}, batch {recipe.batch_size}, image {data.image_size} px")
print("| device | precision | steps | s | steps/s |")
print("| --- | --- | ---: | ---: | ---: |")
for device, precision, steps in (("cpu", "float32", 20), ("cuda", "float32", 300),
                                 ("cuda", "bfloat16", 300)):
    if device == "cpu":
        torch.set_num_threads(2)  # the book's CI machine
    seed_everything(0)
    model = build_model("detect", data.num_classes, data.image_size)
    fit(model, data, steps=5, batch_size=recipe.batch_size, device=device,
        progress=False, precision=precision)  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    history = fit(model, data, steps=steps, batch_size=recipe.batch_size, device=device,
                  progress=False, precision=precision)
    print(f"| {device} | {precision} | {steps} | {history.seconds:.1f} | "
          f"{steps / history.seconds:.1f} |")
EOF
fi

if [[ " $PARTS " == *" chapters "* ]]; then
    echo "== 3. training chapters on CUDA (nbval)"
    chapters=$(ls book/11_tiny_detector.ipynb book/12_torchvision_detectors.ipynb \
        book/13_region_proposals.ipynb book/appendix_scaling_out.ipynb 2>/dev/null)
    start=$(date +%s)
    $PY -m pytest -q -p no:cacheprovider --nbval $chapters || status=1
    echo "chapters: $(( $(date +%s) - start )) s"
fi

if [[ " $PARTS " == *" ddp "* ]]; then
    gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
    echo "== 4. torchrun, $gpus process(es), one per GPU, NCCL"
    out=$(mktemp -d)
    start=$(date +%s)
    $PY -m torch.distributed.run --standalone --nproc-per-node "$gpus" -m detlearn train \
        detect --steps 300 --batch-size 64 --device cuda --quiet --out "$out/run" || status=1
    echo "torchrun: $(( $(date +%s) - start )) s (with start-up and drawing the scenes)"
    $PY -m detlearn evaluate "$out/run" --num-images 500 || status=1
fi

echo "== done, status $status"
exit $status
