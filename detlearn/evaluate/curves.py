"""Which detection found which object, precision/recall curves, and AP.

The readable half of the evaluator, the code chapter 9 shows:
:func:`match_detections` is the matching rule for one image and one class as
a plain loop; :func:`precision_recall_curves` matches image by image with
it, pools the outcomes of all images, sorts them by score and counts; and
:func:`average_precision` turns a curve into one number, in three flavours.
The rules are COCO's, stated in :mod:`detlearn.evaluate`; :mod:`.coco`
applies the same rules to whole data sets at once, and tests hold the two
equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from detlearn.evaluate import _checks
from detlearn.evaluate.coco_json import Flat, as_numpy, flatten

__all__ = [
    "AP_METHODS",
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "ImageOfClass",
    "PRCurve",
    "average_precision",
    "images_of_class",
    "match_detections",
    "precision_envelope",
    "precision_recall_curves",
]

# The COCO parameters, spelled as pycocotools spells them (np.linspace, not
# np.arange, whose steps drift: pycocotools' own comment warns about it).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0**2, 1e5**2),
    "small": (0.0**2, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
AP_METHODS = ("voc11", "all_points", "coco101")


# --------------------------------------------------------------------------
# 1. Matching: which detection found which object?
# --------------------------------------------------------------------------


def match_detections(
    ious: np.ndarray | torch.Tensor,
    iou_threshold: float = 0.5,
    gt_ignore: np.ndarray | torch.Tensor | None = None,
    gt_crowd: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Greedy COCO matching of one image's detections of one class.

    Args:
        ious: ``[D, G]`` IoU of each detection (rows in *decreasing score
            order*) with each ground truth box.
        iou_threshold: a match needs ``IoU >= min(iou_threshold, 1 - 1e-10)``.
        gt_ignore: bool ``[G]``, boxes that count neither as hits nor as
            misses (crowd, or outside the area range). Default: none.
        gt_crowd: bool ``[G]``, crowd boxes, which any number of detections
            may match. Default: none. A crowd box should also be ignored.

    Returns:
        int64 ``[D]``: the matched ground truth index of each detection, -1
        for none.

    The rule is pycocotools': the best-scoring detection chooses first and
    takes the free box it overlaps most; a regular box beats an ignored one
    whatever the IoUs, and of equal IoUs the later box wins (pycocotools
    replaces its running best on ``>=``).
    """
    _checks.iou_matrix(ious, "ious")
    ious = as_numpy(ious).astype(np.float64)
    num_dets, num_gt = ious.shape
    threshold = min(_checks.threshold(iou_threshold, "iou_threshold"), 1 - 1e-10)
    ignore, crowd = np.zeros(num_gt, bool), np.zeros(num_gt, bool)
    if gt_ignore is not None:
        _checks.flags(gt_ignore, "gt_ignore", num_gt)
        ignore = as_numpy(gt_ignore).astype(bool)
    if gt_crowd is not None:
        _checks.flags(gt_crowd, "gt_crowd", num_gt)
        crowd = as_numpy(gt_crowd).astype(bool)
    taken = np.zeros(num_gt, bool)
    matched = np.full(num_dets, -1, dtype=np.int64)
    for d in range(num_dets):
        free = ~taken & (ious[d] >= threshold)
        for pool in (free & ~ignore, free & ignore):  # regular boxes first
            if pool.any():
                g = last_argmax(np.where(pool, ious[d], -np.inf))
                matched[d] = g
                taken[g] = not crowd[g]  # a crowd box stays free for others
                break
    return matched


