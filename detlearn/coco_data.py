"""Datasets on disk: COCO folders in and out, box formats of other tools, augmentation.

A COCO folder is a directory of images plus one JSON annotation file::

    {"images": [{"id": 1, "file_name": "000001.png", "width": 96, "height": 96}],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 7,
                      "bbox": [x, y, w, h], "area": 144.0, "iscrowd": 0}],
     "categories": [{"id": 7, "name": "circle"}]}

``bbox`` is ``[x, y, width, height]`` in pixels, with ``(x, y)`` the box's top-left
corner in pixel-edge coordinates (the image's top-left corner is ``(0, 0)``, pixel
column ``c`` spans ``[c, c + 1)``), the same coordinates as detlearn's ``xyxy`` boxes.

:func:`export_coco` writes any dataset in detlearn's format as such a folder and
:class:`CocoDataset` reads one back in detlearn's format, on top of torchvision's
``CocoDetection`` and ``wrap_dataset_for_transforms_v2``. Its ``transforms`` are
``torchvision.transforms.v2`` transforms, which move the boxes with the image;
:func:`detection_transforms` builds the usual ones.

The converters translate single boxes between three conventions that are easy to
mix up: COCO's ``[x, y, w, h]``, Pascal VOC's 1-based inclusive pixel indices and
YOLO's normalised centre and size (one text file of lines per image).

Bad input raises one ``ValueError`` (``FileNotFoundError`` for a missing file)
that names the file and the record.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from detlearn import _checks
from detlearn.boxes import box_area, box_convert

__all__ = [
    "CocoDataset",
    "export_coco",
    "coco_to_voc",
    "voc_to_coco",
    "coco_to_yolo",
    "yolo_to_coco",
    "read_yolo_labels",
    "write_yolo_labels",
    "detection_transforms",
]

Target = dict[str, Tensor]
PathLike = str | os.PathLike


# --- COCO folders ----------------------------------------------------------------


class CocoDataset(Dataset):
    """A COCO folder in detlearn's format.

    Args:
        images_dir: the folder that the images' ``file_name`` entries are relative to.
        annotation_file: the COCO JSON file (see the module docstring).
        transforms: ``None``, or a ``torchvision.transforms.v2`` transform called as
            ``transforms(image, {"boxes": boxes, "labels": index})`` with a
            ``tv_tensors.Image`` (uint8) and ``tv_tensors.BoundingBoxes``, so that
            the boxes move with the image (see :func:`detection_transforms`).

    ``dataset[i]`` is ``(image, target)``, images in increasing order of their id:

    - image: float32 ``[3, H, W]`` in ``[0, 1]``. Grey, palette and RGBA files are
      converted to RGB (``PIL.Image.convert("RGB")``: the alpha channel is dropped).
    - ``boxes``: float32 ``[N, 4]`` xyxy pixels (``x2 = x + w``).
    - ``labels``: int64 ``[N]``, ``0 .. K-1``: label ``k`` is the ``k``-th category
      id in increasing order, ``dataset.category_ids[k]``, named
      ``dataset.classes[k]``. Any ids work (not contiguous, not starting at 1).
    - ``image_id``: int64 scalar, the image's ``id`` in the file.
    - ``iscrowd``: int64 ``[N]`` (0 when the record has none); crowd boxes are kept.
    - ``area``: float32 ``[N]``, the record's ``area`` (``w * h`` when it has none).

    An image without annotations gives ``N = 0``. The whole file is checked when
    the dataset is made: a missing image file, an annotation whose ``image_id`` or
    ``category_id`` is not in the file, a box of negative width or height, a
    duplicate id or unreadable JSON raises an error that names the file and the
    record. Nothing is dropped, with one exception: after ``transforms``, boxes of
    a side under 1 pixel or outside the image are removed (torchvision's
    ``SanitizeBoundingBoxes``) and counted in ``dataset.removed_boxes``, the total
    removed by this process (each DataLoader worker counts its own copy). After
    ``transforms``, ``area`` is scaled by how much the box's area changed.
    """

    def __init__(
        self,
        images_dir: PathLike,
        annotation_file: PathLike,
        transforms: Callable[..., Any] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images_dir {self.images_dir} is not a directory")
        data = _read_coco_file(self.annotation_file, self.images_dir)
        categories = sorted(data["categories"], key=operator.itemgetter("id"))
        self.category_ids: list[int] = [c["id"] for c in categories]
        self.classes: list[str] = [c["name"] for c in categories]
        self._label_of = {cat_id: k for k, cat_id in enumerate(self.category_ids)}
        # image id -> (position in the file, record), to name the record in errors
        self._records = {
            image["id"]: (k, image) for k, image in enumerate(data["images"])
        }
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
            coco = CocoDetection(str(self.images_dir), str(self.annotation_file))
        # COCO allows records without 'iscrowd' and 'area'; the wrapper needs both
        for ann in coco.coco.dataset.get("annotations", []):
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        keys = {"image_id", "boxes", "labels", "iscrowd", "area"}
        self._coco = wrap_dataset_for_transforms_v2(coco, target_keys=keys)
        self.image_ids: list[int] = list(coco.ids)
        self.transforms = transforms
        self._sanitize = v2.SanitizeBoundingBoxes()  # finds the "labels" key
        self.removed_boxes = 0

    @property
    def num_classes(self) -> int:
        """K, the number of categories; labels are ``0 .. K-1``."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (
            f"CocoDataset({str(self.images_dir)!r}, {str(self.annotation_file)!r}): "
            f"{len(self)} images, classes={self.classes}"
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(
                f"index out of range for CocoDataset of {len(self)} images"
            )
        image, raw = self._load(index)
        boxes = (
            raw["boxes"].as_subclass(Tensor) if "boxes" in raw else torch.zeros(0, 4)
        )
        target: Target = {
            "boxes": boxes.to(torch.float32),
            "labels": torch.tensor(
                [self._label_of[c] for c in raw.get("labels", torch.zeros(0)).tolist()],
                dtype=torch.int64,
            ),
            "image_id": torch.tensor(raw["image_id"], dtype=torch.int64),
            "iscrowd": torch.tensor(raw.get("iscrowd", []), dtype=torch.int64),
            "area": torch.tensor(raw.get("area", []), dtype=torch.float32),
        }
        pixels = v2.functional.pil_to_tensor(image)  # uint8 [3, H, W]
        if self.transforms is not None:
            pixels, target = self._augment(pixels, target)
        if pixels.dtype == torch.uint8:
            pixels = pixels.to(torch.float32) / 255
        return pixels.as_subclass(Tensor).to(torch.float32), target

    def _load(self, index: int) -> tuple[Image.Image, dict[str, Any]]:
        """The wrapper's ``(PIL image, target)``; errors name the file and record."""
        k, record = self._records[self.image_ids[index]]
        path = self.images_dir / record["file_name"]
        where = f"{self.annotation_file}: images[{k}] (id {record['id']})"
        try:
            image, raw = self._coco[index]
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{where}: image file {path} does not exist"
            ) from err
        except OSError as err:  # not an image, or a truncated one
            raise ValueError(f"{where}: cannot read image file {path}: {err}") from err
        if "width" in record and image.size != (record["width"], record["height"]):
            raise ValueError(
                f"{where}: image file {path} has width {image.width} and height "
                f"{image.height}, the record says {record['width']} and "
                f"{record['height']}"
            )
        return image, raw

    def _augment(self, pixels: Tensor, target: Target) -> tuple[Tensor, Target]:
        """Apply ``transforms``, then remove degenerate boxes and count them.

        The transforms see each box's index as its ``labels``: what survives tells
        which records to keep, whatever the transforms remove themselves.
        """
        n = len(target["boxes"])
        boxes = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=tuple(pixels.shape[-2:])
        )
        sample = (tv_tensors.Image(pixels), {"boxes": boxes, "labels": torch.arange(n)})
        pixels, out = self._sanitize(*self.transforms(*sample))
        kept = out["labels"]
        self.removed_boxes += n - len(kept)
        new_boxes = out["boxes"].as_subclass(Tensor).to(torch.float32)
        old_area, new_area = box_area(target["boxes"][kept]), box_area(new_boxes)
        scale = torch.where(old_area > 0, new_area / old_area.clamp(min=1e-12), 1.0)
        return pixels.as_subclass(Tensor), {
            "boxes": new_boxes,
            "labels": target["labels"][kept],
            "image_id": target["image_id"],
            "iscrowd": target["iscrowd"][kept],
            "area": target["area"][kept] * scale,
        }


