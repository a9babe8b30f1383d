"""The COCO protocol on a whole data set at once: :func:`coco_evaluate`.

The fast half of the evaluator. It applies the rules of
:mod:`detlearn.evaluate` (the ones :mod:`.curves` spells out as loops) to
every image, class, IoU threshold, area range and ``maxDets`` in a few
vectorised NumPy passes:

1. :func:`_group` sorts detections and ground truth into (image, label)
   groups and keeps each group's ``max(MAX_DETS)`` best detections;
2. :func:`_candidates` finds the detections that overlap a box of their own
   group at all: the others are unmatched at every threshold;
3. :func:`_match_candidates` runs :func:`~.curves.match_detections`' rule
   for all candidates, thresholds and area ranges together;
4. :func:`_accumulate` sorts and counts per label, as pycocotools'
   ``accumulate`` does, and :func:`_summarize` makes the twelve numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from detlearn.evaluate.coco_json import Flat, flatten
from detlearn.evaluate.curves import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    coco_iou,
    last_argmax,
    outside,
    precision_envelope,
)

__all__ = ["SUMMARY_KEYS", "coco_evaluate"]


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

    The rules are in :mod:`detlearn.evaluate`. Labels are category ids as
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


def _coco_arrays(predictions: Sequence[dict], targets: Sequence[dict]):
    """Match with every COCO setting, then accumulate.

    Returns ``(outcomes, precision, recall)``: an :class:`_Outcomes`,
    precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]``, laid out as
    pycocotools' ``COCOeval.eval`` arrays over the labels ``outcomes.labels``.
    """
    outcomes = _match_all(
        flatten(predictions, targets),
        IOU_THRESHOLDS,
        np.array(list(AREA_RANGES.values())),
        max(MAX_DETS),
    )
    precision, recall = _accumulate(outcomes, RECALL_THRESHOLDS, MAX_DETS)
    return outcomes, precision, recall


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
# The twelve summary numbers of coco_evaluate, in the order of COCOeval.stats.
SUMMARY_KEYS: tuple[str, ...] = tuple(_SUMMARY)


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


# --------------------------------------------------------------------------
# Matching every detection of the data set
# --------------------------------------------------------------------------


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


def _match_all(
    flat: Flat, iou_thresholds: np.ndarray, area_ranges: np.ndarray, max_det: int
) -> _Outcomes:
    """Match every detection of the data set, for all thresholds and areas.

    Args:
        flat: the data set, from :func:`~.coco_json.flatten`.
        iou_thresholds: ``[T]``.
        area_ranges: ``[A, 2]`` closed ranges ``[lo, hi]``.
        max_det: detections per image and label that take part.
    """
    area_ranges = np.asarray(area_ranges, dtype=np.float64).reshape(-1, 2)
    groups = _group(flat, area_ranges, max_det)
    cand = _candidates(groups, np.min(iou_thresholds))
    matched, matched_ignored = _match_candidates(groups, cand, iou_thresholds)
    det_area = groups.det_box[:, 2] * groups.det_box[:, 3]
    det_outside = outside(det_area[:, None], area_ranges)[:, None, :]  # [N, 1, A]
    return _Outcomes(
        image=flat.det_image[groups.det],
        label_index=groups.det_key % max(len(groups.labels), 1),
        score=flat.det_score[groups.det],
        rank=groups.rank,
        true_pos=matched & ~matched_ignored,
        false_pos=~matched & ~det_outside,
        labels=groups.labels,
        num_gt=groups.num_gt,
    )


@dataclass
class _Groups:
    """Detections and ground truth sorted into (image, label) groups.

    A group's key is ``image * K + label index`` over the ``K`` labels that
    have ground truth; both sides are sorted by key, detections then by
    decreasing score, boxes in input order.
    """

    labels: np.ndarray  # int64 [K], sorted
    det: np.ndarray  # int64 [N], index into the Flat's detections
    det_key: np.ndarray  # int64 [N]
    rank: np.ndarray  # int64 [N], position within the group
    det_box: np.ndarray  # float64 [N, 4] xywh
    first: np.ndarray  # int64 [N], the detection's group's first box row
    count: np.ndarray  # int64 [N], the number of boxes in its group
    gt_box: np.ndarray  # float64 [M, 4] xywh
    gt_crowd: np.ndarray  # bool [M]
    gt_ignore: np.ndarray  # bool [M, A]: crowd, or area outside range a
    num_gt: np.ndarray  # int64 [K, A], non-ignored boxes per label and range


def _group(flat: Flat, area_ranges: np.ndarray, max_det: int) -> _Groups:
    """Step 1: sort both sides into groups; keep ``max_det`` detections each.

    A detection's own group's boxes are the box rows ``first .. first +
    count - 1``, found by binary search on the sorted box keys.
    """
    labels = np.unique(flat.gt_label)
    det, det_key, rank = _top_detections(flat, labels, max_det)
    gt_label_index = np.searchsorted(labels, flat.gt_label)
    gt_key = flat.gt_image * len(labels) + gt_label_index
    gt_order = np.argsort(gt_key, kind="stable")  # input order within a group
    gt_key, gt_crowd = gt_key[gt_order], flat.gt_crowd[gt_order]
    gt_area = flat.gt_area[gt_order]
    gt_ignore = gt_crowd[:, None] | outside(gt_area[:, None], area_ranges)  # [M, A]
    num_gt = np.zeros((len(labels), len(area_ranges)), np.int64)
    np.add.at(num_gt, gt_label_index[gt_order], ~gt_ignore)
    first = np.searchsorted(gt_key, det_key, side="left")
    count = np.searchsorted(gt_key, det_key, side="right") - first
    return _Groups(
        labels=labels,
        det=det,
        det_key=det_key,
        rank=rank,
        det_box=flat.det_box[det],
        first=first,
        count=count,
        gt_box=flat.gt_box[gt_order],
        gt_crowd=gt_crowd,
        gt_ignore=gt_ignore,
        num_gt=num_gt,
    )


def _top_detections(
    flat: Flat, labels: np.ndarray, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``max_det`` best detections per (image, label), for labels in ``labels``.

    Returns ``(index, key, rank)``: indices into ``flat``'s detections,
    sorted by image, label, decreasing score; the group key ``image * K +
    label index``; the rank within the group. Detections of labels without
    ground truth are dropped: they cannot change any number.
    """
    det = np.flatnonzero(np.isin(flat.det_label, labels))
    label_index = np.searchsorted(labels, flat.det_label[det])
    key = flat.det_image[det] * len(labels) + label_index
    # lexsort is stable: equal scores keep their input order, as with
    # pycocotools' mergesort
    order = np.lexsort((-flat.det_score[det], key))
    det, key = det[order], key[order]
    rank = _rank_in_group(key)
    top = rank < max_det
    return det[top], key[top], rank[top]


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """bool ``[N]``: True where a run of equal (sorted) keys begins."""
    if len(keys) == 0:
        return np.zeros(0, bool)
    return np.concatenate([[True], keys[1:] != keys[:-1]])


