"""Command line: train a model, evaluate it, write a COCO folder of synthetic scenes.

    python -m detlearn train detect --epochs 10 --out runs/detect
    python -m detlearn evaluate runs/detect --coco-out runs/detect/coco
    torchrun --nproc-per-node 2 -m detlearn train detect --steps 500 --batch-size 32
    python -m detlearn export-shapes data/shapes --num-images 200 --seed 3
    python -m detlearn train detect --data data/shapes/annotations.json \
        --images data/shapes/images --out runs/folder
    python -m detlearn evaluate runs/folder --data val/annotations.json \
        --images val/images --coco-out runs/folder/coco

``train`` draws ``--num-images`` scenes of seed ``--seed`` (or reads the COCO
folder of ``--data`` and ``--images``), trains the task's model on them and
saves ``DIR/checkpoint.pt``; a checkpoint keeps the names and COCO category ids
of its classes. Under ``torchrun`` it trains with DistributedDataParallel, each
process on its shard of every global batch of ``--batch-size`` images; only
rank 0 shows progress, prints and writes. ``evaluate`` draws fresh scenes of
another seed (by default :data:`EVAL_SEED`, never the training seed), or reads a
COCO folder, and prints one JSON line of metrics; on a COCO folder, ``--coco-out``
writes detections with the file's own image and category ids, which pycocotools
scores against the file itself. ``export-shapes`` writes ShapesDataset scenes as
a COCO folder (:func:`detlearn.data.export_coco`).
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
        "(ShapesDataset) or on a COCO folder (CocoDataset); write synthetic scenes "
        "as a COCO folder.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model and save its checkpoint",
        description="Train a model on ShapesDataset scenes, or (detect) on a COCO "
        "folder given by --data and --images, and save DIR/checkpoint.pt with the "
        "names and COCO category ids of the classes. Without a budget, each task "
        "trains for its recipe's number of epochs. The images of a COCO folder may "
        "differ in size (training pads them at the bottom and right to the largest); "
        "crowd boxes (iscrowd 1) are left out of training, as torchvision's "
        "reference scripts do.",
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
        help="training scenes (default: the task's recipe); not with --data",
    )
    train.add_argument(
        "--model",
        choices=("tiny", "two-stage"),
        help="detect only: the detector to train, TwoStageDetector (two-stage, the "
        "default: the better AP after 120 s of training) or TinyDetector (tiny: about "
        "3 times faster per step)",
    )
    _coco_options(train, "train on", "--data", "--images")
    _coco_options(
        train,
        "after every epoch (and at the end), evaluate on",
        "--val-data",
        "--val-images",
        also="; it needs the same categories as the training set, and each "
        "evaluation prints one JSON line of the epoch, the step and the twelve "
        "COCO numbers",
    )
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="show each batch in one of the 8 flips and transpositions of the image "
        "(default: the recipe's, on for localize and detect); --no-augment for "
        "photos whose objects have an up and a down",
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
        help="evaluate a checkpoint on held-out scenes or a COCO folder; print one "
        "JSON line",
        description="Evaluate the checkpoint in DIR on freshly drawn scenes, or "
        "(detect) on a COCO folder given by --data and --images, and print one JSON "
        "line of metrics: accuracy (classify), mean_iou and accuracy (localize) or "
        "the twelve COCO numbers AP ... ARl (detect). On a COCO folder the model's "
        "classes meet the file's by category id (their names must agree); crowd "
        "boxes and each annotation's area count as in pycocotools, and the images "
        "may have different sizes.",
    )
    evaluate.add_argument(
        "dir", type=Path, metavar="DIR", help="directory holding checkpoint.pt"
    )
    evaluate.add_argument(
        "--num-images",
        type=positive_int,
        help="scenes to evaluate on (default 500); not with --data",
    )
    evaluate.add_argument(
        "--seed",
        type=seed_int,
        help=f"seed of the evaluation scenes (default {EVAL_SEED}, or "
        f"{EVAL_SEED + 1} if the "
        "model was trained on that seed); not with --data",
    )
    _coco_options(evaluate, "evaluate on", "--data", "--images")
    evaluate.add_argument(
        "--coco-out",
        type=Path,
        metavar="DIR2",
        help="detect checkpoints: also write DIR2/gt.json and DIR2/detections.json "
        "for pycocotools; with --data only DIR2/detections.json, in the file's own "
        "image and category ids, to score against ANNOTATIONS.json itself",
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

    export = commands.add_parser(
        "export-shapes",
        help="write ShapesDataset detect scenes as a COCO folder",
        description="Write ShapesDataset detect scenes as a COCO folder: "
        "OUT/images/*.png and OUT/annotations.json (bbox [x, y, w, h], area, iscrowd, "
        "categories with names and ids 0 .. K-1), and print the annotation file's "
        "path. Files of the same names in OUT are overwritten.",
    )
    export.add_argument("out", type=Path, metavar="OUT", help="the folder to write")
    export.add_argument(
        "--num-images", type=positive_int, default=100, help="scenes (default 100)"
    )
    export.add_argument(
        "--seed", type=seed_int, default=0, help="seed of the scenes (default 0)"
    )
    export.add_argument(
        "--image-size",
        type=positive_int,
        default=96,
        help="side of the square images in pixels (default 96)",
    )
    return parser


def _coco_options(
    parser: argparse.ArgumentParser, verb: str, data: str, images: str, also: str = ""
) -> None:
    """Add a pair of options that name a COCO folder: annotation file and images."""
    parser.add_argument(
        data,
        type=Path,
        metavar="ANNOTATIONS.json",
        help=f"detect only: {verb} the COCO folder of this annotation file "
        f"(needs {images}){also}",
    )
    parser.add_argument(
        images,
        type=Path,
        metavar="IMAGES",
        help=f"the folder that the file_name entries of {data} are relative to",
    )


def _check_options(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, or None."""
    pairs = {"train": [("data", "images"), ("val_data", "val_images")],
             "evaluate": [("data", "images")]}.get(args.command, [])  # fmt: skip
    for data, images in pairs:
        for given, needed in ((data, images), (images, data)):
            if getattr(args, given) is not None and getattr(args, needed) is None:
                return f"{_flag(given)} needs {_flag(needed)}"
    if args.command == "train" and args.task != "detect":
        for name in ("data", "val_data", "model"):
            if getattr(args, name) is not None:
                return f"{_flag(name)} is for the detect task, not {args.task}"
    if args.command in ("train", "evaluate") and args.data is not None:
        synthetic = ["num_images"] + (["seed"] if args.command == "evaluate" else [])
        for name in synthetic:
            if getattr(args, name) is not None:
                return (
                    f"{_flag(name)} draws synthetic scenes; with --data the images "
                    "are the folder's"
                )
    return None


