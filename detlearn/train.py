"""Training loop, evaluation helpers and checkpoints for detlearn's models.

    history = fit(model, dataset, epochs=5)          # or steps=..., or seconds=...
    metrics = evaluate_model(model, held_out)        # accuracy / mean IoU / COCO AP
    save_checkpoint(model, "runs/detect")            # weights + config
    model = load_checkpoint("runs/detect")           # same predictions

:func:`fit` is a short loop over :func:`train_step`; the training set is
stacked into tensors once, and every epoch visits it in a new random order.
Under ``torchrun`` the same loop trains with DistributedDataParallel, each
process on its shard of every global batch (see :mod:`detlearn.distributed`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from detlearn import distributed
from detlearn.boxes import box_iou
from detlearn.evaluate import coco_evaluate
from detlearn.models import (
    Classifier,
    Localizer,
    TinyDetector,
    TwoStageDetector,
    detect_views,
    dihedral,
)
from detlearn.models.transform import pad_images

__all__ = [
    "DETECTORS",
    "RECIPES",
    "History",
    "Recipe",
    "build_model",
    "evaluate_model",
    "fit",
    "load_checkpoint",
    "images_format",
    "lr_at",
    "predict",
    "read_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "set_lr",
    "train_step",
    "transformed",
]

# fit's precisions and the float type each keeps the weights in
PRECISIONS = {
    "float32": torch.float32,
    "bfloat16": torch.float32,  # mixed: float32 weights, bfloat16 products
    "float64": torch.float64,
}

MODELS: dict[str, type[nn.Module]] = {
    "Classifier": Classifier,
    "Localizer": Localizer,
    "TinyDetector": TinyDetector,
    "TwoStageDetector": TwoStageDetector,
}
CHECKPOINT_NAME = "checkpoint.pt"
Target = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """Defaults that train one task well on a 2-core CPU (the command line uses them).

    Attributes:
        model: the class to build (see :func:`build_model`).
        num_images: training scenes.
        epochs: passes over them.
        batch_size, lr, augment: for :func:`fit`.
        model_kwargs: settings passed to the model's constructor, on top of its
            defaults.
    """

    model: str
    num_images: int
    epochs: int
    batch_size: int
    lr: float
    augment: bool = True
    model_kwargs: tuple[tuple[str, object], ...] = ()

    def lr_for(self, batch_size: int) -> float:
        """The learning rate for another global batch: ``lr * sqrt(batch_size /
        self.batch_size)``.

        The square-root rule suits Adam-type optimisers such as AdamW (Malladi et
        al., 2022); plain SGD scales linearly instead (Goyal et al., 2017). Either
        is a starting point for a much larger batch, not a guarantee. The number
        of processes does not enter: the batch is the global one.
        """
        return self.lr * math.sqrt(batch_size / self.batch_size)


RECIPES: dict[str, Recipe] = {
    "classify": Recipe(
        "Classifier", 2000, epochs=4, batch_size=16, lr=3e-3, augment=False
    ),
    "localize": Recipe("Localizer", 2000, epochs=10, batch_size=32, lr=3e-3),
    # the two-stage detector: AP 0.914 against TinyDetector's 0.881 after 120 s of
    # training on 2 threads (benchmarks/bench_train.py --compare)
    "detect": Recipe("TwoStageDetector", 4000, epochs=8, batch_size=16, lr=3e-3),
}


# The detectors of the detect task, by the name `train detect --model` takes, each
# with its own settings: box voting adds about 0.01 COCO AP to TinyDetector after
# 120 s of training, from tighter boxes.
DETECTORS: dict[str, tuple[str, dict[str, object]]] = {
    "tiny": ("TinyDetector", {"voting_thresh": 0.7}),
    "two-stage": ("TwoStageDetector", {}),
}


def build_model(
    task: str,
    num_classes: int,
    image_size: int = 96,
    detector: str | None = None,
    **kwargs,
) -> nn.Module:
    """The model for ``task`` (``"classify"``, ``"localize"`` or ``"detect"``).

    ``detector`` (detect only) picks the detector by a key of :data:`DETECTORS`
    (``"tiny"`` or ``"two-stage"``, with its settings) instead of the recipe's.
    ``kwargs`` go to the model's constructor, over the recipe's (or the
    detector's) settings; the localizer also gets ``image_size``.
    """
    if task not in RECIPES:
        raise ValueError(f"task must be one of {list(RECIPES)}, got {task!r}")
    name, settings = RECIPES[task].model, dict(RECIPES[task].model_kwargs)
    if detector is not None:
        if task != "detect" or detector not in DETECTORS:
            raise ValueError(
                f"detector must be one of {list(DETECTORS)} for the detect task, "
                f"got {detector!r} for {task!r}"
            )
        name, settings = DETECTORS[detector]
    model_class = MODELS[name]
    kwargs = {**settings, **kwargs}
    if model_class is Localizer:
        kwargs.setdefault("image_size", image_size)
    return model_class(num_classes, **kwargs)


@dataclass
class History:
    """What :func:`fit` did.

    Attributes:
        losses: one dict per step: each named loss, their sum ``loss`` and ``lr``.
        metrics: one dict per epoch when an evaluation was asked for: ``epoch``,
            ``step`` and the metrics.
        steps: optimisation steps taken.
        seconds: wall-clock seconds spent training (evaluations excluded).
        data_seconds: seconds spent materialising the training set.
    """

    losses: list[dict[str, float]] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    data_seconds: float = 0.0

    def append(self, record: dict[str, float]) -> None:
        """Record one step's losses (and learning rate)."""
        self.losses.append(record)
        self.steps += 1

    def loss(self, name: str = "loss") -> list[float]:
        """The per-step values of one named loss (default: the total)."""
        return [step[name] for step in self.losses]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (before building a model)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else the CPU.

    Under torchrun ``"cuda"`` is this process's GPU, ``cuda:LOCAL_RANK``.
    """
    return distributed.local_device(device)


def lr_at(
    progress: float, lr: float, schedule: str = "cosine", warmup: float = 0.03
) -> float:
    """Learning rate at ``progress`` in ``[0, 1]`` of the budget.

    A linear warm-up over the first ``warmup`` fraction, then ``"constant"`` or a
    ``"cosine"`` decay to zero at the end of the budget.
    """
    if progress < warmup:
        return lr * (progress + 1e-3) / warmup
    if schedule == "constant":
        return lr
    t = (progress - warmup) / (1 - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def fit(
    model: nn.Module,
    dataset: Sequence,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    seconds: float | None = None,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    warmup: float = 0.03,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    val_dataset: Sequence | None = None,
    eval_fn: Callable[[nn.Module, Sequence], dict[str, float]] | None = None,
    augment: bool = False,
    transforms: Callable | None = None,
    precision: str = "float32",
) -> History:
    """Train ``model`` on ``dataset`` with AdamW; returns a :class:`History`.

    Args:
        model: a detlearn model (or any module with the same calling convention:
            ``model(images [B, 3, H, W], targets)`` -> dict of losses in training mode).
        dataset: ``(image, target)`` items; stacked into tensors once (images of
            different sizes padded at the bottom and right to the largest).
        epochs, steps, seconds: the budget, exactly one of them. Chapters and tests
            use ``epochs`` or ``steps`` so that results repeat; ``seconds`` (wall
            clock) is for benchmarks and the command line.
        batch_size: images per step (the last, smaller batch of an epoch is dropped);
            under torchrun the global batch, split equally between the processes.
            For another batch size see :meth:`Recipe.lr_for`.
        lr, weight_decay: AdamW's.
        schedule: ``"cosine"`` or ``"constant"`` after the warm-up (see :func:`lr_at`);
            with a ``seconds`` budget the schedule follows the clock.
        warmup: fraction of the budget spent warming up.
        device: where to train; default CUDA when available, else the CPU. The model
            stays there afterwards.
        seed: seeds the order of the batches (and torch's generator).
        progress: show a tqdm progress bar with the losses (rank 0 only).
        val_dataset: evaluated after every epoch with ``eval_fn`` (default
            :func:`evaluate_model`, each process on its share of the images, the
            metrics computed on all of them); results go to ``history.metrics``.
        eval_fn: ``eval_fn(model, val_dataset) -> dict``, called in every process.
        augment: show each batch in one of the 8 flips and transpositions of the
            square, drawn at random (see :func:`~detlearn.models.dihedral`).
        transforms: box-aware augmentation with ``torchvision.transforms.v2``, drawn
            for each image at every step (see :func:`transformed`); its random
            draws use torch's generator, so under torchrun they differ with the
            number of processes.
        precision: ``"float32"``; ``"bfloat16"`` for mixed precision (float32
            weights, the forward pass under ``torch.autocast``; see
            :func:`train_step`); or ``"float64"``, which converts the model and
            the images to float64, for numerical checks such as comparing runs
            on different numbers of processes.

    Under torchrun (inside :func:`detlearn.distributed.process_group`) every
    process draws the same global batches and trains on its shard of each with
    DistributedDataParallel; ``history`` holds the global batch's losses.
    """
    _check_budget(epochs, steps, seconds, schedule)
    dtype = _check_precision(precision)
    world = distributed.current()  # rank 0 of 1, or this process's place under torchrun
    device = default_device(device)
    history = History()
    tic = time.perf_counter()
    images, targets = _training_set(dataset, device, dtype)
    history.data_seconds = time.perf_counter() - tic
    batch_size = world.check_batch(min(batch_size, len(images)))
    total_steps = steps or (epochs or 0) * (len(images) // batch_size)

    torch.manual_seed(seed)
    model.to(device, dtype, memory_format=images_format(device)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    batches = _batches(
        images, targets, batch_size, generator, augment, world.shard, transforms
    )
    clock, epoch = _Clock(world), 0
    bar = tqdm(
        total=total_steps or None,
        disable=not (progress and world.main),
        unit="step",
        dynamic_ncols=True,
    )
    with distributed.replicated(model) as replica:  # DDP under torchrun
        for batch, batch_targets, last_of_epoch in batches:
            used = clock.seconds() / seconds if seconds else history.steps / total_steps
            step_lr = set_lr(optimizer, lr_at(used, lr, schedule, warmup))
            losses = train_step(replica, optimizer, batch, batch_targets, precision)
            history.append({**world.average(losses), "lr": step_lr})
            _show(bar, history)
            spent = history.steps == total_steps or (
                seconds and clock.seconds() >= seconds
            )
            if last_of_epoch or spent:
                epoch += 1
                if val_dataset is not None:
                    with clock.paused():
                        metrics = _evaluate(model, val_dataset, eval_fn)
                        history.metrics.append(
                            {"epoch": epoch, "step": history.steps, **metrics}
                        )
                        model.train()
            if spent or (epochs is not None and epoch >= epochs):
                break
    bar.close()
    history.seconds = clock.seconds()
    model.to(memory_format=torch.contiguous_format)  # as a freshly built model is
    model.eval()
    return history


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: list[Target],
    precision: str = "float32",
) -> dict[str, float]:
    """One optimisation step on one batch.

    Returns the model's named losses and their sum ``loss``, as floats.
    ``precision="bfloat16"`` runs the forward pass under ``torch.autocast``:
    matrix products and convolutions in bfloat16, the weights, their gradients
    and the optimizer in float32. bfloat16 has float32's range, so no loss
    scaling is needed (float16 would need it).
    """
    mixed = precision == "bfloat16"
    with torch.autocast(images.device.type, torch.bfloat16, enabled=mixed):
        losses = model(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    values = torch.stack([*losses.values(), loss]).tolist()  # one read of the device
    return dict(zip([*losses, "loss"], values, strict=True))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Set every parameter group's learning rate to ``lr``; returns it."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def images_format(device: torch.device) -> torch.memory_format:
    """channels-last on the CPU, where it makes convolutions and pooling faster."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def _check_budget(
    epochs: int | None, steps: int | None, seconds: float | None, schedule: str
) -> None:
    if sum(budget is not None for budget in (epochs, steps, seconds)) != 1:
        raise ValueError("give exactly one budget: epochs=, steps= or seconds=")
    for name, budget in (("epochs", epochs), ("steps", steps), ("seconds", seconds)):
        if budget is not None and not budget > 0:
            raise ValueError(f"{name} must be positive, got {budget!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")


def _check_precision(precision: str) -> torch.dtype:
    """The weights' float type for ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {list(PRECISIONS)}, got {precision!r}"
        )
    return PRECISIONS[precision]


def _evaluate(
    model: nn.Module,
    dataset: Sequence,
    eval_fn: Callable[[nn.Module, Sequence], dict[str, float]] | None,
) -> dict:
    """``eval_fn``'s metrics, or :func:`evaluate_model`'s with the images shared
    out between the processes (the same metrics as in one process)."""
    if eval_fn is not None:
        return eval_fn(model, dataset)
    return evaluate_model(model, dataset, shard=True)


def _training_set(
    dataset: Sequence, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, list[Target]]:
    """The whole training set as tensors on ``device``, floats as ``dtype``.

    Returns ``(images [N, 3, H, W], targets)``; images of different sizes are
    padded with zeros at the bottom and right to the largest height and width.

    ShapesDataset draws every scene with numpy; drawing them again every epoch
    would cost more than the model's own steps on a CPU, so they are drawn once.
    """
    if hasattr(dataset, "materialize"):
        images, targets = dataset.materialize()
    else:
        items = [dataset[i] for i in range(len(dataset))]
        # images of different sizes: zero-padded at the bottom and right to the
        # largest, which leaves every box where it is
        images = pad_images([image for image, _ in items]) if items else torch.zeros(0)
        targets = [target for _, target in items]
    if len(images) == 0:
        raise ValueError("dataset is empty")
    images = images.to(device, dtype).contiguous(memory_format=images_format(device))
    targets = [
        {
            k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
            for k, v in t.items()
        }
        for t in targets
    ]
    return images, targets


def _batches(
    images: torch.Tensor,
    targets: list[Target],
    batch_size: int,
    generator: torch.Generator,
    augment: bool,
    shard: Callable[[torch.Tensor], torch.Tensor] = lambda index: index,
    transforms: Callable | None = None,
) -> Iterator[tuple[torch.Tensor, list[Target], bool]]:
    """Batches without end, each epoch in a new random order.

    Yields ``(images, targets, last)``.

    ``last`` marks an epoch's last batch; the remainder of ``len(images) /
    batch_size`` is dropped. With ``augment`` each batch is shown in one of the
    8 :func:`~detlearn.models.dihedral` views, drawn from ``generator`` too.
    ``shard`` picks this process's part of each global batch's indices; every
    process draws the same order and views, so the global batches do not depend
    on the number of processes. ``transforms`` then moves each image of the batch
    and its boxes (see :func:`transformed`).
    """
    steps_per_epoch = len(images) // batch_size
    while True:
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for i in range(steps_per_epoch):
            index = shard(order[i * batch_size : (i + 1) * batch_size])
            batch, batch_targets = images[index], [targets[j] for j in index.tolist()]
            if augment:
                view = int(torch.randint(8, (1,), generator=generator))
                batch, batch_targets = dihedral(batch, batch_targets, view)
                batch = batch.contiguous(memory_format=images_format(images.device))
            if transforms is not None:
                batch, batch_targets = transformed(batch, batch_targets, transforms)
            yield batch, batch_targets, i == steps_per_epoch - 1


def transformed(
    images: torch.Tensor, targets: list[Target], transforms: Callable
) -> tuple[torch.Tensor, list[Target]]:
    """Each image and its boxes through ``transforms``, then one padded batch again.

    ``transforms`` is a ``torchvision.transforms.v2`` transform, called as
    ``transforms(image, {"boxes": boxes, "labels": labels})`` with a
    ``tv_tensors.Image`` and ``tv_tensors.BoundingBoxes``, so the boxes move with
    the pixels (for example :func:`detlearn.data.detection_transforms`). Boxes it
    pushes out of the image or shrinks under a pixel are removed, with their
    labels (``SanitizeBoundingBoxes``). Images ``[B, 3, H, W]`` in, images of the
    largest transformed size out, zero-padded at the bottom and right.
    """
    sanitize = v2.SanitizeBoundingBoxes()
    out_images, out_targets = [], []
    for image, target in zip(images, targets, strict=True):
        boxes = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:])
        )
        sample = tv_tensors.Image(image), {"boxes": boxes, "labels": target["labels"]}
        image, out = sanitize(*transforms(*sample))
        out_images.append(image.as_subclass(torch.Tensor))
        boxes = out["boxes"].as_subclass(torch.Tensor)
        out_targets.append({"boxes": boxes, "labels": out["labels"]})
    return pad_images(out_images), out_targets


class _Clock:
    """Seconds of training so far, without the time spent in ``paused()`` blocks.

    Under torchrun every process reads rank 0's clock, so that all of them change
    the learning rate and stop at the same step.
    """

    def __init__(self, world: distributed.World) -> None:
        self.start, self.pause, self.world = time.perf_counter(), 0.0, world

    def seconds(self) -> float:
        return self.world.from_main(time.perf_counter() - self.start - self.pause)

    @contextmanager
    def paused(self) -> Iterator[None]:
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.pause += time.perf_counter() - tic


def _show(bar: tqdm, history: History) -> None:
    """Advance the progress bar; every 10 steps, show the latest losses on it."""
    bar.update()
    if history.steps % 10 == 1:
        record = history.losses[-1]
        bar.set_postfix(
            {k: f"{v:.3f}" for k, v in record.items() if k != "lr"}, refresh=False
        )


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Sequence,
    *,
    batch_size: int = 100,
    device: str | torch.device | None = None,
    views: int = 1,
    shard: bool = False,
) -> tuple[list[Target], list[Target]]:
    """Eval-mode outputs for every item: ``(predictions, targets)``, both on the CPU.

    ``device`` defaults to where the model's parameters are. The model is left in
    eval mode. ``views > 1`` (detectors only) merges the detections of that many
    views of each image (see :func:`~detlearn.models.detect_views`). ``shard``:
    under torchrun, each process predicts every P-th item and every process gets
    all predictions back, in order (all processes must call it). Images of
    different sizes are legal: each run of consecutive items of one size goes
    through the model as one batch (of at most ``batch_size`` images).
    """
    if views != 1 and not isinstance(model, TinyDetector):
        raise ValueError("views > 1 is for detectors (TinyDetector) only")
    device = (
        torch.device(device) if device is not None else next(model.parameters()).device
    )
    model.to(device).eval()
    world = distributed.current() if shard else distributed.World()
    indices = range(world.rank, len(dataset), world.size)
    predictions, targets = [], []
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start : start + batch_size]]
        for run in _same_size_runs([image for image, _ in items]):
            images = torch.stack(run).to(device)
            outputs = (
                model(images) if views == 1 else detect_views(model, images, views)
            )
            predictions += [{k: v.cpu() for k, v in out.items()} for out in outputs]
        targets += [target for _, target in items]
    if world.size > 1:
        predictions, targets = map(distributed.gather_shards, (predictions, targets))
    return predictions, targets


def _same_size_runs(images: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Split a list of images, in order, into runs of one size (one batch each)."""
    runs: list[list[torch.Tensor]] = []
    for image in images:
        if runs and runs[-1][0].shape == image.shape:
            runs[-1].append(image)
        else:
            runs.append([image])
    return runs


def evaluate_model(
    model: nn.Module,
    dataset: Sequence,
    *,
    batch_size: int = 100,
    device: str | torch.device | None = None,
    views: int = 1,
    shard: bool = False,
) -> dict:
    """Metrics of ``model`` on ``dataset``, by the kind of model.

    * :class:`Classifier`: ``{'accuracy'}``, the fraction of images whose label is
      right.
    * :class:`Localizer`: ``{'accuracy', 'mean_iou'}``, ``mean_iou`` the average IoU
      of the predicted box with the true one.
    * :class:`TinyDetector` (any model whose outputs hold several boxes):
      :func:`detlearn.evaluate.coco_evaluate`'s dict, twelve COCO numbers and
      ``per_class``.

    ``views``, ``shard``: as in :func:`predict`.
    """
    predictions, targets = predict(
        model, dataset, batch_size=batch_size, device=device, views=views, shard=shard
    )
    if isinstance(model, TinyDetector):
        return coco_evaluate(predictions, targets)
    metrics = {"accuracy": label_accuracy(predictions, targets)}
    if isinstance(model, Localizer):
        metrics["mean_iou"] = mean_iou(predictions, targets)
    return metrics


def label_accuracy(predictions: Sequence[Target], targets: Sequence[Target]) -> float:
    """Fraction of images whose single predicted label equals the true one."""
    predicted = torch.cat([p["labels"] for p in predictions])
    true = torch.cat([t["labels"] for t in targets])
    return (predicted == true).float().mean().item()


def mean_iou(predictions: Sequence[Target], targets: Sequence[Target]) -> float:
    """Average IoU between each image's single predicted box and its true box."""
    ious = [
        box_iou(p["boxes"], t["boxes"])[0, 0]
        for p, t in zip(predictions, targets, strict=True)
    ]
    return torch.stack(ious).mean().item()


def save_checkpoint(model: nn.Module, path: str | Path, **extra) -> Path:
    """Save weights and the config that rebuilds ``model``; returns the file written.

    ``path`` is a file, or a directory (existing, or any path without a suffix) that
    receives ``checkpoint.pt``. ``extra`` keywords (plain Python values: numbers,
    strings, lists, dicts) are stored alongside, e.g. the data settings.
    """
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / CHECKPOINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    name = type(model).__name__
    if name not in MODELS:
        raise ValueError(f"can only save {list(MODELS)}, got {name}")
    checkpoint = {
        "format": "detlearn-checkpoint-1",
        "model": name,
        "config": dataclasses.asdict(model.config),  # plain values: weights_only loads
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    torch.save(checkpoint, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (``model``, ``config``, ``state_dict``, ``extra``).

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (a file, or a directory
            holding one).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_checkpoint`, in eval mode, on ``device``.

    The stored config is a dict of the model's settings (its config's fields,
    which are also its constructor's keywords), so the model's config class
    checks it again; checkpoints that stored lists instead of tuples load too.
    """
    checkpoint = read_checkpoint(path)
    model = MODELS[checkpoint["model"]](**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()
