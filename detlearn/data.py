"""ShapesDataset: synthetic scenes of coloured shapes, made on the fly from a seed.

No files and no downloads: ``dataset[i]`` draws scene ``i`` from a random
generator seeded with ``(seed, i)`` only (``np.random.default_rng([seed, i])``,
never global state), so the same arguments give the same tensors bit for bit,
in any order and with any number of DataLoader workers. The generator draws
only uniform numbers and uses only exactly rounded arithmetic, so scenes also
agree across machines (for a given NumPy, whose streams are stable).

Three tasks share one generator:

``"classify"``
    one shape per image; target ``{'labels': int64 [1]}``.
``"localize"``
    one shape per image; target ``{'labels': int64 [1], 'boxes': float32 [1, 4]}``.
``"detect"``
    ``min_objects`` to ``max_objects`` shapes per image; target in torchvision's
    format ``{'boxes': float32 [N, 4], 'labels': int64 [N], 'area': float32 [N],
    'iscrowd': int64 [N]}`` (``iscrowd`` is all zeros, ``area`` is the box area).

``labels`` is a 1-D tensor for every task (shape ``[1]`` for classify and
localize), so code that batches targets never needs a special case; a
classifier's batch of labels is ``torch.cat([t['labels'] for t in targets])``.

Label convention
----------------
Labels are ``0 .. K-1`` and index ``dataset.classes``. detlearn has **no
background class index**: detlearn's detectors score every class with its own
sigmoid, and "background" means that all K scores are low. torchvision's
Faster R-CNN reserves label 0 for background, so chapter 12 adds 1 to the
labels before feeding it.

Boxes
-----
Boxes are ``xyxy`` in pixels and *tight* in pixel-edge coordinates: pixel
``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``, so a shape whose
pixels span columns ``c_min .. c_max`` has ``x1 = c_min`` and
``x2 = c_max + 1`` (width ``x2 - x1`` pixels, no "+1"), likewise ``y``. A box
encloses the whole shape, including any part a later shape hides. Shapes lie
fully inside the image, so boxes are never clipped.

Scenes
------
A detection scene is drawn in this order: a random background colour (with a
smooth random texture and pixel noise when ``background="noise"``), then the
shapes one after another, each in a random colour that contrasts with the
background and with the shapes before it. Later shapes may partly cover
earlier ones, but a candidate shape is rejected and redrawn when it would hide
more than ``max_occlusion`` of any earlier shape's pixels or when its box would
overlap an earlier box with IoU above ``max_box_iou``, so every object stays
clearly visible. Shapes are upright (triangles point up, left, down or right),
with sides drawn uniformly from ``object_size`` (10% to 50% of the image by
default; ``object_size=(0.08, 0.33)`` gives the small objects of chapter 2's
pooling experiment). :meth:`ShapesDataset.render` returns each object's full
and visible pixel masks alongside the image, which is how the tests check that
the boxes are tight; :meth:`ShapesDataset.materialize` stacks a whole (small)
dataset into tensors.

Datasets on disk (COCO folders, Pascal VOC and YOLO boxes, box-aware augmentation)
live in :mod:`detlearn.coco_data`; their names are importable from here too, e.g.
``from detlearn.data import CocoDataset, export_coco``.

Example::

    >>> ds = ShapesDataset(100, task="detect", seed=0)
    >>> image, target = ds[0]
    >>> image.shape, image.dtype
    (torch.Size([3, 96, 96]), torch.float32)
    >>> ds.classes
    ['circle', 'square', 'triangle']
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from detlearn import _checks
from detlearn.coco_data import (
    CocoDataset,
    coco_to_voc,
    coco_to_yolo,
    detection_transforms,
    export_coco,
    read_yolo_labels,
    voc_to_coco,
    write_yolo_labels,
    yolo_to_coco,
)

__all__ = [
    "SHAPES",
    "CocoDataset",
    "Scene",
    "ShapesDataset",
    "coco_to_voc",
    "coco_to_yolo",
    "collate",
    "detection_transforms",
    "export_coco",
    "read_yolo_labels",
    "voc_to_coco",
    "write_yolo_labels",
    "yolo_to_coco",
]

#: Every shape the generator can draw; ``classes=`` picks a subset.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
DEFAULT_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
TASKS: tuple[str, ...] = ("classify", "localize", "detect")
BACKGROUNDS: tuple[str, ...] = ("noise", "plain", "black")

_MIN_SIDE_PX = 3  # smallest shape side (pixels) the generator will draw
_MAX_TRIES = 50  # placement attempts per object before giving up on it
_MAX_SCENE_TRIES = 20  # scene redraws before giving up on reaching min_objects
_COLOUR_TRIES = 16  # random colours tried per object
_BG_CONTRAST = 0.5  # least RGB distance between a shape and the background colour
_OBJ_CONTRAST = 0.35  # least RGB distance between two shapes' colours
_TEXTURE_AMPLITUDE = 0.1  # each of the two smooth background waves is within +-0.1
_TEXTURE_KNOTS = 5  # a wave interpolates this many random values across the image
_NOISE_HALF_WIDTH = 0.07  # pixel noise is uniform in [-0.07, 0.07] (std 0.04)


class Scene(NamedTuple):
    """One rendered scene with its ground truth (see :meth:`ShapesDataset.render`).

    Attributes:
        image: float32 ``[3, H, W]`` in ``[0, 1]``.
        target: the target dict that ``dataset[i]`` returns.
        masks: bool ``[N, H, W]``, every pixel of each object's shape.
        visible: bool ``[N, H, W]``, the pixels of each object that no later
            object covers (``visible[k]`` is a subset of ``masks[k]``).
    """

    image: torch.Tensor
    target: dict[str, torch.Tensor]
    masks: torch.Tensor
    visible: torch.Tensor


class _Object(NamedTuple):
    label: int
    y0: int
    x0: int
    mask: (
        np.ndarray
    )  # bool [h, w], tight: its first/last rows and columns are not empty


def _shape_mask(shape: str, h: int, w: int) -> np.ndarray:
    """Rasterise ``shape`` filling an ``h x w`` frame: bool ``[h, w]``.

    A pixel is on when its centre ``(c + 0.5, r + 0.5)`` lies inside the shape.
    """
    y = (np.arange(h) + 0.5)[:, None] / h - 0.5  # pixel centres, from -0.5 to 0.5
    x = (np.arange(w) + 0.5)[None, :] / w - 0.5
    if shape == "circle":  # an ellipse when h != w
        return x * x + y * y <= 0.25
    if shape == "square":  # a rectangle when h != w
        return np.ones((h, w), dtype=bool)
    if shape == "triangle":  # apex at the top centre, base along the bottom
        return np.abs(x) <= 0.5 * (y + 0.5)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 0.5
    if shape == "cross":  # a plus sign with arms one third of the side thick
        return (np.abs(x) <= 1 / 6) | (np.abs(y) <= 1 / 6)
    raise ValueError(f"unknown shape {shape!r}")


@functools.lru_cache(maxsize=8192)
def _tight_mask(shape: str, h: int, w: int, quarter_turns: int) -> np.ndarray:
    """Read-only bool mask of ``shape`` in an ``h x w`` frame, turned by 90 degree steps
    counter-clockwise and cropped to its tight extent (no empty border row or column).

    Cached: a dataset draws the same few thousand masks over and over.
    """
    mask = np.rot90(_shape_mask(shape, h, w), quarter_turns)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    mask = np.ascontiguousarray(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=8)
def _interpolation_matrix(size: int, knots: int) -> np.ndarray:
    """float32 ``[size, knots]``: linear interpolation from ``knots`` values to ``size``
    pixels, scaled by the texture amplitude."""
    positions = (np.arange(size) + 0.5) / size * (knots - 1)
    weights = np.clip(
        1 - np.abs(positions[:, None] - np.arange(knots)[None, :]), 0, None
    )
    return (_TEXTURE_AMPLITUDE * weights).astype(np.float32)


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two xyxy boxes with positive area (plain Python: faster for a few)."""
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


