"""Losses for classification and box regression in detection.

Each loss has the name, arguments and numbers of its reference:
``torch.nn.functional.smooth_l1_loss`` and torchvision's
``sigmoid_focal_loss``, ``generalized_box_iou_loss``, ``distance_box_iou_loss``
and ``complete_box_iou_loss``; gradients equal the reference's too.

Conventions: ``reduction`` is ``'none'``, ``'mean'`` or ``'sum'``. The mean
of an empty loss is 0 (torchvision's box losses do this, as
``0.0 * loss.sum()``, which keeps the graph; torch's mean of nothing would be
NaN). The box losses are *paired*: ``boxes1[i]`` is compared with
``boxes2[i]`` (shapes ``[N, 4]`` or ``[4]``, xyxy) and give one loss per pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from detlearn import _checks
from detlearn.boxes import box_aspect_angle

__all__ = [
    "smooth_l1_loss",
    "sigmoid_focal_loss",
    "generalized_box_iou_loss",
    "distance_box_iou_loss",
    "complete_box_iou_loss",
    "multitask_loss",
    "hard_negative_mask",
    "paired_box_iou",
    "reduce_loss",
]


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` to a loss of any shape: ``'none'`` returns it as is,
    ``'sum'`` its sum and ``'mean'`` its mean, which for an empty loss is 0
    (written ``0.0 * loss.sum()`` so that the graph is kept)."""
    reduction = _checks.reduction(reduction)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    return loss


# --- regression and classification --------------------------------------------


