"""Quality within a CPU budget: train each model for a wall-clock budget, evaluate held out.

Run by hand (not part of the test suite), on a quiet machine:

    python benchmarks/bench_train.py                 # the recipes, about 6 minutes
    python benchmarks/bench_train.py --tasks detect  # only the detector
    python benchmarks/bench_train.py --scale 0.5     # half the budgets
    python benchmarks/bench_train.py --compare       # one vs two stages, about 20 minutes
    python benchmarks/bench_train.py --compare --steps 2000   # fixed steps, not seconds

It uses two threads, as the book's CI machine has two cores, trains with the
command line's recipes (detlearn.train.RECIPES) and prints markdown tables.
Training time excludes drawing the training scenes (reported as "data s").

Targets:
    classifier  accuracy >= 0.99 on 1,000 held-out images after <= 20 s
    localizer   mean IoU >= 0.85 and accuracy >= 0.98 on 1,000 held-out after <= 60 s
    detector    COCO AP >= 0.90 and AP50 >= 0.98 on 500 held-out scenes after <= 120 s
                (also reported after 30 and 60 s)
    --compare   TinyDetector vs TwoStageDetector at equal wall clock (60 s and 120 s,
                two training seeds each): AP, AP50, AP75, AP at IoU 0.9 and 0.95 and
                inference ms per image; the two-stage mean AP ahead by >= 0.02 at 120 s

The targets are judged on the model's own detections (one forward pass per
scene). For the detector the first table also gives AP and AP50 with test-time
augmentation over the 8 flipped and transposed views (detlearn.models.detect_views),
which costs 8 forward passes per scene and no training time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from detlearn.__main__ import EVAL_SEED  # the command line's held-out seed
from detlearn.data import ShapesDataset
from detlearn.evaluate import average_precision, coco_evaluate, precision_recall_curves
from detlearn.train import (
    DETECTORS,
    RECIPES,
    build_model,
    evaluate_model,
    fit,
    predict,
    seed_everything,
)

# task, seconds, held-out images, {metric: minimum} (an empty dict: reported only)
RUNS = [
    ("classify", 20, 1000, {"accuracy": 0.99}),
    ("localize", 60, 1000, {"mean_iou": 0.85, "accuracy": 0.98}),
    ("detect", 30, 500, {}),
    ("detect", 60, 500, {}),
    ("detect", 120, 500, {"AP": 0.90, "AP50": 0.98}),
]
SHOWN = {
    "classify": ("accuracy",),
    "localize": ("mean_iou", "accuracy"),
    "detect": ("AP", "AP50", "AP75", "APs", "APm", "AP 8 views", "AP50 8 views"),
}

# --compare: the detectors of detlearn.train.DETECTORS, each trained with the detect
# recipe's data, batch, learning rate and augmentation; only the model and its
# settings differ.
COMPARE_SECONDS = (60, 120)
COMPARE_SEEDS = (0, 1)
COMPARE_SHOWN = ("AP", "AP50", "AP75", "AP90", "AP95")


def run(task: str, seconds: float, num_eval: int, seed: int = 0) -> dict:
    recipe = RECIPES[task]
    train = ShapesDataset(recipe.num_images, task=task, seed=seed)
    held_out = ShapesDataset(num_eval, task=task, seed=EVAL_SEED)
    seed_everything(seed)
    model = build_model(task, train.num_classes, train.image_size)
    history = fit(
        model,
        train,
        seconds=seconds,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        augment=recipe.augment,
        seed=seed,
        progress=False,
    )
    tic = time.perf_counter()
    metrics = evaluate_model(model, held_out)
    metrics.pop("per_class", None)
    eval_seconds = time.perf_counter() - tic
    if task == "detect":
        with_views = evaluate_model(model, held_out, views=8)
        metrics["AP 8 views"], metrics["AP50 8 views"] = with_views["AP"], with_views["AP50"]
    return {
        "steps": history.steps,
        "train_s": history.seconds,
        "data_s": history.data_seconds,
        "eval_s": eval_seconds,
        "params": sum(p.numel() for p in model.parameters()),
        **metrics,
    }


def ap_at(predictions: list[dict], targets: list[dict], iou_threshold: float) -> float:
    """AP at one IoU threshold, averaged over the classes (as chapter 11 computes it)."""
    curves = precision_recall_curves(predictions, targets, iou_threshold=iou_threshold)
    return sum(average_precision(c.recall, c.precision) for c in curves.values()) / len(curves)


def run_detector(name: str, seconds: float | None, steps: int | None, seed: int, held_out) -> dict:
    """Train one detector of DETECTORS for a budget; COCO numbers and ms per image."""
    recipe = RECIPES["detect"]
    train = ShapesDataset(recipe.num_images, seed=seed)
    seed_everything(seed)
    model = build_model("detect", train.num_classes, detector=name)
    history = fit(
        model,
        train,
        seconds=seconds,
        steps=steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        augment=recipe.augment,
        seed=seed,
        progress=False,
    )
    predict(model, [held_out[i] for i in range(20)])  # warm-up: allocator, caches
    tic = time.perf_counter()
    predictions, targets = predict(model, held_out)
    ms_per_image = 1000 * (time.perf_counter() - tic) / len(held_out)
    metrics = coco_evaluate(predictions, targets)
    return {
        "steps": history.steps,
        "train_s": history.seconds,
        "ms": ms_per_image,
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "AP75": metrics["AP75"],
        "AP90": ap_at(predictions, targets, 0.9),
        "AP95": ap_at(predictions, targets, 0.95),
    }


def compare(scale: float, steps: int | None, num_eval: int) -> None:
    """One stage vs two at equal budgets: one row per run, then the means."""
    held_out = ShapesDataset(num_eval, seed=EVAL_SEED)
    budgets = [None] if steps else [s * scale for s in COMPARE_SECONDS]
    print("| model | budget | seed | steps | " + " | ".join(COMPARE_SHOWN) + " | ms/image |")
    print("| --- | ---: | ---: | ---: |" + " ---: |" * (len(COMPARE_SHOWN) + 1))
    results: dict[tuple[str, str], list[dict]] = {}
    for seconds in budgets:
        budget = f"{steps} steps" if steps else f"{seconds:g} s"
        for seed in COMPARE_SEEDS:
            for name in DETECTORS:
                r = run_detector(name, seconds, steps, seed, held_out)
                results.setdefault((name, budget), []).append(r)
                cells = [name, budget, seed, r["steps"]]
                cells += [f"{r[k]:.3f}" for k in COMPARE_SHOWN] + [f"{r['ms']:.1f}"]
                print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    print("\nmeans over the seeds\n")
    print("| model | budget | steps | " + " | ".join(COMPARE_SHOWN) + " | ms/image |")
    print("| --- | ---: | ---: |" + " ---: |" * (len(COMPARE_SHOWN) + 1))
    for (name, budget), runs in results.items():
        mean = {k: statistics.mean(r[k] for r in runs) for k in (*COMPARE_SHOWN, "ms", "steps")}
        cells = [name, budget, f"{mean['steps']:.0f}"]
        cells += [f"{mean[k]:.3f}" for k in COMPARE_SHOWN] + [f"{mean['ms']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    for budget in {b for _, b in results}:
        gain = statistics.mean(r["AP"] for r in results[("two-stage", budget)]) - (
            statistics.mean(r["AP"] for r in results[("tiny", budget)])
        )
        print(f"\ntwo-stage mean AP minus tiny's at {budget}: {gain:+.3f}", end="")
        print(" (target >= +0.02 at 120 s)" if budget == "120 s" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="TinyDetector vs TwoStageDetector at 60 s and 120 s, two seeds each",
    )
    parser.add_argument(
        "--steps", type=int, help="with --compare: train for this many steps instead"
    )
    parser.add_argument("--num-eval", type=int, default=500, help="held-out scenes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if args.compare:
        compare(args.scale, args.steps, args.num_eval)
        return
    print(
        "| task | budget s | steps | steps/s | data s | eval s | params | metrics | target | ok |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for task, seconds, num_eval, targets in RUNS:
        if task not in args.tasks:
            continue
        r = run(task, seconds * args.scale, num_eval)
        shown = ", ".join(f"{k} {r[k]:.3f}" for k in SHOWN[task])
        target = ", ".join(f"{k} >= {v}" for k, v in targets.items()) or "-"
        ok = "-" if not targets else ("yes" if all(r[k] >= v for k, v in targets.items()) else "NO")
        cells = [
            task,
            f"{seconds * args.scale:g}",
            r["steps"],
            f"{r['steps'] / r['train_s']:.1f}",
            f"{r['data_s']:.1f}",
            f"{r['eval_s']:.1f}",
            f"{r['params']:,}",
            shown,
            target,
            ok,
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
