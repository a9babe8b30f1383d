"""Box geometry: formats, areas and the IoU family.

Boxes are float tensors ``[N, 4]`` in ``xyxy`` format (x1, y1, x2, y2) in
pixels, with x2 >= x1 and y2 >= y1; a box's width is ``x2 - x1`` (no "+1").
Each function here has the name, arguments and results of its namesake in
``torchvision.ops`` and computes the same numbers, with one deliberate
difference: where torchvision divides zero by zero (two zero-area boxes) and
returns NaN, detlearn defines the value and says so in the docstring, so that
finite input never gives NaN.

Integer boxes are promoted to float32; float32 and float64 are kept, and so
is the device. Bad input raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detlearn import _checks
from detlearn._kernels.boxes import box_iou as _kernel_box_iou

__all__ = [
    "box_convert",
    "box_area",
    "box_iou",
    "box_iou_reference",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "box_aspect_angle",
    "clip_boxes_to_image",
    "remove_small_boxes",
]


# --- formats ------------------------------------------------------------------


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes ``[N, 4]`` between formats.

    Formats: ``'xyxy'`` (x1, y1, x2, y2), ``'xywh'`` (x1, y1, width, height) and
    ``'cxcywh'`` (centre x, centre y, width, height). Every conversion goes
    through ``xyxy``, as in torchvision, so results equal
    ``torchvision.ops.box_convert``; converting to the same format returns a
    copy. Widths and heights must be >= 0 in the input format.
    """
    in_fmt = _checks.box_format(in_fmt, "in_fmt")
    out_fmt = _checks.box_format(out_fmt, "out_fmt")
    boxes = _checks.boxes(boxes, "boxes", fmt=in_fmt)
    if in_fmt == out_fmt:
        return boxes.clone()
    if in_fmt == "xywh":
        x, y, w, h = boxes.unbind(-1)  # each [N]
        x1, y1, x2, y2 = x, y, x + w, y + h
    elif in_fmt == "cxcywh":
        cx, cy, w, h = boxes.unbind(-1)
        x1, y1, x2, y2 = cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h
    else:
        x1, y1, x2, y2 = boxes.unbind(-1)
    if out_fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)
    return torch.stack((x1, y1, x2, y2), dim=-1)


# --- areas and overlaps -------------------------------------------------------


def box_area(boxes: Tensor) -> Tensor:
    """Areas ``[N]`` of xyxy boxes ``[N, 4]``: ``(x2 - x1) * (y2 - y1)``."""
    boxes = _checks.boxes(boxes, "boxes")
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou_reference(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union ``[N, M]`` of every box in ``boxes1`` ``[N, 4]``
    with every box in ``boxes2`` ``[M, 4]`` (xyxy), by broadcasting.

    Indexing with ``None`` pairs the corners of one set with those of the
    other. Equals ``torchvision.ops.box_iou`` bit for bit (the same operations
    in the same order), except that the IoU of two zero-area boxes (0 / 0,
    NaN in torchvision) is defined as 0. :func:`box_iou` gives the same bits.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # [N]
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # [M]
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    wh = (rb - lt).clamp(min=0)  # 0 where the boxes do not overlap
    inter = wh[..., 0] * wh[..., 1]  # [N, M]
    union = area1[:, None] + area2[None, :] - inter  # [N, M]
    return (inter / union).nan_to_num(nan=0.0)  # 0 / 0 only when both areas are 0


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union ``[N, M]`` of every box in ``boxes1`` ``[N, 4]``
    with every box in ``boxes2`` ``[M, 4]`` (xyxy).

    The numbers of :func:`box_iou_reference`, bit for bit, computed by a
    kernel that never builds the ``[N, M, 2]`` corner tensors and works a
    block of rows at a time (``detlearn/_kernels/boxes.py``), about three
    times faster than torchvision on CPU. Equals ``torchvision.ops.box_iou``
    except that the IoU of two zero-area boxes is defined as 0.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    return _kernel_box_iou(boxes1, boxes2)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU ``[N, M]`` (Rezatofighi et al., 2019) of xyxy boxes
    ``[N, 4]`` and ``[M, 4]``.

    ``GIoU = IoU - (C - U) / C`` where C is the area of the smallest box that
    encloses both and U their union; it lies in [-1, 1] and, unlike IoU, keeps
    decreasing as disjoint boxes move apart. Equals
    ``torchvision.ops.generalized_box_iou``, except for zero-area cases that
    are NaN there: IoU 0 / 0 is 0 and, when C = 0 (then U = 0 too), the
    penalty 0 / 0 is 0, so GIoU is 0.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # [N]
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # [M]
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # [N, M]
    union = area1[:, None] + area2[None, :] - inter
    iou = (inter / union).nan_to_num(nan=0.0)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])  # the enclosing box
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]  # [N, M]
    return iou - ((enclosing - union) / enclosing).nan_to_num(nan=0.0)


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Distance IoU ``[N, M]`` (Zheng et al., 2020) of xyxy boxes ``[N, 4]``
    and ``[M, 4]``.

    ``DIoU = IoU - d**2 / (c**2 + eps)``, d the distance between the centres
    and c the diagonal of the enclosing box. Equals
    ``torchvision.ops.distance_box_iou``, except that IoU 0 / 0 is 0.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    eps = _checks.number(eps, "eps", low=0.0)
    iou = box_iou(boxes1, boxes2)  # [N, M]
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])  # the enclosing box
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    w, h = (rb - lt).clamp(min=0).unbind(-1)  # each [N, M]
    diagonal_squared = (w**2) + (h**2) + eps
    cx1 = (boxes1[:, 0] + boxes1[:, 2]) / 2  # centres, each [N] or [M]
    cy1 = (boxes1[:, 1] + boxes1[:, 3]) / 2
    cx2 = (boxes2[:, 0] + boxes2[:, 2]) / 2
    cy2 = (boxes2[:, 1] + boxes2[:, 3]) / 2
    dx, dy = cx1[:, None] - cx2[None, :], cy1[:, None] - cy2[None, :]  # [N, M]
    centre_distance_squared = (dx**2) + (dy**2)
    return iou - (centre_distance_squared / diagonal_squared)


