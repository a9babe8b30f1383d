"""COCO-style evaluation of object detections, written from scratch in NumPy.

Chapter 8 builds this file up piece by piece:

1. :func:`match_detections` -- the greedy matching rule for one image and one
   class, as a plain loop: which detection found which object?
2. :func:`precision_recall_curves` -- sort all detections of a class by
   score and count true and false positives: a precision/recall curve.
3. :func:`average_precision` -- three ways to turn that curve into one
   number: VOC 11-point, VOC all-point and COCO 101-point.
4. :func:`coco_evaluate` -- the full COCO protocol (ten IoU thresholds, four
   area ranges, three ``maxDets``) and its twelve summary numbers, equal to
   ``pycocotools.cocoeval.COCOeval(...).stats`` to 1e-6.
5. :func:`to_coco` -- the same data as COCO JSON, so pycocotools can referee.

pycocotools is never imported here; the tests and ``benchmarks/bench_eval.py``
use it as the reference. The COCO rules, stated once (they are pycocotools'
``COCOeval`` for ``iouType='bbox'``):

* **Groups.** Images and categories are evaluated independently. Only the
  labels that occur in the ground truth count; a label that has no
  (non-crowd) ground truth gets AP = -1 and is left out of every mean.
* **maxDets.** Per image and category only the ``max_dets`` highest scoring
  detections take part (stable sort on the negated score, so equal scores
  keep their input order).
* **IoU.** ``IoU = intersection / union``; against a *crowd* box it is
  ``intersection / detection area``. Computed in float64 on ``xywh`` boxes
  exactly as ``pycocotools.mask.iou`` does.
* **Matching.** Detections in decreasing score order each take the
  still-unmatched ground truth box with the highest IoU, provided that IoU is
  ``>= min(t, 1 - 1e-10)``. Regular boxes are preferred to *ignored* ones
  (crowd, or area outside the range being evaluated): a detection matches an
  ignored box only when no regular box is available. Equal IoUs go to the
  later box. Crowd boxes can absorb any number of detections.
* **Ignored detections.** A detection matched to an ignored box, or an
  unmatched detection whose own area (``w * h``) lies outside the area range,
  counts neither as true nor as false positive.
* **Areas.** A ground truth box's area is its ``'area'`` entry when the
  target has one, else ``w * h``. The ranges are closed intervals: all
  ``[0, 1e10]``, small ``[0, 32**2]``, medium ``[32**2, 96**2]``, large
  ``[96**2, 1e10]``.
* **Precision.** Per category, area range, ``maxDets`` and IoU threshold, all
  images' detections are sorted by score (ties: image order, then rank within
  the image), precision is made monotone (the envelope, read from the right)
  and sampled at the 101 recall values ``0, 0.01, ..., 1`` (first point whose
  recall reaches the value; 0 if none does). AP is the mean of those samples;
  recall is the final recall.

Inputs everywhere are lists with one dict per image in torchvision's format:
predictions ``{'boxes': [N, 4] xyxy, 'labels': int [N], 'scores': [N]}``,
targets ``{'boxes': [M, 4] xyxy, 'labels': int [M]}`` plus optional
``'iscrowd'`` (0/1) ``[M]`` and ``'area'`` ``[M]``. Values may be torch tensors
on any device or NumPy arrays. Image ``i`` of the list is image id ``i + 1`` in
:func:`to_coco`'s output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from detlearn import _checks

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "PRCurve",
    "average_precision",
    "coco_evaluate",
    "match_detections",
    "precision_recall_curves",
    "to_coco",
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
_AP_METHODS = ("voc11", "all_points", "coco101")


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
    ious = _as_numpy(ious).astype(np.float64)
    num_dets, num_gt = ious.shape
    threshold = min(_checks.threshold(iou_threshold, "iou_threshold"), 1 - 1e-10)
    ignore, crowd = np.zeros(num_gt, bool), np.zeros(num_gt, bool)
    if gt_ignore is not None:
        _checks.flags(gt_ignore, "gt_ignore", num_gt)
        ignore = _as_numpy(gt_ignore).astype(bool)
    if gt_crowd is not None:
        _checks.flags(gt_crowd, "gt_crowd", num_gt)
        crowd = _as_numpy(gt_crowd).astype(bool)
    taken = np.zeros(num_gt, bool)
    matched = np.full(num_dets, -1, dtype=np.int64)
    for d in range(num_dets):
        free = ~taken & (ious[d] >= threshold)
        for pool in (free & ~ignore, free & ignore):  # regular boxes first
            if pool.any():
                g = _last_argmax(np.where(pool, ious[d], -np.inf))
                matched[d] = g
                taken[g] = not crowd[g]  # a crowd box stays free for others
                break
    return matched


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the *last* maximum along the last axis (argmax gives the first)."""
    n = values.shape[-1]
    return n - 1 - np.argmax(values[..., ::-1], axis=-1)