class ShapesDataset(Dataset):
    """Synthetic images of coloured shapes for classification, localization and
    detection.

    Args:
        num_images: number of scenes, ``len(dataset)``.
        task: ``"classify"``, ``"localize"`` (one shape per image) or
            ``"detect"`` (``min_objects .. max_objects`` shapes).
        image_size: side of the square images in pixels.
        max_objects: most shapes in a detection scene (ignored by classify
            and localize, which always draw one).
        seed: non-negative int; scene ``i`` depends on ``(seed, i)`` only.
        object_size: ``(low, high)`` range of a shape's size as a fraction of
            ``image_size``, sampled uniformly. The size is the side of a
            shape's frame (the geometric mean of its width and height when
            ``aspect_ratio`` is not 1); drawn shapes are whole pixels, so a
            tight box may be up to a pixel smaller or larger than the sample.
            Small objects for the pooling experiment of chapter 2:
            ``object_size=(0.08, 0.33)``.
        min_objects: fewest shapes in a detection scene (0 allows empty scenes).
        classes: the shapes to draw, a subset of :data:`SHAPES` in label order.
        background: ``"noise"`` (random colour, smooth texture, pixel noise on
            the whole image), ``"plain"`` (random flat colour) or ``"black"``.
        aspect_ratio: ``(low, high)`` range of height / width; sampled
            log-uniformly. The default ``(1, 1)`` keeps circles round and
            squares square.
        max_occlusion: most of an object's pixels that later objects may hide,
            in ``[0, 1)``.
        max_box_iou: most box IoU between two objects of a scene, in ``(0, 1]``.

    Raises:
        ValueError: an argument is out of range (the message names it).

    ``dataset[i]`` returns ``(image, target)``: image float32 ``[3, H, W]`` in
    ``[0, 1]`` and the target dict described in the module docstring.
    """

    def __init__(
        self,
        num_images: int,
        task: str = "detect",
        image_size: int = 96,
        max_objects: int = 6,
        seed: int = 0,
        *,
        object_size: tuple[float, float] = (0.1, 0.5),
        min_objects: int = 1,
        classes: Sequence[str] = DEFAULT_CLASSES,
        background: str = "noise",
        aspect_ratio: tuple[float, float] = (1.0, 1.0),
        max_occlusion: float = 0.3,
        max_box_iou: float = 0.4,
    ) -> None:
        num_images = _checks.integer(num_images, "num_images", low=0)
        _checks.one_of(task, "task", TASKS)
        image_size = _checks.integer(image_size, "image_size", low=8)
        max_objects = _checks.integer(max_objects, "max_objects", low=1)
        seed = _checks.integer(seed, "seed", low=0)
        min_objects = _checks.integer(min_objects, "min_objects", 0, max_objects)
        low, high = _checks.size_range(object_size, "object_size")
        if high > 1:
            raise ValueError(f"object_size must lie in (0, 1], got {object_size!r}")
        if low * image_size < _MIN_SIDE_PX:
            raise ValueError(
                f"object_size low {low} gives shapes under {_MIN_SIDE_PX} pixels "
                f"at image_size {image_size}"
            )
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
            raise ValueError(
                f"classes must be a non-empty sequence of names, got {classes!r}"
            )
        for k, name in enumerate(classes):
            _checks.one_of(name, f"classes[{k}]", SHAPES)
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct, got {classes!r}")
        _checks.one_of(background, "background", BACKGROUNDS)
        ratio_low, ratio_high = _checks.size_range(aspect_ratio, "aspect_ratio")
        # Half-open ranges: an occlusion of 1 would let an object vanish entirely.
        if _checks.number(max_occlusion, "max_occlusion", 0.0, 1.0) == 1.0:
            raise ValueError(f"max_occlusion must be < 1, got {max_occlusion!r}")
        if _checks.number(max_box_iou, "max_box_iou", 0.0, 1.0) == 0.0:
            raise ValueError(f"max_box_iou must be > 0, got {max_box_iou!r}")

        self.num_images = int(num_images)
        self.task = task
        self.image_size = int(image_size)
        self.max_objects = int(max_objects)
        self.min_objects = int(min_objects)
        self.seed = int(seed)
        self.object_size = (low, high)
        self.classes: list[str] = list(classes)
        self.background = background
        self.aspect_ratio = (ratio_low, ratio_high)
        self.max_occlusion = float(max_occlusion)
        self.max_box_iou = float(max_box_iou)

    @property
    def num_classes(self) -> int:
        """K, the number of classes; labels are ``0 .. K-1``."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (
            f"ShapesDataset({self.num_images}, task={self.task!r}, "
            f"image_size={self.image_size}, "
            f"max_objects={self.max_objects}, seed={self.seed}, classes={self.classes})"
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target, _ = self._generate(index)
        return image, target

    def render(self, index: int) -> Scene:
        """Scene ``index`` with per-object pixel masks, for pictures and tests.

        Returns:
            a :class:`Scene` ``(image, target, masks, visible)``; ``image`` and
            ``target`` equal ``dataset[index]``; ``masks`` and ``visible`` are
            bool ``[N, H, W]`` in the order of ``target['labels']``. Each box is
            the tight extent of its ``masks[k]``; where an object is not covered
            (``visible[k]`` equals ``masks[k]``) it is also the extent of the
            pixels one can see.
        """
        image, target, objects = self._generate(index)
        size = self.image_size
        masks = np.zeros((len(objects), size, size), dtype=bool)
        for k, obj in enumerate(objects):
            h, w = obj.mask.shape
            masks[k, obj.y0 : obj.y0 + h, obj.x0 : obj.x0 + w] = obj.mask
        visible = masks.copy()
        for k in range(len(objects)):  # later objects are drawn on top
            visible[k] &= ~masks[k + 1 :].any(axis=0)
        return Scene(image, target, torch.from_numpy(masks), torch.from_numpy(visible))

    def materialize(self) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Every scene at once: ``(images float32 [len, 3, H, W], list of targets)``.

        Handy for small datasets that a training loop visits many times
        (``96 * 96 * 3 * 4`` bytes, about 110 kB, per image at the default size).
        """
        items = [self[i] for i in range(len(self))]
        size = self.image_size
        if not items:
            return torch.zeros(0, 3, size, size), []
        return torch.stack([image for image, _ in items]), [
            target for _, target in items
        ]

    # -- generation ---------------------------------------------------------------

    def _generate(
        self, index: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[_Object]]:
        index = operator.index(index)
        if index < 0:
            index += self.num_images
        if not 0 <= index < self.num_images:
            raise IndexError(
                f"index out of range for ShapesDataset of {self.num_images} images"
            )
        rng = np.random.default_rng([self.seed, index])

        background = self._background_colour(rng)
        if self.task == "detect":
            count = int(rng.integers(self.min_objects, self.max_objects + 1))
            for _ in range(_MAX_SCENE_TRIES):
                objects = self._place_objects(rng, count)
                if len(objects) >= self.min_objects:
                    break
            else:
                raise RuntimeError(
                    f"could not place {self.min_objects} objects in scene {index}; "
                    "try smaller object_size or fewer min_objects"
                )
        else:
            objects = self._place_objects(rng, 1)
        colours = self._colours(rng, background, len(objects))
        image = self._paint(rng, background, objects, colours)

        labels = torch.tensor([obj.label for obj in objects], dtype=torch.int64)
        target: dict[str, torch.Tensor] = {"labels": labels}
        if self.task != "classify":
            boxes = torch.tensor(
                [
                    [o.x0, o.y0, o.x0 + o.mask.shape[1], o.y0 + o.mask.shape[0]]
                    for o in objects
                ],
                dtype=torch.float32,
            ).reshape(-1, 4)
            target["boxes"] = boxes
        if self.task == "detect":
            target["area"] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            target["iscrowd"] = torch.zeros(len(objects), dtype=torch.int64)
        return image, target, objects

    def _background_colour(self, rng: np.random.Generator) -> np.ndarray:
        if self.background == "black":
            return np.zeros(3, dtype=np.float32)
        return rng.random(3, dtype=np.float32)

    def _sample_shape(self, u: list[float]) -> tuple[int, np.ndarray]:
        """A label and its tight mask from four uniform numbers ``u`` in ``[0, 1)``."""
        label = min(int(u[0] * self.num_classes), self.num_classes - 1)
        low, high = self.object_size
        size = (low + (high - low) * u[1]) * self.image_size
        ratio_low, ratio_high = self.aspect_ratio
        stretch = math.sqrt(
            ratio_low * (ratio_high / ratio_low) ** u[2]
        )  # sqrt(height / width)
        h = min(self.image_size, max(2, round(size * stretch)))
        w = min(self.image_size, max(2, round(size / stretch)))
        shape = self.classes[label]
        turns = (
            int(u[3] * 4) if shape == "triangle" else 0
        )  # point up, left, down or right
        return label, _tight_mask(shape, h, w, turns)

    def _place_objects(self, rng: np.random.Generator, count: int) -> list[_Object]:
        """Place up to ``count`` objects, each within the occlusion and IoU limits."""
        size = self.image_size
        owner = np.full(
            (size, size), -1, dtype=np.int16
        )  # index of the top object per pixel
        objects: list[_Object] = []
        boxes: list[tuple[int, int, int, int]] = []
        full: list[int] = []  # pixels of each object's shape
        shown: list[int] = []  # of which still visible
        for _ in range(count):
            for u in rng.random((_MAX_TRIES, 6)).tolist():  # Python floats: faster here
                label, mask = self._sample_shape(u)
                h, w = mask.shape
                y0 = int(u[4] * (size - h + 1))
                x0 = int(u[5] * (size - w + 1))
                box = (x0, y0, x0 + w, y0 + h)
                ious = [_box_iou(box, other) for other in boxes]
                if any(iou > self.max_box_iou for iou in ious):
                    continue
                under = owner[y0 : y0 + h, x0 : x0 + w]
                if any(
                    iou > 0 for iou in ious
                ):  # the boxes overlap: count hidden pixels
                    hidden = np.bincount(under[mask] + 1, minlength=len(objects) + 1)[
                        1:
                    ]
                    after = [s - int(c) for s, c in zip(shown, hidden, strict=True)]
                    if any(
                        a < (1 - self.max_occlusion) * f
                        for a, f in zip(after, full, strict=True)
                    ):
                        continue
                    shown = after
                under[mask] = len(objects)
                objects.append(_Object(label, y0, x0, mask))
                boxes.append(box)
                full.append(int(mask.sum()))
                shown.append(full[-1])
                break
        return objects

    def _colours(
        self, rng: np.random.Generator, background: np.ndarray, count: int
    ) -> np.ndarray:
        """float32 ``[count, 3]`` colours that contrast with the background and
        each other.

        Each object takes the first of ``_COLOUR_TRIES`` random colours that lies
        at least ``_BG_CONTRAST`` from the background colour and ``_OBJ_CONTRAST``
        from the colours before it (RGB distance), or else the one that comes
        closest to that.
        """
        candidates = rng.random((count, _COLOUR_TRIES, 3), dtype=np.float32)
        bg = background.tolist()
        chosen: list[list[float]] = []
        for options in candidates.tolist():
            best, best_score = options[0], -1.0
            for colour in options:
                score = math.dist(colour, bg) / _BG_CONTRAST
                for other in chosen:
                    score = min(score, math.dist(colour, other) / _OBJ_CONTRAST)
                if score > best_score:
                    best, best_score = colour, score
                if score >= 1:
                    break
            chosen.append(best)
        return np.array(chosen, dtype=np.float32).reshape(count, 3)

    def _paint(
        self,
        rng: np.random.Generator,
        background: np.ndarray,
        objects: list[_Object],
        colours: np.ndarray,
    ) -> torch.Tensor:
        """The image, float32 ``[3, H, W]`` in ``[0, 1]``: background, then objects."""
        size = self.image_size
        noisy = self.background == "noise"
        # the noise added at the end is uniform in [0, 2 * half width):
        # shift the colours
        # down by its mean first, so that on average every colour stays what it was
        shift = np.float32(_NOISE_HALF_WIDTH if noisy else 0.0)
        image = np.empty((3, size, size), dtype=np.float32)
        if noisy:
            # texture: a smooth random wave down the rows plus one across the columns
            knots = (
                rng.random((2, 3, _TEXTURE_KNOTS), dtype=np.float32) * 2 - 1
            )  # in [-1, 1)
            weights = _interpolation_matrix(size, _TEXTURE_KNOTS)
            waves = np.zeros((2, 3, size), dtype=np.float32)
            for k in range(
                _TEXTURE_KNOTS
            ):  # elementwise, so exactly rounded everywhere
                waves += knots[:, :, k, None] * weights[:, k]
            waves[0] += (background - shift)[:, None]
            np.add(waves[0][:, :, None], waves[1][:, None, :], out=image)
        else:
            image[:] = background[:, None, None]
        for obj, colour in zip(objects, colours - shift, strict=True):
            h, w = obj.mask.shape
            region = image[:, obj.y0 : obj.y0 + h, obj.x0 : obj.x0 + w]
            np.copyto(region, colour[:, None, None], where=obj.mask)
        if noisy:  # 256 noise levels from random bytes: faster than random floats
            noise = np.frombuffer(rng.bytes(image.size), dtype=np.uint8).reshape(
                image.shape
            )
            image += noise * np.float32(2 * _NOISE_HALF_WIDTH / 255)
        return torch.from_numpy(image).clamp_(0.0, 1.0)


def collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Collate ``(image, target)`` pairs into ``(list_of_images, list_of_targets)``.

    The lists keep the images unstacked, as torchvision's detection models
    expect; use it as ``DataLoader(dataset, batch_size=8, collate_fn=collate)``.
    A classifier stacks them itself: ``torch.stack(images)`` and
    ``torch.cat([t['labels'] for t in targets])``.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