def export_coco(dataset: Sequence[tuple[Tensor, Target]], out_dir: PathLike) -> Path:
    """Write a dataset in detlearn's format as a COCO folder.

    Args:
        dataset: ``dataset[i]`` is ``(image, target)``: image float32 ``[3, H, W]``
            in ``[0, 1]`` (or uint8), target with ``boxes`` (xyxy) and ``labels``,
            and optionally ``area``, ``iscrowd`` and ``image_id``.
            ``dataset.classes`` names the labels (else they are named ``"0"``,
            ``"1"``, ...) and ``dataset.category_ids`` gives their ids (else the
            id of label ``k`` is ``k``), so a :class:`CocoDataset` exports its own
            ids and names again.
        out_dir: the folder to write (made when missing).

    Returns:
        the path of ``out_dir/annotations.json``. Image ``i`` is written as
        ``out_dir/images/{id:06d}.png`` (8 bits: ``round(255 * pixel)``) with the
        target's ``image_id``, else id ``i + 1``; annotation ids count from 1
        (pycocotools reads id 0 as "no match"); ``bbox`` is ``[x, y, w, h]``
        (computed in float64, exact for float32 boxes); ``area`` is the target's
        (else ``w * h``) and ``iscrowd`` the target's (else 0). Files already in
        ``out_dir`` with the same names are overwritten.

    Raises:
        ValueError: an image or target is malformed (the message names ``dataset[i]``).
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    classes = getattr(dataset, "classes", None)
    category_ids = getattr(dataset, "category_ids", None)
    ids_given = category_ids is not None
    if classes is not None and ids_given and len(classes) != len(category_ids):
        raise ValueError("dataset.classes and dataset.category_ids differ in length")
    known = classes if classes is not None else category_ids  # K labels, when given
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []  # with labels; category ids at the end
    seen: set[int] = set()
    for i in range(len(dataset)):
        image, target = dataset[i]
        pixels = _png_pixels(image, f"dataset[{i}] image")
        boxes, labels = _export_boxes_and_labels(target, f"dataset[{i}] target", known)
        image_id = int(target["image_id"]) if "image_id" in target else i + 1
        if image_id in seen:
            raise ValueError(
                f"dataset[{i}] target['image_id'] {image_id} is not unique"
            )
        seen.add(image_id)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(out_dir / "images" / file_name)
        height, width = pixels.shape[:2]
        images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        xywh = box_convert(boxes.double(), "xyxy", "xywh")
        area = target.get("area", xywh[:, 2] * xywh[:, 3])
        iscrowd = target.get("iscrowd", torch.zeros(len(boxes), dtype=torch.int64))
        for bbox, label, box_area_, crowd in zip(
            xywh.tolist(), labels.tolist(), area.tolist(), iscrowd.tolist(), strict=True
        ):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                 "bbox": bbox, "area": float(box_area_), "iscrowd": int(crowd)}
            )  # fmt: skip
    count = max([ann["category_id"] + 1 for ann in annotations], default=0)
    count = len(known) if known is not None else count
    names = list(classes) if classes is not None else [str(k) for k in range(count)]
    ids = [int(c) for c in category_ids] if ids_given else list(range(count))
    for ann in annotations:
        ann["category_id"] = ids[ann["category_id"]]
    categories = [{"id": c, "name": str(n)} for c, n in zip(ids, names, strict=True)]
    path = out_dir / "annotations.json"
    content = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(_one_record_per_line(content), encoding="utf-8")
    return path


def _one_record_per_line(content: dict[str, list[dict[str, Any]]]) -> str:
    """JSON text with one record per line: compact, and readable in a diff."""
    parts = []
    for key, records in content.items():
        rows = ",\n".join("  " + json.dumps(record) for record in records)
        parts.append(f' "{key}": [\n{rows}\n ]' if records else f' "{key}": []')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _png_pixels(image: object, name: str) -> np.ndarray:
    """uint8 ``[H, W, 3]`` for PIL from ``[3, H, W]`` (float in [0, 1], or uint8)."""
    t = _checks.tensor(image, name)
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"{name} must have shape [3, H, W], got {list(t.shape)}")
    if t.dtype != torch.uint8:
        t = _checks.float_tensor(t, name)
        if t.numel() and not (t.min() >= 0 and t.max() <= 1):
            raise ValueError(f"{name} must lie in [0, 1]")
        t = (t * 255).round().to(torch.uint8)
    return t.permute(1, 2, 0).contiguous().cpu().numpy()


def _export_boxes_and_labels(
    target: object, name: str, known: Sequence[object] | None
) -> tuple[Tensor, Tensor]:
    """Checked boxes and labels of a target; labels < ``len(known)`` when given."""
    if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
        raise ValueError(f"{name} must be a dict with 'boxes' and 'labels'")
    boxes = _checks.boxes(target["boxes"], f"{name}['boxes']").cpu()
    labels = _checks.labels(target["labels"], f"{name}['labels']", len(boxes)).cpu()
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"{name}['labels'] must be >= 0, got {int(labels.min())}")
    if known is not None and len(labels) and int(labels.max()) >= len(known):
        raise ValueError(
            f"{name}['labels'] must be < len(dataset.classes) = {len(known)}, "
            f"got {int(labels.max())}"
        )
    for key in ("area", "iscrowd"):
        if key in target and target[key].shape != (len(boxes),):
            raise ValueError(f"{name}[{key!r}] must have shape [{len(boxes)}]")
    return boxes, labels


def _read_coco_file(path: Path, images_dir: Path) -> dict[str, Any]:
    """Parse and check a COCO annotation file; errors name the file and the record."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list) or (
            key != "annotations" and key not in data
        ):
            raise ValueError(f"{path}: {key!r} must be a list of records")
    image_ids = _check_records(path, "images", data["images"], {"file_name": str})
    for k, image in enumerate(data["images"]):
        where = f"{path}: images[{k}] (id {image['id']})"
        for side in ("width", "height"):
            value = image.get(side, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{where}: {side} must be an integer >= 1, got {value!r}"
                )
        if ("width" in image) != ("height" in image):
            raise ValueError(f"{where}: has one of width and height but not the other")
        if not (images_dir / image["file_name"]).is_file():
            raise FileNotFoundError(
                f"{where}: image file {images_dir / image['file_name']} does not exist"
            )
    category_ids = _check_records(path, "categories", data["categories"], {"name": str})
    annotations = data.get("annotations", [])
    _check_records(
        path, "annotations", annotations, {"image_id": int, "category_id": int}
    )
    for k, ann in enumerate(annotations):
        _check_annotation(f"{path}: annotations[{k}] (id {ann['id']})", ann)
        if ann["image_id"] not in image_ids:
            raise ValueError(
                f"{path}: annotations[{k}] (id {ann['id']}): image_id "
                f"{ann['image_id']} is not the id of a record in 'images'"
            )
        if ann["category_id"] not in category_ids:
            raise ValueError(
                f"{path}: annotations[{k}] (id {ann['id']}): category_id "
                f"{ann['category_id']} is not the id of a record in 'categories'"
            )
    data.setdefault("annotations", [])
    return data


