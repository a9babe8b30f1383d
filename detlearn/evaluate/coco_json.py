"""Inputs of the evaluator: per-image dicts -> flat arrays, and COCO JSON.

:func:`flatten` checks a data set and gathers it into one :class:`Flat` of
NumPy arrays, the form both :mod:`.curves` and :mod:`.coco` compute with;
:func:`to_coco` writes the same data as COCO JSON, so that pycocotools (or
any COCO tool) can referee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from detlearn.evaluate import _checks

__all__ = ["to_coco"]


@dataclass
class Flat:
    """All boxes of a data set in flat arrays; ``*_image`` is the list index.

    Boxes are float64 ``xywh``, the form pycocotools computes with, so areas
    and IoUs here are bit for bit those pycocotools computes from
    :func:`to_coco`'s output. Rows are in input order, so ``det_image`` and
    ``gt_image`` are sorted.
    """

    num_images: int
    det_image: np.ndarray  # int64 [N]
    det_label: np.ndarray  # int64 [N]
    det_box: np.ndarray  # float64 [N, 4] xywh
    det_score: np.ndarray  # float64 [N]
    gt_image: np.ndarray  # int64 [M]
    gt_label: np.ndarray  # int64 [M]
    gt_box: np.ndarray  # float64 [M, 4] xywh
    gt_area: np.ndarray  # float64 [M]: the target's 'area' if given, else w * h
    gt_crowd: np.ndarray  # bool [M]


def as_numpy(value) -> np.ndarray:
    """A NumPy array for a tensor (any device) or array-like."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _concat(values: list, dtype: type, width: int | None = None) -> np.ndarray:
    """Join per-image arrays or tensors into one NumPy array of ``dtype``.

    Tensors are joined with ``torch.cat`` first, so CUDA data crosses to the
    host once, not once per image.
    """
    shape = (-1,) if width is None else (-1, width)
    tensors = values and all(isinstance(v, torch.Tensor) for v in values)
    if tensors and len({v.device for v in values}) == 1:
        torch_dtype = torch.float64 if dtype is np.float64 else torch.int64
        joined = torch.cat(values).detach().to(torch_dtype).cpu().numpy()
        return joined.reshape(shape)
    arrays = [as_numpy(v).astype(dtype).reshape(shape) for v in values]
    return np.concatenate(arrays) if arrays else np.zeros((0,) + shape[1:], dtype)


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """float64 ``[N, 4]`` xyxy -> xywh, ``w = x2 - x1``."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _image_index(images: Sequence[dict]) -> np.ndarray:
    """int64 ``[N]``: the image of each row once the images' rows are joined."""
    counts = [len(image["labels"]) for image in images]
    return np.repeat(np.arange(len(images)), counts)