def last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the *last* maximum along the last axis (argmax gives the first)."""
    n = values.shape[-1]
    return n - 1 - np.argmax(values[..., ::-1], axis=-1)


def coco_iou(dt: np.ndarray, gt: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """IoU of float64 ``xywh`` boxes, broadcasting ``dt [..., 4]`` with ``gt [..., 4]``.

    The arithmetic of ``pycocotools.mask.iou`` step by step (so that results
    agree to the last bit): against a crowd box (``gt_crowd``, bool,
    broadcast like ``gt [..., 0]``) the union is the detection's own area.
    Boxes that do not overlap, zero-area ones included, have IoU 0.
    """
    dx, dy, dw, dh = dt[..., 0], dt[..., 1], dt[..., 2], dt[..., 3]
    gx, gy, gw, gh = gt[..., 0], gt[..., 1], gt[..., 2], gt[..., 3]
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    det_area = dw * dh
    union = np.where(gt_crowd, det_area, det_area + gw * gh - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


# --------------------------------------------------------------------------
# 2. Precision and recall: sort by score and count
# --------------------------------------------------------------------------


class PRCurve(NamedTuple):
    """One class's precision/recall curve: float64 arrays ``[D]``, one point
    per counted detection in decreasing score order (``scores``): recall and
    precision after counting that detection."""

    recall: np.ndarray
    precision: np.ndarray
    scores: np.ndarray


class ImageOfClass(NamedTuple):
    """One image's detections and ground truth of one class (float64 ``xywh``)."""

    det_box: np.ndarray  # [D, 4], the max_dets best, by decreasing score
    det_score: np.ndarray  # [D]
    gt_box: np.ndarray  # [G, 4]
    gt_area: np.ndarray  # [G], which decides the box's area range
    gt_crowd: np.ndarray  # bool [G]


def images_of_class(flat: Flat, label: int, max_dets: int) -> Iterator[ImageOfClass]:
    """Each image's :class:`ImageOfClass` for ``label``, in image order.

    Detections are sorted by decreasing score, equal scores in input order
    (pycocotools' stable sort), and cut to the ``max_dets`` best. Images
    with neither detections nor boxes of ``label`` are skipped: they add
    nothing to a curve.
    """
    det_rows = np.flatnonzero(flat.det_label == label)  # still in image order
    gt_rows = np.flatnonzero(flat.gt_label == label)
    images = np.arange(flat.num_images + 1)
    det_at = np.searchsorted(flat.det_image[det_rows], images)
    gt_at = np.searchsorted(flat.gt_image[gt_rows], images)
    for i in range(flat.num_images):
        det = det_rows[det_at[i] : det_at[i + 1]]
        gt = gt_rows[gt_at[i] : gt_at[i + 1]]
        if len(det) == 0 and len(gt) == 0:
            continue
        det = det[np.argsort(-flat.det_score[det], kind="stable")][:max_dets]
        yield ImageOfClass(
            flat.det_box[det],
            flat.det_score[det],
            flat.gt_box[gt],
            flat.gt_area[gt],
            flat.gt_crowd[gt],
        )


def outside(area: np.ndarray, area_range: np.ndarray) -> np.ndarray:
    """bool: ``area [...]`` outside each closed range ``[lo, hi]`` of
    ``area_range [..., 2]`` (broadcast: ``[N, 1]`` with ``[A, 2]`` gives ``[N, A]``)."""
    return (area < area_range[..., 0]) | (area > area_range[..., 1])


