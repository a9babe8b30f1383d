"""Non-maximum suppression: greedy (plain and per class) and Gaussian soft-NMS.

Greedy NMS visits boxes by decreasing score; each box that survives is kept
and suppresses every later box whose IoU with it is greater than
``iou_threshold`` (IoU exactly equal to the threshold is kept). Two versions
compute the same result:

* :func:`nms_reference` is the textbook loop, one kept box at a time; it is
  the readable form that chapter 10 shows.
* :func:`nms` and :func:`batched_nms` check their input and dispatch to the
  fast kernels of ``detlearn/_kernels/nms.py``. They visit the boxes in tiles
  of a few hundred: inside a tile the greedy rule is applied sequentially on a
  small tile x tile table, then the tile's kept boxes suppress all later boxes
  in one vectorised step, and suppressed boxes are dropped before the next
  tile. They never build an N x N matrix.

Both follow torchvision's CPU kernel exactly: scores are sorted with a
*stable* descending sort (so ties are visited by increasing index), and
IoU is computed with the same floating-point operations in the boxes' dtype,
``inter / ((area_i + area_j) - inter)``, so the kept indices equal
``torchvision.ops.nms`` even for pairs whose IoU rounds onto the threshold;
like torchvision they compare a float32 IoU with the threshold as a double.
A pair of zero-area boxes has IoU 0 here and never suppresses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detlearn import _checks
from detlearn._kernels import nms as _kernel
from detlearn.boxes import box_iou

__all__ = ["nms", "batched_nms", "soft_nms", "nms_reference", "box_voting"]


# --- the textbook version -----------------------------------------------------


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

    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while order.numel() > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        iou = box_iou(boxes[best][None], boxes[rest])[0]  # [len(rest)]
        # compared in double, as torchvision does: 0.1 is not a float32
        order = rest[iou.double() <= iou_threshold]  # survivors stay in score order
    if not keep:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    return torch.stack(keep)


# --- the fast version ---------------------------------------------------------


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
        :func:`nms_reference` and ``torchvision.ops.nms``, computed by the
        tiled kernel of ``detlearn/_kernels/nms.py`` (see the module
        docstring).
    """
    boxes = _checks.boxes(boxes, "boxes")
    scores = _checks.scores(scores, "scores", len(boxes))
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    return _kernel.nms(boxes, scores, iou_threshold)


def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float
) -> Tensor:
    """Greedy NMS within each class: boxes with different ``idxs`` never
    suppress each other.

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
    keep = _kernel.batched_nms(boxes, scores, idxs, iou_threshold)
    keep = torch.sort(keep).values  # so that equal scores end up by increasing index
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


# --- box voting ---------------------------------------------------------------


def box_voting(
    boxes: Tensor,
    scores: Tensor,
    keep: Tensor,
    iou_threshold: float = 0.7,
    idxs: Tensor | None = None,
) -> Tensor:
    """Refine the boxes NMS kept: each becomes the score-weighted mean of the
    candidates that overlap it (Gidaris and Komodakis, 2015).

    NMS keeps one box per object and discards the others, though each of them
    is also an estimate of where the object is. Kept box ``k`` is replaced by
    ``sum_j s_j * b_j / sum_j s_j`` over the candidates j with
    ``IoU(b_keep[k], b_j) >= iou_threshold``, itself always among them. Scores
    and labels do not change, so neither does the ranking NMS produced.

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
        raise ValueError(f"keep must be a 1-D integer tensor, got {keep.dtype}")
    if len(keep) and not (int(keep.min()) >= 0 and int(keep.max()) < len(boxes)):
        raise ValueError(f"keep must hold indices into boxes (0 to {len(boxes) - 1})")
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    votes = box_iou(boxes[keep], boxes) >= iou_threshold  # [K, N]
    if idxs is not None:
        idxs = _checks.labels(idxs, "idxs", len(boxes))
        votes &= idxs[keep][:, None] == idxs[None]
    rows = torch.arange(len(keep), device=keep.device)
    votes[rows, keep] = True  # each kept box votes for itself, even with area 0
    weights = votes * scores[None]  # [K, N]
    total = weights.sum(dim=1, keepdim=True)  # [K, 1]
    voted = (weights @ boxes) / total.clamp(min=torch.finfo(boxes.dtype).tiny)
    # a box that votes alone (or with zero weight) stays exactly where it is
    alone = (votes.sum(dim=1, keepdim=True) == 1) | (total == 0)
    return torch.where(alone, boxes[keep], voted)


# --- soft-NMS -----------------------------------------------------------------


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
        picked = remaining[best]
        remaining = torch.cat((remaining[:best], remaining[best + 1 :]))
        keep.append(picked)
        new_scores.append(current[picked])
        iou = box_iou(boxes[picked][None], boxes[remaining])[0]
        current[remaining] *= torch.exp(-(iou**2) / sigma).to(current.dtype)
        remaining = remaining[current[remaining] >= score_threshold]
    if not keep:
        empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        return empty, scores.new_zeros(0)
    return torch.stack(keep), torch.stack(new_scores)
