"""Speed of detlearn.evaluate.coco_evaluate against pycocotools, on equal stats.

Run by hand::

    python benchmarks/bench_eval.py [--images 5000] [--classes 10] [--seed 0]

A synthetic but realistic data set: about 7 ground truth boxes per image in
mixed sizes (small, medium, large; a few crowd boxes), and about 100
detections per image: jittered copies of most objects (some duplicated, a
few with the wrong label) plus false positives, with scores that favour the
true positives. detlearn is timed on everything from the per-image tensors
to the summary numbers; pycocotools on ``evaluate() + accumulate() +
summarize()`` only (building its COCO objects is excluded, in its favour).
Prints a markdown table: wall-clock and CPU times (CPU time is the steadier
number on a shared machine), speed-ups, the largest difference between the
twelve stats; and detlearn's peak traced memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import time
import tracemalloc

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detlearn.evaluate import coco_evaluate, to_coco

KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def make_data(
    num_images: int, num_classes: int, seed: int, gt_per_image: float = 7, dets_per_image: int = 100
) -> tuple[list[dict], list[dict]]:
    """Per-image prediction and target dicts (CPU tensors, torchvision format)."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for _ in range(num_images):
        n = rng.poisson(gt_per_image)
        side = rng.choice([16.0, 50.0, 160.0], n, p=[0.4, 0.4, 0.2]) * rng.uniform(0.6, 1.5, n)
        aspect = rng.uniform(0.5, 2.0, n)
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
        x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
        gt = np.stack([x, y, x + w, y + h], 1).reshape(-1, 4)
        gt_labels = rng.integers(0, num_classes, n)
        crowd = (rng.random(n) < 0.02).astype(np.int64)
        targets.append(
            {
                "boxes": torch.tensor(gt, dtype=torch.float32),
                "labels": torch.tensor(gt_labels),
                "iscrowd": torch.tensor(crowd),
            }
        )
        # true positives: 0-3 jittered copies of each object
        copies = rng.choice([0, 1, 2, 3], n, p=[0.15, 0.55, 0.2, 0.1])
        src = np.repeat(np.arange(n), copies)
        scale = np.stack([w, h, w, h], 1)[src]
        tp = gt[src] + rng.normal(0.0, 0.1, (len(src), 4)) * scale
        tp_labels = np.where(
            rng.random(len(src)) < 0.9, gt_labels[src], rng.integers(0, num_classes, len(src))
        )
        # false positives fill up to about dets_per_image
        m = max(0, rng.poisson(dets_per_image) - len(src))
        fs = rng.choice([12.0, 40.0, 140.0], m) * rng.uniform(0.5, 1.5, m)
        fx, fy = rng.uniform(0, 600, m), rng.uniform(0, 450, m)
        fp = np.stack([fx, fy, fx + fs, fy + fs * rng.uniform(0.5, 2.0, m)], 1)
        boxes = np.concatenate([tp, fp]).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        scores = np.concatenate([rng.beta(5, 2, len(src)), rng.beta(1, 5, m)])
        labels = np.concatenate([tp_labels, rng.integers(0, num_classes, m)])
        predictions.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels),
                "scores": torch.tensor(scores, dtype=torch.float32),
            }
        )
    return predictions, targets


def run_pycocotools(gt: dict, detections: list[dict]) -> tuple[np.ndarray, float, float]:
    """``COCOeval.stats`` and the wall and CPU seconds of evaluate + accumulate + summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        start, cpu_start = time.perf_counter(), time.process_time()
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return np.asarray(evaluator.stats), seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    predictions, targets = make_data(args.images, args.classes, args.seed)
    num_gt = sum(len(t["labels"]) for t in targets)
    num_det = sum(len(p["labels"]) for p in predictions)

    start, cpu_start = time.perf_counter(), time.process_time()
    ours = coco_evaluate(predictions, targets)
    ours_seconds, ours_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    tracemalloc.start()
    coco_evaluate(predictions, targets)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    reference, ref_seconds, ref_cpu = run_pycocotools(*to_coco(predictions, targets))
    diff = np.abs(np.array([ours[k] for k in KEYS]) - reference).max()

    print(
        f"{args.images} images, {args.classes} classes, {num_gt} ground truth boxes, "
        f"{num_det} detections; AP = {ours['AP']:.4f}\n"
    )
    print("| evaluator | wall s | CPU s | speed-up (wall) | speed-up (CPU) | max abs stat diff |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| pycocotools evaluate+accumulate+summarize | {ref_seconds:.2f} | {ref_cpu:.2f} "
        "| 1.0x | 1.0x | |"
    )
    print(
        f"| detlearn coco_evaluate (all work) | {ours_seconds:.2f} | {ours_cpu:.2f} | "
        f"{ref_seconds / ours_seconds:.1f}x | {ref_cpu / ours_cpu:.1f}x | {diff:.1e} |"
    )
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\ndetlearn peak traced memory {peak_mib:.0f} MiB (process max RSS {max_rss:.0f} MiB, "
        "pycocotools included)"
    )


if __name__ == "__main__":
    main()
