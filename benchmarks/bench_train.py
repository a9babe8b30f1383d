"""Quality within a CPU budget: train each model for a wall-clock budget, evaluate held out.

Run by hand (not part of the test suite):

    python benchmarks/bench_train.py                 # everything, about 6 minutes
    python benchmarks/bench_train.py --tasks detect  # only the detector
    python benchmarks/bench_train.py --scale 0.5     # half the budgets

It uses two threads, as the book's CI machine has two cores, trains with the
command line's recipes (detlearn.train.RECIPES) and prints a markdown table.
Training time excludes drawing the training scenes (reported as "data s").

Targets:
    classifier  accuracy >= 0.99 on 1,000 held-out images after <= 20 s
    localizer   mean IoU >= 0.85 and accuracy >= 0.98 on 1,000 held-out after <= 60 s
    detector    COCO AP >= 0.90 and AP50 >= 0.98 on 500 held-out scenes after <= 120 s
                (also reported after 30 and 60 s)

The targets are judged on the model's own detections (one forward pass per
scene). For the detector the table also gives AP and AP50 with test-time
augmentation over the 8 flipped and transposed views (detlearn.models.detect_views),
which costs 8 forward passes per scene and no training time.
"""

from __future__ import annotations

import argparse
import time

import torch

from detlearn.__main__ import EVAL_SEED  # the command line's held-out seed
from detlearn.data import ShapesDataset
from detlearn.train import RECIPES, build_model, evaluate_model, fit, seed_everything

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
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
