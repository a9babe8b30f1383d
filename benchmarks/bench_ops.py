"""Speed of detlearn's box operations against torchvision's, run by hand.

    python benchmarks/bench_ops.py [--repeats 7] [--threads 2]

Both libraries run in the same process on the same inputs, interleaved
(torchvision, detlearn, torchvision, ...), with two intra-op threads; each
row reports the median time of each and their ratio, whether the results are
identical, and the target ratio. The last row is the peak extra memory of
detlearn's ``nms`` on 30,000 boxes (and torchvision's, for scale), measured in
a fresh subprocess: the kernel's peak resident set size (``VmHWM``, reset
just before the call through ``/proc/self/clear_refs``) minus the resident
size before it. It sees every allocation, torch's included (Linux only).

Timings move with whatever else runs on the machine; rerun to confirm.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.ops as tvo

from detlearn import boxes as dl_boxes
from detlearn import nms as dl_nms


def clustered_boxes(n: int, seed: int = 0, centres: int = 300, image: float = 1000.0):
    """``n`` boxes jittered around ``centres`` centres (many overlaps), distinct
    scores."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(centres, 2, generator=g) * image
    size = 20 + torch.rand(centres, 2, generator=g) * 80
    pick = torch.randint(0, centres, (n,), generator=g)
    cxy = centre[pick] + torch.randn(n, 2, generator=g) * 0.1 * size[pick]
    wh = size[pick] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.2)
    boxes = torch.cat((cxy - wh / 2, cxy + wh / 2), dim=1)
    scores = torch.randperm(n, generator=g).float() / n  # untied, so the order is unique
    return boxes, scores


def random_boxes(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 900
    return torch.cat((xy, xy + 5 + torch.rand(n, 2, generator=g) * 100), dim=1)


def interleaved(ours: Callable, ref: Callable, repeats: int) -> tuple[float, float, bool]:
    """Median seconds of ``ours`` and ``ref``, timed alternately, and whether
    they agree."""
    same = torch.equal(ours(), ref())  # also a warm-up
    t_ours, t_ref = [], []
    for _ in range(repeats):
        for fn, out in ((ref, t_ref), (ours, t_ours)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(t_ours), statistics.median(t_ref), same


_MEMORY_PROBE = """
import sys, torch
sys.path.insert(0, {here!r})
from bench_ops import clustered_boxes
from detlearn import nms as N
torch.set_num_threads(2)
boxes, scores = clustered_boxes(30_000)
fn = {fn}
fn(boxes[:2000], scores[:2000], 0.5)  # warm up allocator and kernels

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

# reset the peak (VmHWM) to the current RSS
open("/proc/self/clear_refs", "w").write("5")
before = status_kb("VmRSS:")
fn(boxes, scores, 0.5)
print((status_kb("VmHWM:") - before) / 1024)
"""


def peak_extra_mb(fn: str) -> float:
    here = str(Path(__file__).resolve().parent)
    code = _MEMORY_PROBE.format(here=here, fn=fn)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for n, target in ((1_000, 2.0), (10_000, 1.0), (30_000, 1.0)):
        boxes, scores = clustered_boxes(n)
        ours, ref, same = interleaved(
            lambda b=boxes, s=scores: dl_nms.nms(b, s, 0.5),
            lambda b=boxes, s=scores: tvo.nms(b, s, 0.5),
            args.repeats,
        )
        rows.append((f"nms, {n:,} clustered boxes, IoU 0.5", ours, ref, same, target))

    # what a detector's per-image NMS sees: 50 objects, about 20 boxes on each
    boxes, scores = clustered_boxes(1_000, seed=5, centres=50)
    ours, ref, same = interleaved(
        lambda: dl_nms.nms(boxes, scores, 0.5),
        lambda: tvo.nms(boxes, scores, 0.5),
        args.repeats,
    )
    rows.append(("nms, 1,000 boxes in 50 clusters of ~20, IoU 0.5", ours, ref, same, 2.0))

    boxes, scores = clustered_boxes(10_000, seed=1)
    idxs = torch.randint(0, 80, (10_000,), generator=torch.Generator().manual_seed(2))
    ours, ref, same = interleaved(
        lambda: dl_nms.batched_nms(boxes, scores, idxs, 0.5),
        lambda: tvo.batched_nms(boxes, scores, idxs, 0.5),
        args.repeats,
    )
    rows.append(("batched_nms, 10,000 boxes, 80 classes", ours, ref, same, 1.5))

    boxes1, boxes2 = random_boxes(10_000, seed=3), random_boxes(1_000, seed=4)
    ours, ref, same = interleaved(
        lambda: dl_boxes.box_iou(boxes1, boxes2),
        lambda: tvo.box_iou(boxes1, boxes2),
        args.repeats,
    )
    rows.append(("box_iou, 10,000 x 1,000", ours, ref, same, 0.5))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print()
    print("| operation | detlearn (ms) | torchvision (ms) | ratio | target | identical | ok |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for name, ours, ref, same, target in rows:
        ratio = ours / ref
        ok = "yes" if ratio <= target and same else "NO"
        print(
            f"| {name} | {ours * 1e3:.1f} | {ref * 1e3:.1f} | {ratio:.2f} "
            f"| <= {target} "
            f"| {'yes' if same else 'NO'} | {ok} |"
        )
    mem = peak_extra_mb("N.nms")
    mem_tv = peak_extra_mb("__import__('torchvision').ops.nms")
    print(
        f"| nms peak extra memory, 30,000 boxes (MB) | {mem:.0f} | {mem_tv:.0f} "
        "| | < 200 MB "
        f"| | {'yes' if mem < 200 else 'NO'} |"
    )


if __name__ == "__main__":
    main()