def box_aspect_angle(boxes: Tensor) -> Tensor:
    """``atan(w / h)`` of xyxy boxes ``[..., 4]``, shape ``[...]``, as
    torchvision's CIoU computes it, defined where the height is 0.

    For h = 0 < w it is pi / 2 (the limit, and what atan(inf) gives); for a
    point box (w = h = 0, NaN in torchvision) it is 0. ``h`` is replaced by 1
    where it is 0 before dividing, so the unused branch cannot put NaN or inf
    into the gradient.
    """
    boxes = _checks.boxes(boxes, "boxes", allow_single=True)
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    has_height = h > 0
    angle = torch.atan(w / torch.where(has_height, h, torch.ones_like(h)))
    return torch.where(has_height, angle, (w > 0).to(w.dtype) * (math.pi / 2))


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU ``[N, M]`` (Zheng et al., 2020) of xyxy boxes ``[N, 4]``
    and ``[M, 4]``.

    ``CIoU = DIoU - alpha * v`` with the aspect-ratio term
    ``v = 4 / pi**2 * (atan(w1 / h1) - atan(w2 / h2))**2`` and
    ``alpha = v / (1 - IoU + v + eps)`` (alpha is treated as a constant for
    gradients, as in the paper and torchvision). Equals
    ``torchvision.ops.complete_box_iou``, except where torchvision gives NaN:
    IoU 0 / 0 is 0, ``atan(w / 0)`` is pi / 2 and a point box's angle is 0
    (see :func:`box_aspect_angle`).
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    eps = _checks.number(eps, "eps", low=0.0)
    iou = box_iou(boxes1, boxes2)  # [N, M]
    diou = distance_box_iou(boxes1, boxes2, eps)  # [N, M]
    angle1, angle2 = box_aspect_angle(boxes1), box_aspect_angle(boxes2)  # [N], [M]
    v = (4 / (math.pi**2)) * torch.pow(angle1[:, None] - angle2[None, :], 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


# --- cleaning up --------------------------------------------------------------


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip xyxy boxes ``[N, 4]`` to an image of ``size = (height, width)``.

    x coordinates go into [0, width] and y into [0, height], as in
    ``torchvision.ops.clip_boxes_to_image``; a box wholly outside the image
    becomes a zero-width or zero-height box on its border.
    """
    boxes = _checks.boxes(boxes, "boxes")
    height, width = _checks.image_size(size, "size")
    x = boxes[:, 0::2].clamp(min=0, max=width)
    y = boxes[:, 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64 ``[K]``, increasing) of the xyxy boxes whose width and
    height are both >= ``min_size``, as ``torchvision.ops.remove_small_boxes``."""
    boxes = _checks.boxes(boxes, "boxes")
    min_size = _checks.number(min_size, "min_size", low=0.0)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]