def _gt_extras(
    targets: Sequence[dict], gt_box: np.ndarray, gt_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(area float64 [M], iscrowd int64 [M])``, with the defaults filled in.

    A target's own ``'area'`` wins (COCO annotations carry the mask area
    there); elsewhere the box area ``w * h``, exactly as :func:`to_coco`
    writes it. ``'iscrowd'`` defaults to 0.
    """
    counts = np.bincount(gt_image, minlength=len(targets))
    box_area = gt_box[:, 2] * gt_box[:, 3]
    box_areas = np.split(box_area, np.cumsum(counts)[:-1]) if counts.size else []
    pairs = list(zip(targets, box_areas, strict=True))
    area = _concat([t.get("area", a) for t, a in pairs], np.float64)
    no_crowd = [np.zeros(len(a), np.int64) for a in box_areas]
    crowd = [t.get("iscrowd", z) for t, z in zip(targets, no_crowd, strict=True)]
    return area, _concat(crowd, np.int64)


def flatten(predictions: Sequence[dict], targets: Sequence[dict]) -> Flat:
    """Check a data set and gather it into a :class:`Flat`.

    Args:
        predictions: one dict per image, ``{'boxes': [N, 4] xyxy,
            'labels': int [N], 'scores': [N]}``.
        targets: one dict per image, ``{'boxes': [M, 4] xyxy, 'labels':
            int [M]}``, optionally ``'iscrowd'`` and ``'area'`` ``[M]``.

    Values may be tensors on any device or NumPy arrays.
    """
    _checks.detection_lists(predictions, targets)
    det_image, gt_image = _image_index(predictions), _image_index(targets)
    det_xyxy = _concat([p["boxes"] for p in predictions], np.float64, 4)
    gt_xyxy = _concat([t["boxes"] for t in targets], np.float64, 4)
    det_score = _concat([p["scores"] for p in predictions], np.float64)
    _checks.box_rows(det_xyxy, det_image, "predictions")
    _checks.box_rows(gt_xyxy, gt_image, "targets")
    _checks.finite_rows(det_score, det_image, "predictions", "scores")
    gt_box = _xyxy_to_xywh(gt_xyxy)
    gt_area, crowd = _gt_extras(targets, gt_box, gt_image)
    _checks.area_rows(gt_area, gt_image)
    _checks.crowd_rows(crowd, gt_image)
    return Flat(
        num_images=len(targets),
        det_image=det_image,
        det_label=_concat([p["labels"] for p in predictions], np.int64),
        det_box=_xyxy_to_xywh(det_xyxy),
        det_score=det_score,
        gt_image=gt_image,
        gt_label=_concat([t["labels"] for t in targets], np.int64),
        gt_box=gt_box,
        gt_area=gt_area,
        gt_crowd=crowd != 0,
    )


def to_coco(
    predictions: Sequence[dict],
    targets: Sequence[dict],
) -> tuple[dict, list[dict]]:
    """The same data in COCO JSON form, for pycocotools (or any COCO tool).

    Args:
        predictions, targets: as in :func:`flatten` (one dict per image).

    Returns:
        ``(gt, detections)``: ``gt`` is a COCO data set dict with
        ``'images'`` (ids ``1 .. len(targets)``: image ``i`` of the lists is
        id ``i + 1``), ``'annotations'`` (ids from 1, because pycocotools
        reads id 0 as "no match"; ``bbox`` ``[x, y, w, h]``; ``area`` the
        target's ``'area'`` or else ``w * h``; ``iscrowd`` 0/1) and
        ``'categories'`` (ids = the labels as they are, no offset; every
        label seen in targets or predictions). ``detections`` is a results
        list ``[{'image_id', 'category_id', 'bbox', 'score'}]`` in image
        order. Plain ints and floats only, so it survives ``json.dumps``.

    Load with ``coco = COCO(); coco.dataset = gt; coco.createIndex()`` and
    ``coco.loadRes(detections)`` (pycocotools cannot load an empty results
    list).
    """
    flat = flatten(predictions, targets)
    labels = np.union1d(flat.gt_label, flat.det_label).tolist()
    gt_rows = zip(
        flat.gt_image.tolist(),
        flat.gt_label.tolist(),
        flat.gt_box.tolist(),
        flat.gt_area.tolist(),
        flat.gt_crowd.tolist(),
        strict=True,
    )
    annotations = [
        {
            "id": n + 1,
            "image_id": image + 1,
            "category_id": label,
            "bbox": box,
            "area": area,
            "iscrowd": int(crowd),
        }
        for n, (image, label, box, area, crowd) in enumerate(gt_rows)
    ]
    gt = {
        "images": [{"id": i + 1} for i in range(len(targets))],
        "annotations": annotations,
        "categories": [{"id": label, "name": str(label)} for label in labels],
    }
    det_rows = zip(
        flat.det_image.tolist(),
        flat.det_label.tolist(),
        flat.det_box.tolist(),
        flat.det_score.tolist(),
        strict=True,
    )
    detections = [
        {"image_id": image + 1, "category_id": label, "bbox": box, "score": score}
        for image, label, box, score in det_rows
    ]
    return gt, detections