def _check_records(
    path: Path, key: str, records: list[Any], fields: dict[str, type]
) -> set[int]:
    """Require dicts with a unique integer ``id`` and ``fields`` of the given types."""
    ids: set[int] = set()
    for k, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: {key}[{k}] must be a JSON object")
        record_id = record.get("id")
        if isinstance(record_id, bool) or not isinstance(record_id, int):
            raise ValueError(
                f"{path}: {key}[{k}] needs an integer 'id', got {record_id!r}"
            )
        if record_id in ids:
            raise ValueError(
                f"{path}: {key}[{k}] (id {record_id}): the id is not unique"
            )
        ids.add(record_id)
        for field, kind in fields.items():
            value = record.get(field)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(
                    f"{path}: {key}[{k}] (id {record_id}): {field!r} must be "
                    f"{'an integer' if kind is int else 'a string'}, got {value!r}"
                )
    return ids


def _check_annotation(where: str, ann: dict[str, Any]) -> None:
    """Require a finite ``bbox`` ``[x, y, w, h]``, ``w, h >= 0``, and sound extras."""
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(_is_number(v) and math.isfinite(v) for v in bbox)
    ):
        raise ValueError(
            f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}"
        )
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where}: 'bbox' {bbox} has a negative width or height")
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
        raise ValueError(f"{where}: 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
    area = ann.get("area", 0)
    if not _is_number(area) or not math.isfinite(area) or area < 0:
        raise ValueError(f"{where}: 'area' must be a finite number >= 0, got {area!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- box formats of other tools ------------------------------------------------------


def coco_to_voc(boxes: Tensor) -> Tensor:
    """COCO ``[x, y, w, h]`` to Pascal VOC ``[xmin, ymin, xmax, ymax]``.

    COCO (and detlearn) measure in pixel edges: ``(x, y)`` is the box's top-left
    corner, 0 at the image's top-left corner, and the box covers pixel columns
    ``x .. x + w - 1`` (0-based) when ``x`` and ``w`` are whole numbers. Pascal
    VOC stores the first and the last pixel inside the box as 1-based indices,
    both inclusive (the VOC devkit: "top left pixel co-ordinates: (1, 1)"; its
    evaluation takes a box's width as ``xmax - xmin + 1``)::

        xmin = x + 1    ymin = y + 1    xmax = x + w    ymax = y + h

    so ``xmax = xmin + w - 1``, and a one-pixel box has ``xmin == xmax``. Keeps
    the float dtype and device; ``w, h >= 0`` is required.
    """
    x, y, w, h = _checks.boxes(boxes, "boxes", fmt="xywh").unbind(-1)
    return torch.stack([x + 1, y + 1, x + w, y + h], dim=-1)


def voc_to_coco(boxes: Tensor) -> Tensor:
    """Pascal VOC ``[xmin, ymin, xmax, ymax]`` to COCO ``[x, y, w, h]``.

    The inverse of :func:`coco_to_voc`: ``x = xmin - 1``, ``w = xmax - xmin + 1``
    (likewise ``y``, ``h``). In detlearn's xyxy that is ``[xmin - 1, ymin - 1,
    xmax, ymax]``. ``xmax >= xmin - 1`` and ``ymax >= ymin - 1`` are required (a
    width of at least 0).
    """
    t = _checks.as_float(_checks.tensor(boxes, "boxes"), "boxes")
    if t.dim() != 2 or t.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {list(t.shape)}")
    _checks.finite(t, "boxes")
    xmin, ymin, xmax, ymax = t.unbind(-1)
    w, h = xmax - xmin + 1, ymax - ymin + 1
    if not bool(((w >= 0) & (h >= 0)).all()):
        raise ValueError(
            "boxes must be VOC boxes with xmax >= xmin - 1 and ymax >= ymin - 1"
        )
    return torch.stack([xmin - 1, ymin - 1, w, h], dim=-1)


def coco_to_yolo(boxes: Tensor, image_size: tuple[float, float]) -> Tensor:
    """COCO ``[x, y, w, h]`` pixel boxes to YOLO's normalised ``[cx, cy, w, h]``.

    YOLO divides by the image's size: with ``image_size = (height, width)`` (as
    everywhere in detlearn), ``cx = (x + w / 2) / width``, ``cy = (y + h / 2) /
    height``, ``w / width``, ``h / height``; a box inside the image has all four
    in ``[0, 1]``.
    """
    height, width = _checks.image_size(image_size, "image_size")
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    x, y, w, h = _checks.boxes(boxes, "boxes", fmt="xywh").unbind(-1)
    return torch.stack(
        [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height], -1
    )


def yolo_to_coco(boxes: Tensor, image_size: tuple[float, float]) -> Tensor:
    """YOLO's normalised ``[cx, cy, w, h]`` ``[N, 4]`` to COCO ``[x, y, w, h]`` pixels.

    The inverse of :func:`coco_to_yolo`; ``image_size`` is ``(height, width)``.
    """
    height, width = _checks.image_size(image_size, "image_size")
    cx, cy, w, h = _checks.boxes(boxes, "boxes", fmt="cxcywh").unbind(-1)
    w, h = w * width, h * height
    return torch.stack([cx * width - w / 2, cy * height - h / 2, w, h], dim=-1)


def read_yolo_labels(path: PathLike, image_size: tuple[float, float]) -> Target:
    """Read one image's YOLO label file into a detlearn target.

    The file has one line per object, ``class cx cy w h``: a class index (an
    integer from 0) and the box's centre and size divided by the image's width
    (``cx``, ``w``) or height (``cy``, ``h``), all in ``[0, 1]``. An empty file
    means no objects. ``image_size`` is ``(height, width)`` in pixels.

    Returns:
        ``{'boxes': float32 [N, 4] xyxy pixels, 'labels': int64 [N]}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is malformed (the message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YOLO label file {path} does not exist")
    labels, rows = [], []
    for number, line in enumerate(
        path.read_text(encoding="utf-8").splitlines(), start=1
    ):
        if not line.strip():
            continue
        fields = line.split()
        try:
            label, values = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            label, values = -1, []
        if len(fields) != 5 or label < 0 or not all(0 <= v <= 1 for v in values):
            raise ValueError(
                f"{path}, line {number}: expected 'class cx cy w h', a class >= 0 "
                f"and four numbers in [0, 1] (normalised, not pixels), got {line!r}"
            )
        labels.append(label)
        rows.append(values)
    yolo = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    xywh = yolo_to_coco(yolo, image_size)
    return {
        "boxes": box_convert(xywh, "xywh", "xyxy").to(torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def write_yolo_labels(
    path: PathLike, target: Target, image_size: tuple[float, float]
) -> None:
    """Write a target's ``boxes`` (xyxy pixels) and ``labels`` as a YOLO label file.

    One line ``class cx cy w h`` per box, the four numbers normalised by the image's
    ``image_size = (height, width)`` and written with 6 decimals (under a
    thousandth of a pixel for images under 1000 pixels). Boxes must lie inside the
    image, as YOLO's numbers are in ``[0, 1]``.
    """
    boxes = _checks.boxes(target["boxes"], "target['boxes']").double().cpu()
    labels = _checks.labels(target["labels"], "target['labels']", len(boxes)).cpu()
    height, width = _checks.image_size(image_size, "image_size")
    x, y = boxes[:, 0::2], boxes[:, 1::2]
    inside = (
        (x >= 0).all() and (x <= width).all() and (y >= 0).all() and (y <= height).all()
    )
    if not inside or (labels < 0).any():
        raise ValueError(
            "target must have labels >= 0 and boxes inside the image of size "
            f"{image_size}"
        )
    yolo = coco_to_yolo(box_convert(boxes, "xyxy", "xywh"), image_size)
    lines = [
        f"{label} " + " ".join(f"{v:.6f}" for v in row)
        for label, row in zip(labels.tolist(), yolo.tolist(), strict=True)
    ]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# --- augmentation -------------------------------------------------------------------


def detection_transforms(
    train: bool,
    size: int | tuple[int, int] | None = None,
    *,
    zoom_out: float = 2.0,
    iou_crop: bool = True,
) -> v2.Compose:
    """Box-aware ``torchvision.transforms.v2`` transforms for :class:`CocoDataset`.

    Called as ``transforms(image, {"boxes": BoundingBoxes, "labels": ...})``, every
    step moves the boxes with the pixels. For training (``train=True``), the
    steps of SSD's augmentation:

    1. ``RandomHorizontalFlip()``: mirror half of the images.
    2. ``RandomZoomOut(side_range=(1, zoom_out))``: half of the time, paste the
       image into a black canvas up to ``zoom_out`` times larger (small objects);
       ``zoom_out=1`` skips it.
    3. ``RandomIoUCrop()``: a random crop that overlaps some box with at least an
       IoU drawn from ``(0, 0.1, 0.3, 0.5, 0.7, 0.9)``, or no crop; boxes are cut
       to the crop (``iou_crop=False`` skips it).

    Then for both: ``Resize(size)`` when ``size`` is given (an int sets the
    shorter side, ``(h, w)`` both), ``SanitizeBoundingBoxes()`` (removes boxes
    that became thinner than a pixel or left the image) and ``ToDtype(float32,
    scale=True)``.
    """
    steps: list[Callable[..., Any]] = [v2.ToImage()]
    if train:
        steps.append(v2.RandomHorizontalFlip())
        zoom = _checks.number(zoom_out, "zoom_out", low=1.0)
        if zoom > 1:
            steps.append(v2.RandomZoomOut(side_range=(1.0, zoom)))
        if iou_crop:
            steps.append(v2.RandomIoUCrop())
    if size is not None:
        steps.append(v2.Resize(size))
    steps += [v2.SanitizeBoundingBoxes(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)