def precision_recall_curves(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    iou_threshold: float = 0.5,
    area: str = "all",
    max_dets: int = 100,
) -> dict[int, PRCurve]:
    """Per-class precision/recall curves under the COCO matching rules.

    Args:
        predictions, targets: one dict per image, as in
            :func:`~detlearn.evaluate.coco_evaluate`.
        iou_threshold: IoU a detection needs to match.
        area: ``'all'``, ``'small'``, ``'medium'`` or ``'large'``.
        max_dets: detections per image and class that take part.

    Returns:
        ``{label: PRCurve(recall, precision, scores)}`` for each label with
        non-ignored ground truth in that area range. Ignored detections
        (see :mod:`detlearn.evaluate`) are left out. ``recall = TP /
        num_gt``, ``precision = TP / (TP + FP)``, counted down the list; a
        class that was never predicted has empty arrays.
        ``average_precision(recall, precision, 'coco101')`` gives COCO's AP
        of that class at this threshold.
    """
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    _checks.choice(area, "area", list(AREA_RANGES))
    max_dets = _checks.positive_int(max_dets, "max_dets")
    flat = flatten(predictions, targets)  # checked; float64 xywh boxes
    area_range = np.array(AREA_RANGES[area])  # [lo, hi]
    curves = {}
    for label in np.unique(flat.gt_label).tolist():
        scores, hits, num_gt = [], [], 0
        for image in images_of_class(flat, label, max_dets):
            ignore = image.gt_crowd | outside(image.gt_area, area_range)
            ious = coco_iou(image.det_box[:, None], image.gt_box, image.gt_crowd)
            matched = match_detections(ious, iou_threshold, ignore, image.gt_crowd)
            hit = matched >= 0
            # Left out: a miss outside the area range, or a hit on an ignored box.
            det_area = image.det_box[:, 2] * image.det_box[:, 3]
            left_out = ~hit & outside(det_area, area_range)
            left_out[hit] = ignore[matched[hit]]
            scores.append(image.det_score[~left_out])
            hits.append(hit[~left_out])
            num_gt += int(np.count_nonzero(~ignore))
        if num_gt == 0:  # nothing to find in this area range: no curve
            continue
        score, hit = np.concatenate(scores), np.concatenate(hits)
        order = np.argsort(-score, kind="stable")  # ties: image order, then rank
        true_pos, false_pos = np.cumsum(hit[order]), np.cumsum(~hit[order])
        curves[label] = PRCurve(
            recall=true_pos / num_gt,
            precision=true_pos / (true_pos + false_pos),
            scores=score[order],
        )
    return curves


# --------------------------------------------------------------------------
# 3. Average precision: one number from a curve
# --------------------------------------------------------------------------


def precision_envelope(precision: np.ndarray) -> np.ndarray:
    """Precision made non-increasing: along the last axis of ``precision
    [..., D]`` (points in decreasing score order), each point becomes the
    best precision at that point or after it, a running maximum read from
    the right. Same shape and dtype."""
    return np.maximum.accumulate(precision[..., ::-1], axis=-1)[..., ::-1]


def average_precision(
    recall: np.ndarray | torch.Tensor,
    precision: np.ndarray | torch.Tensor,
    method: str = "coco101",
) -> float:
    """Area under a precision/recall curve, in one of three classic flavours.

    Args:
        recall: ``[D]`` non-decreasing recall after each detection.
        precision: ``[D]`` precision after each detection.
        method:
            ``'voc11'`` (PASCAL VOC 2007): mean over r = 0, 0.1, ..., 1 of the
            highest precision at recall >= r (0 if recall never gets there);
            ``'all_points'`` (VOC 2010 on): exact area under the monotone
            envelope (precision made non-increasing from the right), i.e.
            the sum of recall steps times the envelope after each step;
            ``'coco101'`` (COCO): mean over r = 0, 0.01, ..., 1 of the
            envelope at the first point whose recall is >= r (0 if none).

    Returns:
        AP as a float in [0, 1]; 0 for an empty curve.
    """
    _checks.choice(method, "method", AP_METHODS)
    _checks.pr_curve(recall, precision)
    recall = as_numpy(recall).astype(np.float64)
    precision = as_numpy(precision).astype(np.float64)
    if recall.size == 0:
        return 0.0
    envelope = precision_envelope(precision)
    if method == "voc11":
        # max(precision[recall >= r]) is the envelope at the first such point
        thresholds = np.linspace(0.0, 1.0, 11)
    elif method == "coco101":
        thresholds = RECALL_THRESHOLDS
    else:  # all_points: each recall step times the envelope where it ends
        steps = np.diff(recall, prepend=0.0)
        return float(np.sum(steps * envelope))
    pos = np.searchsorted(recall, thresholds, side="left")
    last = len(recall) - 1
    sampled = np.where(pos <= last, envelope[np.minimum(pos, last)], 0.0)
    return float(np.mean(sampled))