def _coco_iou(dt: np.ndarray, gt: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """IoU of float64 ``xywh`` boxes, broadcasting ``dt [..., 4]`` against ``gt [..., 4]``.

    The arithmetic of ``pycocotools.mask.iou`` step by step (so that results
    agree to the last bit): against a crowd box the union is the detection's
    own area. Boxes that do not overlap, zero-area ones included, have IoU 0.
    """
    dx, dy, dw, dh = np.moveaxis(dt, -1, 0)
    gx, gy, gw, gh = np.moveaxis(gt, -1, 0)
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    det_area = dw * dh
    union = np.where(gt_crowd, det_area, det_area + gw * gh - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _match_groups(
    ious: np.ndarray,
    num_dets: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    iou_thresholds: np.ndarray,
) -> np.ndarray:
    """:func:`match_detections` for many (image, class) groups, thresholds and
    area ranges at once.

    Args:
        ious: float64 ``[P, C, G]``: group p's c-th detection (decreasing score)
            against its g-th ground truth box; ``-inf`` pads missing boxes.
        num_dets: ``[P]`` detections per group, *non-increasing*, so the
            groups that still have a c-th detection are a prefix.
        gt_ignore: bool ``[P, A, G]`` ignore flags per area range.
        gt_crowd: bool ``[P, G]``.
        iou_thresholds: ``[T]``.

    Returns:
        int32 ``[P, C, T, A]`` matched box index, -1 for none.

    The loop runs over detection rank only: the c-th detections of all groups
    choose together, for every threshold and area range, which is the same
    as each group choosing one after another, since groups share nothing.
    """
    num_groups, depth, num_gt = ious.shape
    thresholds = np.minimum(iou_thresholds, 1 - 1e-10)[:, None, None]  # [T, 1, 1]
    num_areas = gt_ignore.shape[1]
    taken = np.zeros((num_groups, len(thresholds), num_areas, num_gt), bool)
    match = np.full((num_groups, depth, len(thresholds), num_areas), -1, dtype=np.int32)
    ignore = gt_ignore[:, None]  # [P, 1, A, G]
    for c in range(depth):
        n = int(np.count_nonzero(num_dets > c))
        iou = ious[:n, c, None, None, :]  # [n, 1, 1, G]
        free = (iou >= thresholds) & ~taken[:n]  # [n, T, A, G]
        regular = np.where(free & ~ignore[:n], iou, -np.inf)
        ignored = np.where(free & ignore[:n], iou, -np.inf)
        best = np.where(
            regular.max(-1) > -np.inf,
            _last_argmax(regular),
            np.where(ignored.max(-1) > -np.inf, _last_argmax(ignored), -1),
        )  # [n, T, A]
        match[:n, c] = best
        p, t, a = np.nonzero(best >= 0)
        g = best[p, t, a]
        consumed = ~gt_crowd[p, g]  # crowd boxes stay free
        taken[p[consumed], t[consumed], a[consumed], g[consumed]] = True
    return match


@dataclass
class _Outcomes:
    """Every kept detection's fate, per IoU threshold and area range.

    Kept detections are the top ``max_det`` per image and label, for labels
    that have ground truth; ``rank`` is the position within that top list.
    ``true_pos`` and ``false_pos`` are both False for ignored detections.
    """

    image: np.ndarray  # int64 [N]
    label_index: np.ndarray  # int64 [N], index into labels
    score: np.ndarray  # float64 [N]
    rank: np.ndarray  # int64 [N]
    true_pos: np.ndarray  # bool [N, T, A]
    false_pos: np.ndarray  # bool [N, T, A]
    labels: np.ndarray  # int64 [K], the labels with ground truth, sorted
    num_gt: np.ndarray  # int64 [K, A], non-ignored ground truth boxes


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """bool ``[N]``: True where a run of equal (sorted) keys begins."""
    return np.concatenate([[True], keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, bool)


def _rank_in_group(keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal sorted ``keys``."""
    starts = _group_starts(keys)
    first = np.flatnonzero(starts)
    return np.arange(len(keys)) - first[np.cumsum(starts) - 1]


def _outside(area: np.ndarray, area_ranges: np.ndarray) -> np.ndarray:
    """bool ``[N, A]``: area outside each closed range ``[lo, hi]``."""
    return (area[:, None] < area_ranges[:, 0]) | (area[:, None] > area_ranges[:, 1])


def _match_all(
    flat: _Flat, iou_thresholds: np.ndarray, area_ranges: np.ndarray, max_det: int
) -> _Outcomes:
    """Match every detection of the data set, for all thresholds and areas.

    Groups are (image, label) pairs; a group's key is ``image * K + label
    index``. Only detections that overlap a box of their own group by at
    least the lowest threshold ("candidates") enter the matching loop; all
    others are unmatched at every threshold.
    """
    labels = np.unique(flat.gt_label)
    area_ranges = np.asarray(area_ranges, dtype=np.float64).reshape(-1, 2)
    det, det_key, rank = _top_detections(flat, labels, max_det)
    det_box = flat.det_box[det]

    # Ground truth sorted by group; input order within a group.
    gt_label_index = np.searchsorted(labels, flat.gt_label)
    gt_key = flat.gt_image * len(labels) + gt_label_index
    gt_order = np.argsort(gt_key, kind="stable")
    gt_key, gt_box, gt_crowd = gt_key[gt_order], flat.gt_box[gt_order], flat.gt_crowd[gt_order]
    gt_ignore = gt_crowd[:, None] | _outside(flat.gt_area[gt_order], area_ranges)  # [M, A]
    num_gt = np.zeros((len(labels), len(area_ranges)), np.int64)
    np.add.at(num_gt, gt_label_index[gt_order], ~gt_ignore)

    # A detection's own group's boxes are gt rows first .. first + count - 1.
    first = np.searchsorted(gt_key, det_key, side="left")
    count = np.searchsorted(gt_key, det_key, side="right") - first
    best = _best_iou(det_box, first, count, gt_box, gt_crowd)
    cand = np.flatnonzero(best >= min(np.min(iou_thresholds), 1 - 1e-10))

    shape = (len(det), len(iou_thresholds), len(area_ranges))
    matched = np.zeros(shape, bool)
    matched_ignored = np.zeros(shape, bool)
    cells = len(iou_thresholds) * len(area_ranges)
    for rows, cols, cand_at, gt_at in _candidate_batches(
        det_key[cand], first[cand], count[cand], cells
    ):
        valid = gt_at >= 0  # [P, G]
        gt_at = np.where(valid, gt_at, 0)
        boxes = np.zeros(cand_at.shape + (4,))  # [P, C, 4]
        boxes[rows, cols] = det_box[cand[cand_at[rows, cols]]]
        crowd = gt_crowd[gt_at] & valid
        ious = _coco_iou(boxes[:, :, None, :], gt_box[gt_at][:, None, :, :], crowd[:, None, :])
        ious = np.where(valid[:, None, :], ious, -np.inf)  # [P, C, G]
        ignore = np.moveaxis(gt_ignore[gt_at], -1, 1)  # [P, A, G]
        num_dets = np.count_nonzero(cand_at >= 0, axis=1)
        match = _match_groups(ious, num_dets, ignore, crowd, iou_thresholds)[rows, cols]
        which = cand[cand_at[rows, cols]]
        matched[which] = match >= 0
        areas = np.arange(len(area_ranges))
        hit_ignored = ignore[rows[:, None, None], areas, np.maximum(match, 0)]
        matched_ignored[which] = (match >= 0) & hit_ignored

    det_outside = _outside(det_box[:, 2] * det_box[:, 3], area_ranges)[:, None, :]  # [N, 1, A]
    return _Outcomes(
        image=flat.det_image[det],
        label_index=det_key % max(len(labels), 1),
        score=flat.det_score[det],
        rank=rank,
        true_pos=matched & ~matched_ignored,
        false_pos=~matched & ~det_outside,
        labels=labels,
        num_gt=num_gt,
    )


def _top_detections(
    flat: _Flat, labels: np.ndarray, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``max_det`` best detections per (image, label), for labels in ``labels``.

    Returns ``(index, key, rank)``: indices into ``flat``'s detections,
    sorted by image, label, decreasing score; the group key ``image * K +
    label index``; the rank within the group. Detections of labels without
    ground truth are dropped: they cannot change any number.
    """
    det = np.flatnonzero(np.isin(flat.det_label, labels))
    key = flat.det_image[det] * len(labels) + np.searchsorted(labels, flat.det_label[det])
    # lexsort is stable: equal scores keep their input order, as with
    # pycocotools' mergesort
    order = np.lexsort((-flat.det_score[det], key))
    det, key = det[order], key[order]
    rank = _rank_in_group(key)
    top = rank < max_det
    return det[top], key[top], rank[top]


def _best_iou(
    det_box: np.ndarray,
    first: np.ndarray,
    count: np.ndarray,
    gt_box: np.ndarray,
    gt_crowd: np.ndarray,
) -> np.ndarray:
    """float64 ``[N]``: each detection's highest IoU with its group's boxes (-inf if none)."""
    has_gt = np.flatnonzero(count > 0)
    pair_det = np.repeat(has_gt, count[has_gt])
    seg_start = np.concatenate([[0], np.cumsum(count[has_gt])[:-1]])
    pair_gt = np.arange(len(pair_det)) - np.repeat(seg_start - first[has_gt], count[has_gt])
    best = np.full(len(det_box), -np.inf)
    if len(pair_det):
        iou = _coco_iou(det_box[pair_det], gt_box[pair_gt], gt_crowd[pair_gt])
        best[has_gt] = np.maximum.reduceat(iou, seg_start)
    return best


def _candidate_batches(
    key: np.ndarray, first: np.ndarray, count: np.ndarray, cells: int, budget: int = 2**22
):
    """Pack candidate detections into padded ``[P, C]`` batches of groups.

    ``key``, ``first``, ``count`` describe each candidate's group (sorted by
    group, then rank). Groups are bucketed by powers of two of their number
    of candidates and of boxes, so padding wastes at most half, and split so
    that one batch's ``P * C * G * cells`` (``cells`` = thresholds x areas)
    stays under ``budget`` elements. Yields ``(rows, cols, cand, gt)``:
    candidate ``i`` of the batch sits at ``cand[rows[i], cols[i]]``; ``cand``
    ``[P, C]`` and ``gt`` ``[P, G]`` hold candidate and ground truth indices,
    -1 where padded; groups come in order of decreasing candidate count.
    """
    starts = _group_starts(key)
    group_first = np.flatnonzero(starts)
    num_cand = np.diff(np.append(group_first, len(key)))
    num_gt = count[group_first]
    bucket = np.ceil(np.log2(num_cand)).astype(int) * 64 + np.ceil(np.log2(num_gt)).astype(int)
    for b in np.unique(bucket):
        members = np.flatnonzero(bucket == b)
        members = members[np.argsort(-num_cand[members], kind="stable")]
        depth, width = num_cand[members].max(), num_gt[members].max()
        step = max(1, budget // (depth * width * cells))
        for chunk in np.array_split(members, -(-len(members) // step)):
            c = np.arange(depth)
            cand = np.where(c < num_cand[chunk, None], group_first[chunk, None] + c, -1)
            g = np.arange(width)
            gt = np.where(g < num_gt[chunk, None], first[group_first[chunk], None] + g, -1)
            rows, cols = np.nonzero(cand >= 0)
            yield rows, cols, cand, gt


# --------------------------------------------------------------------------
# 2. Precision and recall: sort by score, count, interpolate
# --------------------------------------------------------------------------


def _interpolated_precision(
    true_pos: np.ndarray, false_pos: np.ndarray, num_gt: int, recall_thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """COCO's sampled precision for ``T`` curves at once.

    Args:
        true_pos, false_pos: bool ``[T, D]``, detections in decreasing score
            order (ignored ones may be left in as all-False columns).
        num_gt: number of non-ignored ground truth boxes, > 0.
        recall_thresholds: ``[R]``, increasing.

    Returns:
        ``(precision [T, R], recall [T])`` float64, exactly as pycocotools'
        ``accumulate`` computes them.
    """
    num_curves, num_dets = true_pos.shape
    if num_dets == 0:
        return np.zeros((num_curves, len(recall_thresholds))), np.zeros(num_curves)
    tp = np.cumsum(true_pos, axis=1)
    fp = np.cumsum(false_pos, axis=1)
    precision = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    # pycocotools samples the envelope at searchsorted(tp / num_gt, r, 'left'):
    # the first detection whose recall reaches r. Recall is a count over
    # num_gt, so that is the first detection whose count reaches
    # needed(r) = min{c : c / num_gt >= r} -- computed from the very same
    # floats c / num_gt, so the comparison is exact. Counts are integers,
    # so all T rows can share one searchsorted, each row shifted by an
    # integer offset (shifting floats instead would round them).
    needed = np.searchsorted(np.arange(num_gt + 1) / num_gt, recall_thresholds, side="left")
    offset = (num_gt + 1) * np.arange(num_curves)[:, None]
    flat_pos = np.searchsorted((tp + offset).ravel(), (needed + offset).ravel(), side="left")
    pos = flat_pos.reshape(num_curves, -1) - num_dets * np.arange(num_curves)[:, None]
    reached = pos < num_dets
    sampled = np.take_along_axis(envelope, np.minimum(pos, num_dets - 1), axis=1)
    return np.where(reached, sampled, 0.0), tp[:, -1] / num_gt


def _accumulate(
    out: _Outcomes, recall_thresholds: np.ndarray, max_dets: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' ``accumulate``: precision ``[T, R, K, A, M]`` and recall
    ``[T, K, A, M]``, -1 where a label has no non-ignored ground truth."""
    _, num_t, num_a = out.true_pos.shape
    num_k, num_r, num_m = len(out.labels), len(recall_thresholds), len(max_dets)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    # All images' detections of a label by decreasing score; equal scores in
    # image order, then rank order (pycocotools concatenates images, then
    # mergesorts).
    order = np.lexsort((out.rank, out.image, -out.score, out.label_index))
    bounds = np.searchsorted(out.label_index[order], np.arange(num_k + 1))
    for k in range(num_k):
        rows = order[bounds[k] : bounds[k + 1]]
        # [A, T, D] copies, so that each area's [T, D] block is contiguous
        tp_k = np.ascontiguousarray(out.true_pos[rows].transpose(2, 1, 0))
        fp_k = np.ascontiguousarray(out.false_pos[rows].transpose(2, 1, 0))
        rank_k = out.rank[rows]
        for a in range(num_a):
            if out.num_gt[k, a] == 0:
                continue
            counted = (tp_k[a] | fp_k[a]).any(axis=0)  # drop always-ignored detections
            for m, max_det in enumerate(max_dets):
                keep = counted & (rank_k < max_det)
                precision[:, :, k, a, m], recall[:, k, a, m] = _interpolated_precision(
                    tp_k[a][:, keep], fp_k[a][:, keep], out.num_gt[k, a], recall_thresholds
                )
    return precision, recall


def _summarize(
    values: np.ndarray, iou: float | None = None, area: str = "all", max_dets: int = 100
) -> float:
    """One summary number as ``COCOeval.summarize`` makes it: the mean over
    IoU thresholds (or the one named), recall thresholds and labels of the
    entries that are not -1; -1 when there are none.

    ``values`` is precision ``[T, R, K, A, M]`` or recall ``[T, K, A, M]``.
    """
    if iou is not None:
        values = values[np.flatnonzero(iou == IOU_THRESHOLDS)]
    values = values[..., list(AREA_RANGES).index(area), MAX_DETS.index(max_dets)]
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


# name: (precision or recall, IoU, area, maxDets), the order of COCOeval.stats
_SUMMARY = {
    "AP": ("precision", None, "all", 100),
    "AP50": ("precision", 0.5, "all", 100),
    "AP75": ("precision", 0.75, "all", 100),
    "APs": ("precision", None, "small", 100),
    "APm": ("precision", None, "medium", 100),
    "APl": ("precision", None, "large", 100),
    "AR1": ("recall", None, "all", 1),
    "AR10": ("recall", None, "all", 10),
    "AR100": ("recall", None, "all", 100),
    "ARs": ("recall", None, "small", 100),
    "ARm": ("recall", None, "medium", 100),
    "ARl": ("recall", None, "large", 100),
}


def _coco_arrays(predictions: Sequence[dict], targets: Sequence[dict]):
    """Match with every COCO setting, then accumulate: ``(matches, precision, recall)``.

    ``precision`` is ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]``, laid out as
    pycocotools' ``COCOeval.eval`` arrays over the labels ``matches.labels``.
    """
    matches = _match_all(
        _flatten(predictions, targets),
        IOU_THRESHOLDS,
        np.array(list(AREA_RANGES.values())),
        max(MAX_DETS),
    )
    precision, recall = _accumulate(matches, RECALL_THRESHOLDS, MAX_DETS)
    return matches, precision, recall


def coco_evaluate(predictions: Sequence[dict], targets: Sequence[dict]) -> dict:
    """The COCO detection metrics, equal to pycocotools' ``COCOeval(...).stats``.

    Args:
        predictions: one dict per image, ``{'boxes': [N, 4] xyxy,
            'labels': int [N], 'scores': [N]}`` (tensors on any device, or
            NumPy arrays).
        targets: one dict per image, ``{'boxes': [M, 4] xyxy, 'labels': int
            [M]}``, optionally ``'iscrowd'`` (0/1) ``[M]`` and ``'area'``
            ``[M]`` (which then decides the box's area range).

    Returns:
        ``{'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10',
        'AR100', 'ARs', 'ARm', 'ARl'}`` as floats (``-1.0`` where COCO has
        nothing to average, e.g. no small objects), plus ``'per_class'``:
        ``{label: AP@[.5:.95]}`` for every label with at least one non-crowd
        ground truth box -- the labels whose pycocotools precision entries
        are not -1 (area "all", maxDets 100).

    The rules are in this module's docstring. Labels are category ids as
    they are; labels that appear only in predictions cannot change any
    number (COCO evaluates the ground truth's categories).
    """
    out, precision, recall = _coco_arrays(predictions, targets)
    arrays = {"precision": precision, "recall": recall}
    results: dict = {
        name: _summarize(arrays[kind], iou, area, max_dets)
        for name, (kind, iou, area, max_dets) in _SUMMARY.items()
    }
    results["per_class"] = {
        int(label): _summarize(precision[:, :, k : k + 1])
        for k, label in enumerate(out.labels)
        if out.num_gt[k, 0] > 0
    }
    return results


class PRCurve(NamedTuple):
    """One class's precision/recall curve: float64 arrays ``[D]``, one point
    per counted detection in decreasing score order (``scores``): recall and
    precision after counting that detection."""

    recall: np.ndarray
    precision: np.ndarray
    scores: np.ndarray


def precision_recall_curves(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    iou_threshold: float = 0.5,
    area: str = "all",
    max_dets: int = 100,
) -> dict[int, PRCurve]:
    """Per-class precision/recall curves under the COCO matching rules.

    Args:
        predictions, targets: as in :func:`coco_evaluate`.
        iou_threshold: IoU a detection needs to match.
        area: ``'all'``, ``'small'``, ``'medium'`` or ``'large'``.
        max_dets: detections per image and class that take part.

    Returns:
        ``{label: PRCurve(recall, precision, scores)}`` for each label with
        non-ignored ground truth in that area range. Ignored detections
        (see the module docstring) are left out. ``recall = TP / num_gt``,
        ``precision = TP / (TP + FP)``, counted down the list; a class that
        was never predicted has empty arrays. ``average_precision(recall,
        precision, 'coco101')`` gives COCO's AP of that class at this
        threshold.
    """
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    _checks.choice(area, "area", list(AREA_RANGES))
    max_dets = _checks.positive_int(max_dets, "max_dets")
    out = _match_all(
        _flatten(predictions, targets),
        np.array([iou_threshold]),
        np.array([AREA_RANGES[area]]),
        max_dets,
    )
    order = np.lexsort((out.rank, out.image, -out.score, out.label_index))
    curves = {}
    for k, label in enumerate(out.labels):
        if out.num_gt[k, 0] == 0:
            continue
        rows = order[out.label_index[order] == k]
        tp, fp = out.true_pos[rows, 0, 0], out.false_pos[rows, 0, 0]
        counted = tp | fp
        tp_sum, fp_sum = np.cumsum(tp[counted]), np.cumsum(fp[counted])
        curves[int(label)] = PRCurve(
            recall=tp_sum / out.num_gt[k, 0],
            precision=tp_sum / (tp_sum + fp_sum),  # every counted point adds 1
            scores=out.score[rows][counted],
        )
    return curves


# --------------------------------------------------------------------------
# 3. Average precision: one number from a curve
# --------------------------------------------------------------------------


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
    _checks.choice(method, "method", _AP_METHODS)
    _checks.pr_curve(recall, precision)
    recall = _as_numpy(recall).astype(np.float64)
    precision = _as_numpy(precision).astype(np.float64)
    if recall.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if method == "voc11":
        # max(precision[recall >= r]) is the envelope at the first such point
        thresholds = np.linspace(0.0, 1.0, 11)
    elif method == "coco101":
        thresholds = RECALL_THRESHOLDS
    else:  # all_points: each recall step times the envelope where it ends
        steps = np.diff(recall, prepend=0.0)
        return float(np.sum(steps * envelope))
    pos = np.searchsorted(recall, thresholds, side="left")
    sampled = np.where(pos < len(recall), envelope[np.minimum(pos, len(recall) - 1)], 0.0)
    return float(np.mean(sampled))


# --------------------------------------------------------------------------
# 4. Inputs: per-image dicts -> flat arrays, and COCO JSON for pycocotools
# --------------------------------------------------------------------------


@dataclass
class _Flat:
    """All boxes of a data set in flat arrays; ``*_image`` is the list index.

    Boxes are float64 ``xywh``, the form pycocotools computes with, so areas
    and IoUs here are bit for bit those pycocotools computes from
    :func:`to_coco`'s output.
    """

    det_image: np.ndarray  # int64 [N]
    det_label: np.ndarray  # int64 [N]
    det_box: np.ndarray  # float64 [N, 4] xywh
    det_score: np.ndarray  # float64 [N]
    gt_image: np.ndarray  # int64 [M]
    gt_label: np.ndarray  # int64 [M]
    gt_box: np.ndarray  # float64 [M, 4] xywh
    gt_area: np.ndarray  # float64 [M]: the target's 'area' if given, else w * h
    gt_crowd: np.ndarray  # bool [M]


def _as_numpy(value) -> np.ndarray:
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
        return torch.cat(values).detach().to(torch_dtype).cpu().numpy().reshape(shape)
    arrays = [_as_numpy(v).astype(dtype).reshape(shape) for v in values]
    return np.concatenate(arrays) if arrays else np.zeros((0,) + shape[1:], dtype)


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """float64 ``[N, 4]`` xyxy -> xywh, ``w = x2 - x1``."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _flatten(predictions: Sequence[dict], targets: Sequence[dict]) -> _Flat:
    """Check the inputs and gather them into a :class:`_Flat`."""
    _checks.detection_lists(predictions, targets)
    det_image = np.repeat(np.arange(len(predictions)), [len(p["labels"]) for p in predictions])
    gt_image = np.repeat(np.arange(len(targets)), [len(t["labels"]) for t in targets])
    det_xyxy = _concat([p["boxes"] for p in predictions], np.float64, 4)
    gt_xyxy = _concat([t["boxes"] for t in targets], np.float64, 4)
    det_score = _concat([p["scores"] for p in predictions], np.float64)
    _checks.box_rows(det_xyxy, det_image, "predictions")
    _checks.box_rows(gt_xyxy, gt_image, "targets")
    _checks.finite_rows(det_score, det_image, "predictions", "scores")
    gt_box = _xyxy_to_xywh(gt_xyxy)
    # A target's own 'area' wins (COCO annotations carry the mask area
    # there); elsewhere the box area, exactly as to_coco writes it.
    counts = np.bincount(gt_image, minlength=len(targets))
    box_areas = np.split(gt_box[:, 2] * gt_box[:, 3], np.cumsum(counts)[:-1]) if counts.size else []
    gt_area = _concat(
        [t.get("area", a) for t, a in zip(targets, box_areas, strict=True)], np.float64
    )
    _checks.area_rows(gt_area, gt_image)
    crowd = _concat(
        [
            t.get("iscrowd", np.zeros(len(a), np.int64))
            for t, a in zip(targets, box_areas, strict=True)
        ],
        np.int64,
    )
    _checks.crowd_rows(crowd, gt_image)
    return _Flat(
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


def to_coco(predictions: Sequence[dict], targets: Sequence[dict]) -> tuple[dict, list[dict]]:
    """The same data in COCO JSON form, for pycocotools (or any COCO tool).

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
    flat = _flatten(predictions, targets)
    labels = np.union1d(flat.gt_label, flat.det_label).tolist()
    gt = {
        "images": [{"id": i + 1} for i in range(len(targets))],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image + 1,
                "category_id": label,
                "bbox": box,
                "area": area,
                "iscrowd": int(crowd),
            }
            for n, (image, label, box, area, crowd) in enumerate(
                zip(
                    flat.gt_image.tolist(),
                    flat.gt_label.tolist(),
                    flat.gt_box.tolist(),
                    flat.gt_area.tolist(),
                    flat.gt_crowd.tolist(),
                    strict=True,
                )
            )
        ],
        "categories": [{"id": label, "name": str(label)} for label in labels],
    }
    detections = [
        {"image_id": image + 1, "category_id": label, "bbox": box, "score": score}
        for image, label, box, score in zip(
            flat.det_image.tolist(),
            flat.det_label.tolist(),
            flat.det_box.tolist(),
            flat.det_score.tolist(),
            strict=True,
        )
    ]
    return gt, detections
