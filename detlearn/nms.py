"""Non-maximum suppression: greedy (plain and per class) and Gaussian soft-NMS.

Greedy NMS visits boxes by decreasing score; each box that survives is kept
and suppresses every later box whose IoU with it is greater than
``iou_threshold`` (IoU exactly equal to the threshold is kept). Two versions
compute the same result:

* :func:`nms_reference` is the textbook loop, one kept box at a time; it is
  the readable form that chapter 9 shows.
* :func:`nms` is the fast one. It visits the boxes in tiles of a few hundred:
  inside a tile the greedy rule is applied sequentially on a small
  tile x tile table, then the tile's kept boxes suppress all later boxes in
  one vectorised step, and suppressed boxes are dropped before the next tile.
  It never builds an N x N matrix.

Both follow torchvision's CPU kernel exactly: scores are sorted with a
*stable* descending sort (so ties are visited by increasing index), and
IoU is computed with the same floating-point operations in the boxes' dtype,
``inter / ((area_i + area_j) - inter)``, so the kept indices equal
``torchvision.ops.nms`` even for pairs whose IoU rounds onto the threshold.
A pair of zero-area boxes has IoU 0 here and never suppresses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from detlearn import _checks
from detlearn.boxes import _columns, _inter_union_columns, _iou

__all__ = ["nms", "batched_nms", "soft_nms", "nms_reference", "box_voting"]

# Sizes of the fast NMS's steps. Each tile x tile table and each block of IoU
# values stays below PyTorch's parallel grain (32768 elements), so it runs on
# the calling thread: for work this small, waking a thread pool costs more
# than it saves, and a blocked pool thread on a busy machine costs far more.
_TILE = 181  # boxes decided per step (181 * 181 < 32768)
_BLOCK = 32_767  # most IoU values computed at once
_SMALL_GROUP = 1024  # batched_nms: larger groups (classes) are tiled one by one
_GROUP_TABLE = 1 << 22  # batched_nms: most values in one batch of per-group tables


def _threshold_in(dtype: torch.dtype, iou_threshold: float) -> float:
    """The threshold to compare IoU values of ``dtype`` against.

    torchvision's kernel compares a float32 IoU with the *double* threshold.
    PyTorch would round the threshold to float32 first, and for a threshold
    such as 0.1 (not a float32) that flips ``iou > threshold`` for the float32
    just above it. Rounding the threshold *down* to a float32 t gives the same
    test: a float32 x is > the double exactly when x > t.
    """
    if dtype != torch.float32:
        return iou_threshold
    t = np.float32(iou_threshold)
    if float(t) > iou_threshold:  # compare as Python floats, i.e. doubles
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


def _empty_indices(device: torch.device) -> Tensor:
    return torch.empty(0, dtype=torch.int64, device=device)


# --- the textbook version ------------------------------------------------------------------


def nms_reference(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS written the textbook way: one kept box at a time.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        iou_threshold: a box is suppressed when its IoU with a kept box is
            greater than this.

    Returns:
        int64 ``[K]`` indices of the kept boxes by decreasing score (ties by
        increasing index). Same result as :func:`nms` and ``torchvision.ops.nms``,
        but its time grows with N x K and it makes one small tensor per kept box.
    """
    boxes = _checks.boxes(boxes, "boxes")
    scores = _checks.scores(scores, "scores", len(boxes))
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    threshold = _threshold_in(boxes.dtype, iou_threshold)

    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while order.numel() > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        iou = _iou(boxes[best][None], boxes[rest])[0]
        order = rest[iou <= threshold]  # survivors stay in score order
    return torch.stack(keep) if keep else _empty_indices(boxes.device)


# --- the fast version ----------------------------------------------------------------------


def _over(a: Tensor, b: Tensor, threshold: float) -> Tensor:
    """bool ``[*G, K, M]``: IoU > threshold, for boxes as columns ``[5, *G, K]``, ``[5, *G, M]``.

    A pair of zero-area boxes gives 0 / 0 = NaN, which is never > threshold.
    """
    inter, union = _inter_union_columns(a, b)
    return inter.div_(union) > threshold