def _flag(name: str) -> str:
    """``val_images`` -> ``--val-images``."""
    return "--" + name.replace("_", "-")


def run_train(args: argparse.Namespace) -> None:
    from detlearn.distributed import process_group

    # under torchrun: join the other processes; alone: nothing happens
    with process_group(args.device, args.backend) as world:
        train_in(world, args)


def train_in(world, args: argparse.Namespace) -> None:
    """Train in one process of ``world`` (a :class:`detlearn.distributed.World`)."""
    from detlearn.data import CocoDataset, ShapesDataset
    from detlearn.train import (
        RECIPES,
        build_model,
        fit,
        save_checkpoint,
        seed_everything,
    )

    recipe = RECIPES[args.task]
    batch_size = args.batch_size or recipe.batch_size
    if args.data is not None:
        folder = CocoDataset(args.images, args.data)
        dataset = _WithoutCrowds(folder)
        image_size = list(dataset[0][0].shape[-2:]) if len(dataset) else None
        data = {
            "annotation_file": str(args.data.resolve()),
            "images_dir": str(args.images.resolve()),
            "image_size": image_size,  # [height, width]
            **_categories(folder),
        }
        model_size = {}  # only the localizer needs one
    else:
        dataset = ShapesDataset(
            args.num_images or recipe.num_images, task=args.task, seed=args.seed
        )
        data = {
            "image_size": dataset.image_size,
            "max_objects": dataset.max_objects,
            **_categories(dataset),  # ids 0 .. K-1, as export-shapes writes them
        }
        model_size = {"image_size": dataset.image_size}
    val_dataset = None
    if args.val_data is not None:
        val_dataset = CocoDataset(args.val_images, args.val_data)
        categories = {k: data[k] for k in ("classes", "category_ids")}
        if _categories(val_dataset) != categories:
            raise ValueError(
                f"--val-data {args.val_data} has other categories than the training "
                f"set: {_describe(**_categories(val_dataset))}, not "
                f"{_describe(**categories)}"
            )
    seed_everything(args.seed)
    model = build_model(
        args.task, len(data["classes"]), detector=args.model, **model_size
    )
    budget = {"epochs": args.epochs, "steps": args.steps, "seconds": args.seconds}
    budget = {k: v for k, v in budget.items() if v is not None} or {
        "epochs": recipe.epochs
    }
    lr = args.lr or recipe.lr_for(batch_size)
    augment = recipe.augment if args.augment is None else args.augment
    history = fit(
        model,
        dataset,
        **budget,
        batch_size=batch_size,
        lr=lr,
        augment=augment,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
        precision=args.precision,
        val_dataset=val_dataset,
    )
    if not world.main:
        return  # rank 0 writes the checkpoint and prints
    validation = [
        {"epoch": m["epoch"], "step": m["step"], **_coco_numbers(m)}
        for m in history.metrics
    ]
    path = save_checkpoint(
        model,
        args.out or Path("runs") / args.task,
        task=args.task,
        data=data,
        train_seed=args.seed,
        num_images=len(dataset),
        steps=history.steps,
        seconds=history.seconds,
        batch_size=batch_size,
        lr=lr,
        augment=augment,
        processes=world.size,
        validation=validation,
    )
    for record in validation:
        print(json.dumps(record))
    print(
        f"saved {path} ({history.steps} steps in {history.seconds:.1f} s, "
        f"final loss {history.losses[-1]['loss']:.4f})"
    )