def smooth_l1_loss(
    input: Tensor, target: Tensor, beta: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Smooth L1 (Huber-like) loss, elementwise over tensors of equal shape.

    With ``z = |input - target|`` the loss is ``0.5 * z**2 / beta`` where
    ``z < beta`` and ``z - 0.5 * beta`` elsewhere: quadratic near zero (small
    gradients for small errors), linear far away (outliers do not dominate).
    ``beta = 0`` gives the L1 loss. Equals ``torch.nn.functional.smooth_l1_loss``
    (which broadcasts; here the shapes must match), except that the mean of an
    empty tensor is 0, not NaN.
    """
    _checks.float_tensor(input, "input")
    _checks.float_tensor(target, "target")
    _checks.same_shape(input, "input", target, "target")
    beta = _checks.number(beta, "beta", low=0.0)
    reduction = _checks.reduction(reduction)
    z = (input - target).abs()
    if beta == 0:  # the quadratic branch would divide by zero
        return reduce_loss(z, reduction)
    loss = torch.where(z < beta, 0.5 * z**2 / beta, z - 0.5 * beta)
    return reduce_loss(loss, reduction)


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
) -> Tensor:
    """Focal loss (Lin et al., 2017) on logits, elementwise.

    ``FL = alpha_t * (1 - p_t)**gamma * CE`` where ``p = sigmoid(inputs)``,
    ``p_t = p`` for targets 1 and ``1 - p`` for targets 0, and CE the binary
    cross-entropy. The factor ``(1 - p_t)**gamma`` shrinks the loss of easy,
    well-classified examples, so that the many easy background anchors of a
    dense detector do not swamp the few hard ones. ``alpha`` in [0, 1] weights
    positives by alpha and negatives by 1 - alpha; ``alpha = -1`` turns the
    weighting off. Equals ``torchvision.ops.sigmoid_focal_loss``, except that
    the mean of an empty tensor is 0, not NaN.

    Args:
        inputs: logits, any shape.
        targets: same shape, 0 or 1 (soft labels in [0, 1] also work).
        alpha, gamma: as above; gamma >= 0 (0 gives alpha-weighted CE).
        reduction: ``'none'`` (default), ``'mean'`` or ``'sum'``.
    """
    _checks.float_tensor(inputs, "inputs")
    _checks.float_tensor(targets, "targets")
    _checks.same_shape(inputs, "inputs", targets, "targets")
    alpha = _checks.number(alpha, "alpha", low=-1.0, high=1.0)
    if not (0 <= alpha <= 1 or alpha == -1):
        raise ValueError(f"alpha must be in [0, 1], or -1 to turn it off, got {alpha}")
    gamma = _checks.number(gamma, "gamma", low=0.0)
    reduction = _checks.reduction(reduction)

    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return reduce_loss(loss, reduction)


# --- IoU-family box losses ----------------------------------------------------


def paired_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU ``I / (U + eps)`` of each pair ``(boxes1[i], boxes2[i])`` of xyxy boxes
    ``[N, 4]`` (or one pair ``[4]``), shape ``[N]``, as the box losses compute it.

    The intersection I is 0 unless the boxes overlap with positive width *and*
    height, as in torchvision; so touching boxes pass no gradient through it
    (a clamp at 0 would). ``eps > 0`` keeps the ratio finite.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1", allow_single=True)
    boxes2 = _checks.boxes(boxes2, "boxes2", allow_single=True)
    _checks.same_shape(boxes1, "boxes1", boxes2, "boxes2")
    eps = _checks.positive(eps, "eps")
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)  # each [N]
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    left, top = torch.max(x1, x1g), torch.max(y1, y1g)
    right, bottom = torch.min(x2, x2g), torch.min(y2, y2g)
    overlap = (bottom > top) & (right > left)
    inter = torch.where(overlap, (right - left) * (bottom - top), 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter / (union + eps)


def generalized_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - GIoU`` of each pair ``(boxes1[i], boxes2[i])`` of xyxy boxes
    ``[N, 4]`` (or one pair ``[4]``): shape ``[N]`` before reduction, in [0, 2].

    ``GIoU = I / (U + eps) - (C - U) / (C + eps)`` with I, U the intersection
    and union and C the enclosing box's area; unlike ``1 - IoU`` it still has
    a gradient when the boxes do not overlap. ``eps > 0`` keeps every ratio
    finite. The intersection is 0 unless the boxes overlap with positive width
    *and* height, so touching boxes pass no gradient through it (a clamp at 0
    would). Equals ``torchvision.ops.generalized_box_iou_loss``.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1", allow_single=True)
    boxes2 = _checks.boxes(boxes2, "boxes2", allow_single=True)
    _checks.same_shape(boxes1, "boxes1", boxes2, "boxes2")
    reduction = _checks.reduction(reduction)
    eps = _checks.positive(eps, "eps")
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)  # each [N]
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    left, top = torch.max(x1, x1g), torch.max(y1, y1g)  # the intersection
    right, bottom = torch.min(x2, x2g), torch.min(y2, y2g)
    overlap = (bottom > top) & (right > left)
    inter = torch.where(overlap, (right - left) * (bottom - top), 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    enclosing_w = torch.max(x2, x2g) - torch.min(x1, x1g)
    enclosing_h = torch.max(y2, y2g) - torch.min(y1, y1g)
    enclosing = enclosing_w * enclosing_h
    giou = iou - ((enclosing - union) / (enclosing + eps))
    return reduce_loss(1 - giou, reduction)


def distance_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - DIoU`` of each pair ``(boxes1[i], boxes2[i])`` of xyxy boxes
    ``[N, 4]`` (or one pair ``[4]``): shape ``[N]`` before reduction
    (Zheng et al., 2020).

    ``1 - I / (U + eps) + d**2 / (c**2 + eps)``, d the distance between the
    centres and c the enclosing box's diagonal: the second term pulls the
    centres together even when the boxes do not overlap; the IoU is
    :func:`paired_box_iou`. Equals
    ``torchvision.ops.distance_box_iou_loss``.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1", allow_single=True)
    boxes2 = _checks.boxes(boxes2, "boxes2", allow_single=True)
    _checks.same_shape(boxes1, "boxes1", boxes2, "boxes2")
    reduction = _checks.reduction(reduction)
    eps = _checks.positive(eps, "eps")
    iou = paired_box_iou(boxes1, boxes2, eps)  # [N]
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)  # each [N]
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    enclosing_w = torch.max(x2, x2g) - torch.min(x1, x1g)
    enclosing_h = torch.max(y2, y2g) - torch.min(y1, y1g)
    diagonal_squared = (enclosing_w**2) + (enclosing_h**2) + eps
    dx = (x2 + x1) / 2 - (x1g + x2g) / 2  # between the centres
    dy = (y2 + y1) / 2 - (y1g + y2g) / 2
    centre_distance_squared = (dx**2) + (dy**2)
    loss = 1 - iou + (centre_distance_squared / diagonal_squared)
    return reduce_loss(loss, reduction)


def complete_box_iou_loss(
    boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7
) -> Tensor:
    """``1 - CIoU`` of each pair ``(boxes1[i], boxes2[i])`` of xyxy boxes
    ``[N, 4]`` (or one pair ``[4]``): shape ``[N]`` before reduction
    (Zheng et al., 2020).

    The DIoU loss plus ``alpha * v``, where
    ``v = 4 / pi**2 * (atan(w2 / h2) - atan(w1 / h1))**2`` compares the aspect
    ratios and ``alpha = v / (1 - IoU + v + eps)`` (a constant for gradients).
    Equals ``torchvision.ops.complete_box_iou_loss`` with two differences:
    a zero-height box has angle pi / 2 and a point box angle 0 (NaN in
    torchvision; see ``detlearn.boxes.box_aspect_angle``), and ``eps`` is used
    in the DIoU part as well (torchvision uses its default 1e-7 there whatever
    ``eps`` is; the same at the default).
    """
    boxes1 = _checks.boxes(boxes1, "boxes1", allow_single=True)
    boxes2 = _checks.boxes(boxes2, "boxes2", allow_single=True)
    _checks.same_shape(boxes1, "boxes1", boxes2, "boxes2")
    reduction = _checks.reduction(reduction)
    eps = _checks.positive(eps, "eps")
    diou_loss = distance_box_iou_loss(boxes1, boxes2, "none", eps)  # [N]
    angle = box_aspect_angle(boxes1)  # [N]
    angle_g = box_aspect_angle(boxes2)
    v = (4 / (math.pi**2)) * torch.pow(angle_g - angle, 2)
    with torch.no_grad():
        alpha = v / (1 - paired_box_iou(boxes1, boxes2, eps) + v + eps)
    return reduce_loss(diou_loss + alpha * v, reduction)


# --- choosing which negatives count -------------------------------------------


def hard_negative_mask(
    loss: Tensor, positive: Tensor, negative: Tensor | None = None, ratio: int = 3
) -> Tensor:
    """SSD's hard negative mining: which anchors the classification loss keeps.

    In each image, every positive anchor is kept, and of its negatives only the
    ``ratio * P`` with the largest loss, where ``P`` is the image's number of
    positives (SSD's 3:1, as in torchvision's ``SSD.compute_loss``). An image
    without positives keeps no negatives. Ties in the loss go to the anchor
    that comes first.

    Args:
        loss: ``[B, N]`` per-anchor classification loss (only compared, never
            differentiated).
        positive: ``[B, N]`` bool, the positive (foreground) anchors.
        negative: ``[B, N]`` bool, the anchors that may be kept as negatives;
            default ``~positive`` (pass the background anchors to leave out the
            ignored ones).
        ratio: negatives kept per positive, an integer >= 1.

    Returns:
        ``[B, N]`` bool: the anchors whose classification loss counts.
    """
    loss = _checks.float_tensor(loss, "loss")
    if loss.dim() != 2:
        raise ValueError(f"loss must have shape [B, N], got {list(loss.shape)}")
    negative = ~positive if negative is None else negative
    for mask, name in ((positive, "positive"), (negative, "negative")):
        if (
            not isinstance(mask, Tensor)
            or mask.dtype != torch.bool
            or mask.shape != loss.shape
        ):
            raise ValueError(
                f"{name} must be a bool tensor of shape {list(loss.shape)}"
            )
    ratio = _checks.positive_int(ratio, "ratio")

    wanted = ratio * positive.sum(dim=1, keepdim=True)  # [B, 1] negatives to keep
    candidate_loss = loss.detach().masked_fill(~negative, -math.inf)
    order = candidate_loss.argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)  # 0 for the hardest negative of each image
    return positive | (negative & (rank < wanted))


# --- putting them together ----------------------------------------------------


def multitask_loss(cls_loss: Tensor, box_loss: Tensor, lam: float = 1.0) -> Tensor:
    """The multi-task loss ``L = cls_loss + lam * box_loss``.

    ``lam >= 0`` trades classification against localisation; both losses are
    usually scalars already reduced over the batch.
    """
    _checks.float_tensor(cls_loss, "cls_loss")
    _checks.float_tensor(box_loss, "box_loss")
    lam = _checks.number(lam, "lam", low=0.0)
    return cls_loss + lam * box_loss
