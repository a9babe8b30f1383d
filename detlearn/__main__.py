"""Command line: train a model on synthetic shapes, evaluate it on held-out scenes.

    python -m detlearn train detect --epochs 10 --out runs/detect
    python -m detlearn evaluate runs/detect --coco-out runs/detect/coco
    torchrun --nproc-per-node 2 -m detlearn train detect --steps 500 --batch-size 32

``train`` draws ``--num-images`` scenes of seed ``--seed``, trains the task's
model on them and saves ``DIR/checkpoint.pt``. Under ``torchrun`` it trains with
DistributedDataParallel, each process on its shard of every global batch of
``--batch-size`` images; only rank 0 shows progress, prints and writes.
``evaluate`` draws fresh scenes of another seed (by default :data:`EVAL_SEED`,
never the training seed) and prints one JSON line of metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from detlearn.data import TASKS
from detlearn.evaluate import SUMMARY_KEYS as COCO_KEYS

EVAL_SEED = 1_000_000  # the held-out seed of `evaluate` (benchmarks use it too)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``detlearn train: error: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind: type, minimum: float, strict: bool):
    """An argparse type: a ``kind`` number above (or at least) ``minimum``."""
    word = "an integer" if kind is int else "a number"
    bound = f"> {minimum}" if strict else f">= {minimum}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {word} {bound}, got {text!r}"
            ) from None
        if not (value > minimum if strict else value >= minimum) or value != value:
            raise argparse.ArgumentTypeError(f"expected {word} {bound}, got {text!r}")
        return value

    return parse


positive_int = _number(int, 0, strict=True)
seed_int = _number(int, 0, strict=False)
positive_float = _number(float, 0.0, strict=True)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="detlearn",
        description="Train and evaluate detlearn's models on synthetic shapes "
        "(ShapesDataset).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model and save its checkpoint",
        description="Train a model on ShapesDataset scenes and save DIR/checkpoint.pt. "
        "Without a budget, each task trains for its recipe's number of epochs.",
    )
    train.add_argument("task", choices=TASKS, help="classify, localize or detect")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument(
        "--epochs", type=positive_int, help="passes over the training scenes"
    )
    budget.add_argument("--steps", type=positive_int, help="optimisation steps")
    budget.add_argument(
        "--seconds", type=positive_float, help="wall-clock training time"
    )
    train.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        help="seed of the scenes and the model (default 0)",
    )
    train.add_argument(
        "--out", type=Path, help="checkpoint directory (default runs/TASK)"
    )
    train.add_argument(
        "--num-images",
        type=positive_int,
        help="training scenes (default: the task's recipe)",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        help="images per step, over all processes under torchrun (the global batch, "
        "a multiple of their number; default: the recipe's)",
    )
    train.add_argument(
        "--lr",
        type=positive_float,
        help="peak learning rate of AdamW (default: the recipe's, times "
        "sqrt(batch size / the recipe's batch size) when --batch-size changes it)",
    )
    train.add_argument(
        "--device",
        help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu; under "
        "torchrun cuda is cuda:LOCAL_RANK)",
    )
    train.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float64"),
        default="float32",
        help="bfloat16: mixed precision (torch.autocast in the forward pass); "
        "float64: the model in float64, for numerical checks (default float32)",
    )
    train.add_argument(
        "--backend",
        choices=("gloo", "nccl"),
        help="torchrun only: the process group's backend (default: nccl on cuda, "
        "gloo on cpu)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a checkpoint on held-out scenes; print one JSON line",
        description="Evaluate the checkpoint in DIR on freshly drawn scenes and print "
        "one JSON line of metrics: accuracy (classify), mean_iou and accuracy "
        "(localize) or the twelve "
        "COCO numbers AP ... ARl (detect).",
    )
    evaluate.add_argument(
        "dir", type=Path, metavar="DIR", help="directory holding checkpoint.pt"
    )
    evaluate.add_argument(
        "--num-images",
        type=positive_int,
        default=500,
        help="scenes to evaluate on (default 500)",
    )
    evaluate.add_argument(
        "--seed",
        type=seed_int,
        help=f"seed of the evaluation scenes (default {EVAL_SEED}, or "
        f"{EVAL_SEED + 1} if the "
        "model was trained on that seed)",
    )
    evaluate.add_argument(
        "--coco-out",
        type=Path,
        metavar="DIR2",
        help="also write DIR2/gt.json and DIR2/detections.json (detect checkpoints)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=positive_int,
        default=100,
        help="images per forward pass (default 100)",
    )
    evaluate.add_argument(
        "--views",
        type=positive_int,
        default=1,
        help="detect only: merge the detections of this many flipped or transposed "
        "views of "
        "each scene, 1 to 8 (test-time augmentation; default 1)",
    )
    evaluate.add_argument(
        "--device", help="cpu, cuda, ... (default: cuda if available, else cpu)"
    )
    return parser


def run_train(args: argparse.Namespace) -> None:
    from detlearn.distributed import process_group

    # under torchrun: join the other processes; alone: nothing happens
    with process_group(args.device, args.backend) as world:
        train_in(world, args)


def train_in(world, args: argparse.Namespace) -> None:
    """Train in one process of ``world`` (a :class:`detlearn.distributed.World`)."""
    from detlearn.data import ShapesDataset
    from detlearn.train import (
        RECIPES,
        build_model,
        fit,
        save_checkpoint,
        seed_everything,
    )

    recipe = RECIPES[args.task]
    batch_size = args.batch_size or recipe.batch_size
    dataset = ShapesDataset(
        args.num_images or recipe.num_images, task=args.task, seed=args.seed
    )
    seed_everything(args.seed)
    model = build_model(args.task, dataset.num_classes, dataset.image_size)
    budget = {"epochs": args.epochs, "steps": args.steps, "seconds": args.seconds}
    budget = {k: v for k, v in budget.items() if v is not None} or {
        "epochs": recipe.epochs
    }
    lr = args.lr or recipe.lr_for(batch_size)
    history = fit(
        model,
        dataset,
        **budget,
        batch_size=batch_size,
        lr=lr,
        augment=recipe.augment,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
        precision=args.precision,
    )
    if not world.main:
        return  # rank 0 writes the checkpoint and prints
    path = save_checkpoint(
        model,
        args.out or Path("runs") / args.task,
        task=args.task,
        data={
            "image_size": dataset.image_size,
            "max_objects": dataset.max_objects,
            "classes": dataset.classes,
        },
        train_seed=args.seed,
        num_images=len(dataset),
        steps=history.steps,
        seconds=history.seconds,
        batch_size=batch_size,
        lr=lr,
        processes=world.size,
    )
    print(
        f"saved {path} ({history.steps} steps in {history.seconds:.1f} s, "
        f"final loss {history.losses[-1]['loss']:.4f})"
    )


def run_evaluate(args: argparse.Namespace) -> None:
    from detlearn.data import ShapesDataset
    from detlearn.evaluate import to_coco
    from detlearn.train import (
        default_device,
        evaluate_model,
        load_checkpoint,
        predict,
        read_checkpoint,
    )

    extra = read_checkpoint(args.dir)["extra"]
    task, train_seed = extra["task"], extra["train_seed"]
    seed = args.seed
    if seed is None:
        seed = EVAL_SEED if train_seed != EVAL_SEED else EVAL_SEED + 1
    elif seed == train_seed:
        print(f"detlearn: warning: seed {seed} is the training seed", file=sys.stderr)
    data = extra["data"]
    dataset = ShapesDataset(
        args.num_images,
        task=task,
        image_size=data["image_size"],
        max_objects=data["max_objects"],
        seed=seed,
        classes=data["classes"],
    )
    if args.views != 1 and task != "detect":
        raise ValueError(f"--views is for detect checkpoints, this one is {task}")
    if args.coco_out is not None and task != "detect":
        raise ValueError(
            f"--coco-out writes detections, for detect checkpoints; this one is {task}"
        )
    device = default_device(args.device)
    model = load_checkpoint(args.dir, device)
    if args.coco_out is None:
        metrics = evaluate_model(
            model, dataset, batch_size=args.batch_size, views=args.views
        )
    else:
        from detlearn.evaluate import coco_evaluate

        predictions, targets = predict(
            model, dataset, batch_size=args.batch_size, views=args.views
        )
        metrics = coco_evaluate(predictions, targets)
        gt, detections = to_coco(predictions, targets)
        args.coco_out.mkdir(parents=True, exist_ok=True)
        (args.coco_out / "gt.json").write_text(json.dumps(gt))
        (args.coco_out / "detections.json").write_text(json.dumps(detections))
    if task == "detect":
        metrics = {k: metrics[k] for k in COCO_KEYS}
    print(json.dumps({k: round(float(v), 6) for k, v in metrics.items()}))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m detlearn`` and the ``detlearn`` script.

    Returns the exit code.
    """
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or a usage error already printed
        return int(exit.code or 0)
    try:
        if args.command == "train":
            run_train(args)
        else:
            run_evaluate(args)
    except (
        OSError,
        ValueError,
        RuntimeError,
        KeyError,
        pickle.UnpicklingError,
    ) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        rank = f" (rank {os.environ['RANK']})" if "RANK" in os.environ else ""
        print(f"detlearn {args.command}: error{rank}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("detlearn: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