class _WithoutCrowds:
    """A COCO dataset for training, without its crowd boxes (``iscrowd`` 1).

    A crowd box covers a group of objects that were not boxed one by one; like
    torchvision's reference scripts, training leaves them out (evaluation ignores
    them, as COCO does).
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        keep = target["iscrowd"] == 0
        per_box = ("boxes", "labels", "iscrowd", "area")
        return image, {k: v[keep] if k in per_box else v for k, v in target.items()}


def _categories(dataset) -> dict[str, list]:
    """``{'classes': names, 'category_ids': ids}`` of a dataset's labels ``0 .. K-1``.

    A dataset without ``category_ids`` (ShapesDataset) gives label ``k`` the id
    ``k``, as :func:`detlearn.data.export_coco` writes it.
    """
    classes = [str(name) for name in dataset.classes]
    ids = getattr(dataset, "category_ids", None)
    ids = list(range(len(classes))) if ids is None else [int(i) for i in ids]
    return {"classes": classes, "category_ids": ids}


def _describe(classes: Sequence[str], category_ids: Sequence[int]) -> str:
    """``'{3: cat, 7: dog}'``: category ids and their names."""
    pairs = zip(category_ids, classes, strict=True)
    return "{" + ", ".join(f"{i}: {name}" for i, name in pairs) + "}"


def _coco_numbers(metrics: dict) -> dict[str, float]:
    """The twelve COCO numbers, rounded to 6 decimals for printing."""
    return {k: round(float(metrics[k]), 6) for k in COCO_KEYS}


def run_evaluate(args: argparse.Namespace) -> None:
    from detlearn.data import ShapesDataset
    from detlearn.evaluate import coco_evaluate, to_coco
    from detlearn.train import (
        default_device,
        evaluate_model,
        load_checkpoint,
        predict,
        read_checkpoint,
    )

    extra = read_checkpoint(args.dir)["extra"]
    task, train_seed, data = extra["task"], extra["train_seed"], extra["data"]
    if args.views != 1 and task != "detect":
        raise ValueError(f"--views is for detect checkpoints, this one is {task}")
    if args.coco_out is not None and task != "detect":
        raise ValueError(
            f"--coco-out writes detections, for detect checkpoints; this one is {task}"
        )
    if args.data is not None:
        run_evaluate_folder(args, task, data)
        return
    if "annotation_file" in data:
        raise ValueError(
            f"{args.dir} was trained on the COCO folder of {data['annotation_file']}; "
            "give the folder to evaluate on with --data and --images"
        )
    seed = args.seed
    if seed is None:
        seed = EVAL_SEED if train_seed != EVAL_SEED else EVAL_SEED + 1
    elif seed == train_seed:
        print(f"detlearn: warning: seed {seed} is the training seed", file=sys.stderr)
    dataset = ShapesDataset(
        args.num_images or 500,
        task=task,
        image_size=data["image_size"],
        max_objects=data["max_objects"],
        seed=seed,
        classes=data["classes"],
    )
    device = default_device(args.device)
    model = load_checkpoint(args.dir, device)
    if args.coco_out is None:
        metrics = evaluate_model(
            model, dataset, batch_size=args.batch_size, views=args.views
        )
    else:
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


def run_evaluate_folder(args: argparse.Namespace, task: str, data: dict) -> None:
    """``evaluate --data``: a detect checkpoint on a COCO folder."""
    import torch

    from detlearn.data import CocoDataset
    from detlearn.evaluate import coco_evaluate, to_coco
    from detlearn.train import default_device, load_checkpoint, predict

    if task != "detect":
        raise ValueError(f"--data is for detect checkpoints, this one is {task}")
    dataset = CocoDataset(args.images, args.data)
    if data.get("annotation_file") == str(args.data.resolve()):
        print(
            f"detlearn: warning: {args.data} is the model's training set",
            file=sys.stderr,
        )
    # model label -> the dataset's label of the same category id, or -1
    to_label = torch.tensor(_label_map(data, dataset, args.data), dtype=torch.int64)
    model = load_checkpoint(args.dir, default_device(args.device))
    predictions, targets = predict(
        model, dataset, batch_size=args.batch_size, views=args.views
    )
    for p in predictions:
        labels = to_label[p["labels"]]
        keep = labels >= 0  # categories the file does not have (pycocotools skips them)
        p.update(boxes=p["boxes"][keep], scores=p["scores"][keep], labels=labels[keep])
    metrics = coco_evaluate(predictions, targets)
    if args.coco_out is not None:
        _, detections = to_coco(predictions, targets)
        for d in detections:  # to_coco numbers images 1 .. N and uses labels as ids
            d["image_id"] = dataset.image_ids[d["image_id"] - 1]
            d["category_id"] = dataset.category_ids[d["category_id"]]
        args.coco_out.mkdir(parents=True, exist_ok=True)
        (args.coco_out / "detections.json").write_text(json.dumps(detections))
    print(json.dumps(_coco_numbers(metrics)))


def _label_map(data: dict, dataset, annotation_file: Path) -> list[int]:
    """For each of the model's labels, the dataset's label of its category id, or -1.

    The model's classes and the file's categories meet by id; a shared id must
    carry the same name, and at least one id must be shared. A category of the
    file that the model does not know is a warning: its AP is 0.
    """
    model_ids = data.get("category_ids", list(range(len(data["classes"]))))
    model = dict(zip(model_ids, data["classes"], strict=True))
    ours = dict(zip(dataset.category_ids, dataset.classes, strict=True))
    for cat_id in model.keys() & ours.keys():
        if model[cat_id] != ours[cat_id]:
            raise ValueError(
                f"category id {cat_id} is {ours[cat_id]!r} in {annotation_file} but "
                f"{model[cat_id]!r} in the checkpoint"
            )
    if not model.keys() & ours.keys():
        raise ValueError(
            f"{annotation_file} shares no category id with the checkpoint: "
            f"{_describe(**_categories(dataset))}, the checkpoint has "
            f"{_describe(data['classes'], model_ids)}"
        )
    unknown = sorted(ours.keys() - model.keys())
    if unknown:
        print(
            f"detlearn: warning: the model does not know the category ids {unknown} "
            f"of {annotation_file}; they count with AP 0",
            file=sys.stderr,
        )
    label_of = {cat_id: k for k, cat_id in enumerate(dataset.category_ids)}
    return [label_of.get(cat_id, -1) for cat_id in model_ids]


def run_export(args: argparse.Namespace) -> None:
    """``export-shapes``: ShapesDataset detect scenes as a COCO folder."""
    from detlearn.data import ShapesDataset, export_coco

    dataset = ShapesDataset(
        args.num_images, task="detect", image_size=args.image_size, seed=args.seed
    )
    print(export_coco(dataset, args.out))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m detlearn`` and the ``detlearn`` script.

    Returns the exit code.
    """
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or a usage error already printed
        return int(exit.code or 0)
    problem = _check_options(args)
    if problem is not None:
        print(f"detlearn {args.command}: error: {problem}", file=sys.stderr)
        return 2
    commands = {
        "train": run_train,
        "evaluate": run_evaluate,
        "export-shapes": run_export,
    }
    try:
        commands[args.command](args)
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