def _rank_in_group(keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal sorted ``keys``."""
    starts = _group_starts(keys)
    first = np.flatnonzero(starts)
    return np.arange(len(keys)) - first[np.cumsum(starts) - 1]


def _candidates(groups: _Groups, min_threshold: float) -> np.ndarray:
    """Step 2: int64 ``[C]``, the detections whose best IoU with a box of
    their own group reaches ``min_threshold`` (in group order). Only these
    can match; most false positives overlap nothing and drop out here."""
    best = _best_iou(
        groups.det_box,
        groups.first,
        groups.count,
        groups.gt_box,
        groups.gt_crowd,
    )
    return np.flatnonzero(best >= min(min_threshold, 1 - 1e-10))


def _best_iou(
    det_box: np.ndarray,
    first: np.ndarray,
    count: np.ndarray,
    gt_box: np.ndarray,
    gt_crowd: np.ndarray,
) -> np.ndarray:
    """float64 ``[N]``: each detection's highest IoU with its group's boxes
    (box rows ``first .. first + count - 1``), -inf if there are none.

    All (detection, box) pairs are laid out in one flat list, segment by
    segment, so one :func:`~.curves.coco_iou` call and one ``reduceat``
    do the work.
    """
    has_gt = np.flatnonzero(count > 0)
    pair_det = np.repeat(has_gt, count[has_gt])
    seg_start = np.concatenate([[0], np.cumsum(count[has_gt])[:-1]])
    offset = np.repeat(seg_start - first[has_gt], count[has_gt])
    pair_gt = np.arange(len(pair_det)) - offset
    best = np.full(len(det_box), -np.inf)
    if len(pair_det):
        iou = coco_iou(det_box[pair_det], gt_box[pair_gt], gt_crowd[pair_gt])
        best[has_gt] = np.maximum.reduceat(iou, seg_start)
    return best


def _match_candidates(
    groups: _Groups, cand: np.ndarray, iou_thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: match the candidates ``cand`` at every threshold and area range.

    Returns ``(matched, matched_ignored)``, bool ``[N, T, A]`` over all of
    ``groups``' detections: matched to some box, and matched to an ignored
    one. Candidates go through :func:`_match_groups` in padded batches.
    """
    num_areas = groups.gt_ignore.shape[1]
    shape = (len(groups.det), len(iou_thresholds), num_areas)
    matched = np.zeros(shape, bool)
    matched_ignored = np.zeros(shape, bool)
    areas = np.arange(num_areas)
    batches = _candidate_batches(
        groups.det_key[cand],
        groups.first[cand],
        groups.count[cand],
        len(iou_thresholds) * num_areas,
    )
    for rows, cols, cand_at, gt_at in batches:
        valid = gt_at >= 0  # [P, G]
        gt_at = np.where(valid, gt_at, 0)
        boxes = np.zeros(cand_at.shape + (4,))  # [P, C, 4]
        boxes[rows, cols] = groups.det_box[cand[cand_at[rows, cols]]]
        crowd = groups.gt_crowd[gt_at] & valid
        gt_boxes = groups.gt_box[gt_at][:, None, :, :]  # [P, 1, G, 4]
        ious = coco_iou(boxes[:, :, None, :], gt_boxes, crowd[:, None, :])
        ious = np.where(valid[:, None, :], ious, -np.inf)  # [P, C, G]
        ignore = np.moveaxis(groups.gt_ignore[gt_at], -1, 1)  # [P, A, G]
        num_dets = np.count_nonzero(cand_at >= 0, axis=1)
        match = _match_groups(ious, num_dets, ignore, crowd, iou_thresholds)
        match = match[rows, cols]  # [n, T, A], candidate by candidate
        which = cand[cand_at[rows, cols]]
        matched[which] = match >= 0
        hit_ignored = ignore[rows[:, None, None], areas, np.maximum(match, 0)]
        matched_ignored[which] = (match >= 0) & hit_ignored
    return matched, matched_ignored


def _candidate_batches(
    key: np.ndarray,
    first: np.ndarray,
    count: np.ndarray,
    cells: int,
    budget: int = 2**22,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
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
    log_cand = np.ceil(np.log2(num_cand)).astype(int)
    bucket = log_cand * 64 + np.ceil(np.log2(num_gt)).astype(int)
    for b in np.unique(bucket):
        members = np.flatnonzero(bucket == b)
        members = members[np.argsort(-num_cand[members], kind="stable")]
        depth, width = num_cand[members].max(), num_gt[members].max()
        step = max(1, budget // (depth * width * cells))
        for chunk in np.array_split(members, -(-len(members) // step)):
            c = np.arange(depth)
            cand = np.where(c < num_cand[chunk, None], group_first[chunk, None] + c, -1)
            g = np.arange(width)
            box_first = first[group_first[chunk], None]
            gt = np.where(g < num_gt[chunk, None], box_first + g, -1)
            rows, cols = np.nonzero(cand >= 0)
            yield rows, cols, cand, gt


def _match_groups(
    ious: np.ndarray,
    num_dets: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    iou_thresholds: np.ndarray,
) -> np.ndarray:
    """:func:`~.curves.match_detections` for many (image, class) groups,
    thresholds and area ranges at once.

    Args:
        ious: float64 ``[P, C, G]``: group p's c-th detection (decreasing
            score) against its g-th ground truth box; ``-inf`` pads missing
            boxes.
        num_dets: ``[P]`` detections per group, *non-increasing*, so the
            groups that still have a c-th detection are a prefix.
        gt_ignore: bool ``[P, A, G]`` ignore flags per area range.
        gt_crowd: bool ``[P, G]``.
        iou_thresholds: ``[T]``.

    Returns:
        int32 ``[P, C, T, A]`` matched box index, -1 for none.

    The loop runs over detection rank only: the c-th detections of all
    groups choose together, for every threshold and area range, which is
    the same as each group choosing one after another, since groups share
    nothing.
    """
    num_groups, depth, num_gt = ious.shape
    thresholds = np.minimum(iou_thresholds, 1 - 1e-10)[:, None, None]  # [T, 1, 1]
    num_t, num_a = len(thresholds), gt_ignore.shape[1]
    taken = np.zeros((num_groups, num_t, num_a, num_gt), bool)
    match = np.full((num_groups, depth, num_t, num_a), -1, dtype=np.int32)
    ignore = gt_ignore[:, None]  # [P, 1, A, G]
    for c in range(depth):
        n = int(np.count_nonzero(num_dets > c))
        iou = ious[:n, c, None, None, :]  # [n, 1, 1, G]
        free = (iou >= thresholds) & ~taken[:n]  # [n, T, A, G]
        regular = np.where(free & ~ignore[:n], iou, -np.inf)
        ignored = np.where(free & ignore[:n], iou, -np.inf)
        best = np.where(
            regular.max(-1) > -np.inf,
            last_argmax(regular),
            np.where(ignored.max(-1) > -np.inf, last_argmax(ignored), -1),
        )  # [n, T, A]
        match[:n, c] = best
        p, t, a = np.nonzero(best >= 0)
        g = best[p, t, a]
        consumed = ~gt_crowd[p, g]  # crowd boxes stay free
        taken[p[consumed], t[consumed], a[consumed], g[consumed]] = True
    return match


# --------------------------------------------------------------------------
# Precision and recall of every label, threshold, area range and maxDets
# --------------------------------------------------------------------------


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
            num_gt = out.num_gt[k, a]
            if num_gt == 0:
                continue
            counted = (tp_k[a] | fp_k[a]).any(axis=0)  # drop always-ignored ones
            for m, max_det in enumerate(max_dets):
                keep = counted & (rank_k < max_det)
                tp, fp = tp_k[a][:, keep], fp_k[a][:, keep]
                sampled, final = _interpolated_precision(
                    tp,
                    fp,
                    num_gt,
                    recall_thresholds,
                )
                precision[:, :, k, a, m], recall[:, k, a, m] = sampled, final
    return precision, recall


def _interpolated_precision(
    true_pos: np.ndarray,
    false_pos: np.ndarray,
    num_gt: int,
    recall_thresholds: np.ndarray,
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
    envelope = precision_envelope(tp / (fp + tp + np.spacing(1)))  # pycocotools' eps
    # pycocotools samples the envelope at searchsorted(tp / num_gt, r, 'left'):
    # the first detection whose recall reaches r. Recall is a count over
    # num_gt, so that is the first detection whose count reaches
    # needed(r) = min{c : c / num_gt >= r} -- computed from the very same
    # floats c / num_gt, so the comparison is exact. Counts are integers,
    # so all T rows can share one searchsorted, each row shifted by an
    # integer offset (shifting floats instead would round them).
    counts = np.arange(num_gt + 1) / num_gt
    needed = np.searchsorted(counts, recall_thresholds, side="left")
    offset = (num_gt + 1) * np.arange(num_curves)[:, None]
    shifted = (tp + offset).ravel()
    flat_pos = np.searchsorted(shifted, (needed + offset).ravel(), side="left")
    pos = flat_pos.reshape(num_curves, -1) - num_dets * np.arange(num_curves)[:, None]
    reached = pos < num_dets
    sampled = np.take_along_axis(envelope, np.minimum(pos, num_dets - 1), axis=1)
    return np.where(reached, sampled, 0.0), tp[:, -1] / num_gt