def _suppressed_by(kept: Tensor, later: Tensor, threshold: float) -> Tensor:
    """bool ``[M]``: later boxes that overlap any kept box by more than threshold.

    Done in blocks of at most ``_BLOCK`` IoU values, so memory stays small
    however many boxes there are. Each later box needs only its largest IoU
    with the kept boxes; taking the column maximum first and comparing once
    is much cheaper than comparing every value (0 / 0 counts as IoU 0).
    """
    if kept.shape[1] == 0:
        return torch.zeros(later.shape[1], dtype=torch.bool, device=later.device)
    step = max(1, _BLOCK // kept.shape[1])
    blocks = []
    for part in later.split(step, dim=1):
        inter, union = _inter_union_columns(kept, part)
        blocks.append(inter.div_(union).nan_to_num_(nan=0.0).amax(dim=0) > threshold)
    return torch.cat(blocks) if len(blocks) != 1 else blocks[0]


def _greedy_on_tile(over: Tensor) -> Tensor:
    """Greedy NMS inside one tile, sequentially; returns the kept positions.

    ``over[i, j]`` says that tile box i would suppress tile box j (i is
    visited first when i < j). Each row becomes a Python integer used as a
    bit set, so the sequential loop costs a few cheap integer operations per
    box: box i is kept unless a kept box before it has set bit i; a kept box
    then sets the bits of the boxes it suppresses. (Bits of boxes before i
    are set too, but those have been decided already.)
    """
    device, over = over.device, over.cpu().numpy()
    suppresses = np.triu(over, 1).any(axis=1).tolist()  # rows that matter at all
    rows = np.packbits(over, axis=1, bitorder="little")
    removed, keep = 0, []
    for i, row in enumerate(rows):
        if not (removed >> i) & 1:
            keep.append(i)
            if suppresses[i]:
                removed |= int.from_bytes(row.tobytes(), "little")
    return torch.tensor(keep, dtype=torch.int64, device=device)


def _greedy_nms(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Greedy NMS, tile by tile; returns the kept indices in visiting order.

    Boxes are visited by decreasing score. Each step decides the next ``_TILE``
    boxes, all of them still alive, then removes the later boxes that the
    tile's kept boxes suppress.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    index, cols = order, _columns(boxes[order])
    kept = []
    while len(index) > 0:
        tile, tile_index = cols[:, :_TILE], index[:_TILE]
        keep = _greedy_on_tile(_over(tile, tile, threshold))
        kept.append(tile_index[keep])
        index, cols = index[_TILE:], cols[:, _TILE:]
        if len(index) > 0:
            alive = ~_suppressed_by(tile[:, keep], cols, threshold)
            index, cols = index[alive], cols[:, alive]
    return torch.cat(kept) if kept else _empty_indices(order.device)


def _greedy_on_groups(over: np.ndarray) -> np.ndarray:
    """Greedy NMS in G groups at once: bool ``[G, M, M]`` tables -> bool ``[G, M]`` kept.

    ``over[g, i, j]``: box i of group g would suppress box j of group g. The
    loop runs down the M positions once, deciding position i of every group
    in one vectorised step.
    """
    removed = np.zeros(over.shape[:2], dtype=bool)
    keep = np.zeros(over.shape[:2], dtype=bool)
    for i in range(over.shape[1]):
        keep_i = ~removed[:, i]
        keep[:, i] = keep_i
        removed |= over[:, i] & keep_i[:, None]
    return keep


def _per_group_nms(
    boxes: Tensor, order: Tensor, starts: Tensor, counts: Tensor, threshold: float
) -> Tensor:
    """Greedy NMS in each of a few groups of similar size, all at once.

    Group g's boxes are ``order[starts[g] : starts[g] + counts[g]]``, by
    decreasing score. They are laid out in a zero-padded ``[G, M]`` table
    (padding has zero area, so it never suppresses), the ``[G, M, M]`` IoU
    tables are computed a few groups at a time (small enough to stay in the
    CPU cache) and :func:`_greedy_on_groups` decides every group together.
    Returns the kept indices.
    """
    num_groups, size = len(counts), int(counts.max())
    group = torch.repeat_interleave(torch.arange(num_groups, device=order.device), counts)
    position = torch.arange(len(group), device=order.device) - (counts.cumsum(0) - counts)[group]
    index = order[starts[group] + position]
    table = boxes.new_zeros(5, num_groups, size)
    table[:, group, position] = _columns(boxes[index])
    step = max(1, _BLOCK // size**2)
    over = np.concatenate(
        [
            _over(table[:, g : g + step], table[:, g : g + step], threshold).cpu().numpy()
            for g in range(0, num_groups, step)
        ]
    )
    keep = torch.from_numpy(_greedy_on_groups(over)).to(order.device)
    return index[keep[group, position]]


def _grouped_greedy_nms(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float) -> Tensor:
    """Greedy NMS within each group of ``groups``; returns the kept indices (any order).

    Classes usually hold tens to hundreds of boxes each, too few for the tiles
    of :func:`_greedy_nms` to pay off one class at a time. So groups of up to
    ``_SMALL_GROUP`` boxes are sorted by size and handled in batches by
    :func:`_per_group_nms` (each batch's padded tables hold at most
    ``_GROUP_TABLE`` values); larger groups go through :func:`_greedy_nms`.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(groups[order], stable=True).indices]  # by group, then score
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)
    starts = counts.cumsum(0) - counts
    kept = []
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        if count > _SMALL_GROUP:
            index = order[start : start + count]
            kept.append(index[_greedy_nms(boxes[index], scores[index], threshold)])
    small = torch.nonzero(counts <= _SMALL_GROUP).squeeze(1)
    small = small[torch.sort(counts[small], stable=True).indices]
    first = 0
    while first < len(small):
        last = first + 1  # the batch grows while its padded tables fit
        while last < len(small) and (last + 1 - first) * int(counts[small[last]]) ** 2 <= (
            _GROUP_TABLE
        ):
            last += 1
        batch = small[first:last]
        kept.append(_per_group_nms(boxes, order, starts[batch], counts[batch], threshold))
        first = last
    return torch.cat(kept) if kept else _empty_indices(boxes.device)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, exact and fast.

    Args:
        boxes: ``[N, 4]`` xyxy boxes (float32 or float64).
        scores: ``[N]`` scores.
        iou_threshold: in [0, 1]; a box is suppressed when its IoU with a
            kept box is greater than this (equal is kept).

    Returns:
        int64 ``[K]`` indices of the kept boxes, by decreasing score; equal
        scores are visited by increasing index (stable sort). Equal to
        ``torchvision.ops.nms`` (see the module docstring for the method).
    """
    boxes = _checks.boxes(boxes, "boxes")
    scores = _checks.scores(scores, "scores", len(boxes))
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    return _greedy_nms(boxes, scores, _threshold_in(boxes.dtype, iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within each class: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        idxs: int ``[N]`` class (or image) of each box.
        iou_threshold: as in :func:`nms`.

    Returns:
        int64 ``[K]`` indices of the kept boxes by decreasing score; equal
        scores by increasing index.

    This computes exactly "``nms`` on each class separately", which is what
    torchvision's ``batched_nms`` does for more than 1,000 boxes on CPU. For
    fewer, torchvision adds a per-class offset to the coordinates and runs one
    ``nms``; the shifted coordinates round differently, so in rare cases at
    the threshold (or with huge coordinates) its result differs from the
    per-class one. detlearn always gives the per-class result.
    """
    boxes = _checks.boxes(boxes, "boxes")
    scores = _checks.scores(scores, "scores", len(boxes))
    idxs = _checks.labels(idxs, "idxs", len(boxes))
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    keep = _grouped_greedy_nms(boxes, scores, idxs, _threshold_in(boxes.dtype, iou_threshold))
    keep = torch.sort(keep).values  # so that equal scores end up by increasing index
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


# --- box voting ----------------------------------------------------------------------------


def box_voting(
    boxes: Tensor,
    scores: Tensor,
    keep: Tensor,
    iou_threshold: float = 0.7,
    idxs: Tensor | None = None,
) -> Tensor:
    """Refine the boxes NMS kept: each becomes the score-weighted mean of its neighbours.

    NMS keeps one box per object and discards the others, though each of them
    is also an estimate of where the object is. Box voting (Gidaris and
    Komodakis, 2015) averages them: kept box ``k`` is replaced by

        sum_j s_j * b_j / sum_j s_j   over candidates j with IoU(b_keep[k], b_j) >= iou_threshold,

    the kept box itself always among them. Scores and labels do not change,
    so the ranking NMS produced does not either; only the boxes get tighter.

    Args:
        boxes: ``[N, 4]`` xyxy, every candidate (what NMS was given).
        scores: ``[N]`` their scores, >= 0 (the weights).
        keep: int ``[K]`` indices into ``boxes`` of the kept boxes, e.g. what
            :func:`nms` or :func:`batched_nms` returned.
        iou_threshold: how much a candidate must overlap a kept box to vote.
        idxs: int ``[N]`` class of each box, or ``None``; with it, only
            candidates of the kept box's class vote (as in :func:`batched_nms`).

    Returns:
        float ``[K, 4]``: the refined boxes, in the order of ``keep``.
    """
    boxes = _checks.boxes(boxes, "boxes")
    scores = _checks.scores(scores, "scores", len(boxes))
    if (scores < 0).any():
        raise ValueError("scores must be >= 0 (they are the weights of the vote)")
    keep = _checks.tensor(keep, "keep")
    if keep.dim() != 1 or keep.is_floating_point() or keep.dtype == torch.bool:
        raise ValueError(f"keep must be a 1-D integer tensor, got {keep.dtype} {list(keep.shape)}")
    if len(keep) and not (int(keep.min()) >= 0 and int(keep.max()) < len(boxes)):
        raise ValueError(f"keep must hold indices into boxes (0 to {len(boxes) - 1})")
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    votes = _iou(boxes[keep], boxes) >= iou_threshold  # [K, N]
    if idxs is not None:
        idxs = _checks.labels(idxs, "idxs", len(boxes))
        votes &= idxs[keep][:, None] == idxs[None]
    votes[torch.arange(len(keep), device=keep.device), keep] = True  # zero-area boxes too
    weights = votes * scores[None]
    total = weights.sum(dim=1, keepdim=True)
    voted = (weights @ boxes) / total.clamp(min=torch.finfo(boxes.dtype).tiny)
    # a box that votes alone (or with zero weight) stays exactly where it is
    alone = (votes.sum(dim=1, keepdim=True) == 1) | (total == 0)
    return torch.where(alone, boxes[keep], voted)


# --- soft-NMS ------------------------------------------------------------------------------


def soft_nms(
    boxes: Tensor, scores: Tensor, sigma: float = 0.5, score_threshold: float = 0.001
) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS (Bodla et al., 2017).

    Instead of removing the boxes that overlap a kept box, soft-NMS lowers
    their scores: repeatedly pick the box with the highest current score
    (ties: lowest index), keep it, and multiply the score of every remaining
    box by ``exp(-iou**2 / sigma)``, its IoU with the picked box. A box whose
    current score is below ``score_threshold`` is dropped (boxes that start
    below it too).

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        sigma: > 0; small sigma approaches hard NMS at IoU threshold 0, large
            sigma changes almost nothing.
        score_threshold: >= 0.

    Returns:
        ``(keep, new_scores)``: int64 ``[K]`` indices and ``[K]`` scores
        (dtype of ``scores``), ``new_scores[i]`` being the decayed score of
        ``boxes[keep[i]]``, ordered by decreasing new score.
    """
    boxes = _checks.boxes(boxes, "boxes")
    scores = _checks.scores(scores, "scores", len(boxes))
    sigma = _checks.positive(sigma, "sigma")
    score_threshold = _checks.number(score_threshold, "score_threshold", low=0.0)

    current = scores.clone()
    remaining = torch.arange(len(boxes), device=boxes.device)
    remaining = remaining[current >= score_threshold]
    keep, new_scores = [], []
    while remaining.numel() > 0:
        best = int(torch.argmax(current[remaining]))  # first maximum: lowest index
        picked, remaining = remaining[best], torch.cat((remaining[:best], remaining[best + 1 :]))
        keep.append(picked)
        new_scores.append(current[picked])
        iou = _iou(boxes[picked][None], boxes[remaining])[0]
        current[remaining] *= torch.exp(-(iou**2) / sigma).to(current.dtype)
        remaining = remaining[current[remaining] >= score_threshold]
    if not keep:
        return _empty_indices(boxes.device), scores.new_empty(0)
    return torch.stack(keep), torch.stack(new_scores)
