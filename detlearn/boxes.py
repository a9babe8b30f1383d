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

__all__ = [
    "box_convert",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "clip_boxes_to_image",
    "remove_small_boxes",
]


# --- formats -------------------------------------------------------------------------------


def _xywh_to_xyxy(boxes: Tensor) -> Tensor:
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def _xyxy_to_xywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def _cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def _xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


_TO_XYXY = {"xyxy": lambda b: b, "xywh": _xywh_to_xyxy, "cxcywh": _cxcywh_to_xyxy}
_FROM_XYXY = {"xyxy": lambda b: b, "xywh": _xyxy_to_xywh, "cxcywh": _xyxy_to_cxcywh}


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes ``[N, 4]`` between formats.

    Formats: ``'xyxy'`` (x1, y1, x2, y2), ``'xywh'`` (x1, y1, width, height) and
    ``'cxcywh'`` (centre x, centre y, width, height). Every conversion goes
    through ``xyxy``, as in torchvision, so results equal
    ``torchvision.ops.box_convert``; converting to the same format returns a copy.
    Widths and heights must be >= 0 in the input format.
    """
    in_fmt = _checks.box_format(in_fmt, "in_fmt")
    out_fmt = _checks.box_format(out_fmt, "out_fmt")
    boxes = _checks.boxes(boxes, "boxes", fmt=in_fmt)
    if in_fmt == out_fmt:
        return boxes.clone()
    return _FROM_XYXY[out_fmt](_TO_XYXY[in_fmt](boxes))


# --- areas and overlaps --------------------------------------------------------------------


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_area(boxes: Tensor) -> Tensor:
    """Areas ``[N]`` of xyxy boxes ``[N, 4]``: ``(x2 - x1) * (y2 - y1)``."""
    return _area(_checks.boxes(boxes, "boxes"))


def _columns(boxes: Tensor) -> Tensor:
    """``[5, N]``: rows x1, y1, x2, y2 and area, each contiguous in memory."""
    return torch.cat((boxes.t(), _area(boxes)[None]))


def _inter_union_columns(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas ``[*G, K, M]`` of boxes given as
    columns ``[5, *G, K]`` and ``[5, *G, M]`` (see :func:`_columns`).

    ``*G`` are optional leading batch dimensions: every box of ``a`` is paired
    with every box of ``b`` in the same batch entry (batched NMS compares the
    boxes of many classes at once this way).

    The arithmetic is torchvision's, operation for operation, so the results
    are bit-identical: ``w = clamp(min(x2) - max(x1), 0)``, likewise ``h``,
    ``inter = w * h`` and ``union = (area_a + area_b) - inter``. It is faster
    because it never builds ``[K, M, 2]`` corner tensors: each [K, M]
    temporary is made once and then updated in place, and b's coordinates
    are contiguous rows, so the inner loops stream through memory.
    """
    a_x1, a_y1, a_x2, a_y2, a_area = a[..., None].unbind(0)  # each [*G, K, 1]
    b_x1, b_y1, b_x2, b_y2, b_area = b.unsqueeze(-2).unbind(0)  # each [*G, 1, M]
    w = torch.minimum(a_x2, b_x2).sub_(torch.maximum(a_x1, b_x1)).clamp_(min=0)
    h = torch.minimum(a_y2, b_y2).sub_(torch.maximum(a_y1, b_y1)).clamp_(min=0)
    inter = w.mul_(h)
    union = (a_area + b_area).sub_(inter)
    return inter, union


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas ``[N, M]`` of valid xyxy boxes."""
    return _inter_union_columns(_columns(boxes1), _columns(boxes2))


def _enclosing_wh(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height ``[N, M]`` of the smallest box enclosing each pair."""
    a_x1, a_y1, a_x2, a_y2 = boxes1[:, None, :].unbind(-1)
    b_x1, b_y1, b_x2, b_y2 = boxes2.unbind(-1)
    w = (torch.maximum(a_x2, b_x2) - torch.minimum(a_x1, b_x1)).clamp(min=0)
    h = (torch.maximum(a_y2, b_y2) - torch.minimum(a_y1, b_y1)).clamp(min=0)
    return w, h


def _ratio_or_zero_(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` in place, with 0 / 0 defined as 0.

    Callers only pass pairs where a zero denominator implies a zero
    numerator (intersection <= union <= enclosing area), so the only NaNs
    the division can make are those 0 / 0 cases.
    """
    return numerator.div_(denominator).nan_to_num_(nan=0.0)


_BLOCK = 32_767  # IoU values computed at once by box_iou


def _iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU ``[N, M]``, a block of rows at a time.

    A block of at most ``_BLOCK`` values keeps every temporary in the CPU
    cache, so only the result travels to memory; it also stays below
    PyTorch's parallel grain (32768), so no thread pool is woken for it.
    """
    b = _columns(boxes2)
    rows = max(1, _BLOCK // max(1, len(boxes2)))
    blocks = [
        _ratio_or_zero_(*_inter_union_columns(_columns(part), b)) for part in boxes1.split(rows)
    ]
    if len(blocks) == 1:
        return blocks[0]
    return torch.cat(blocks) if blocks else boxes1.new_zeros(0, len(boxes2))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union ``[N, M]`` of every box in ``boxes1`` ``[N, 4]``
    with every box in ``boxes2`` ``[M, 4]`` (xyxy).

    Equals ``torchvision.ops.box_iou`` bit for bit, except that the IoU of two
    zero-area boxes (0 / 0, NaN in torchvision) is defined as 0.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    return _iou(boxes1, boxes2)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU ``[N, M]`` (Rezatofighi et al., 2019) of xyxy boxes.

    ``GIoU = IoU - (C - U) / C`` where C is the area of the smallest box that
    encloses both and U their union; it lies in [-1, 1] and, unlike IoU, keeps
    decreasing as disjoint boxes move apart. Equals
    ``torchvision.ops.generalized_box_iou``, except for zero-area cases that
    are NaN there: IoU 0 / 0 is 0 and, when C = 0 (then U = 0 too), the
    penalty 0 / 0 is 0, so GIoU is 0.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    inter, union = _inter_union(boxes1, boxes2)
    iou = _ratio_or_zero_(inter, union)
    w, h = _enclosing_wh(boxes1, boxes2)
    enclosing = w * h
    return iou - _ratio_or_zero_(enclosing - union, enclosing)


def _diou_and_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(DIoU, IoU)``: IoU minus the squared centre distance over the squared
    diagonal of the enclosing box (``eps`` keeps that ratio finite)."""
    iou = _iou(boxes1, boxes2)
    w, h = _enclosing_wh(boxes1, boxes2)
    diagonal_squared = (w**2) + (h**2) + eps
    cx1 = (boxes1[:, 0] + boxes1[:, 2]) / 2
    cy1 = (boxes1[:, 1] + boxes1[:, 3]) / 2
    cx2 = (boxes2[:, 0] + boxes2[:, 2]) / 2
    cy2 = (boxes2[:, 1] + boxes2[:, 3]) / 2
    centre_distance_squared = ((cx1[:, None] - cx2[None, :]) ** 2) + (
        (cy1[:, None] - cy2[None, :]) ** 2
    )
    return iou - (centre_distance_squared / diagonal_squared), iou


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Distance IoU ``[N, M]`` (Zheng et al., 2020) of xyxy boxes.

    ``DIoU = IoU - d**2 / (c**2 + eps)``, d the distance between the centres
    and c the diagonal of the enclosing box. Equals
    ``torchvision.ops.distance_box_iou``, except that IoU 0 / 0 is 0.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    eps = _checks.number(eps, "eps", low=0.0)
    return _diou_and_iou(boxes1, boxes2, eps)[0]


def _aspect_angle(w: Tensor, h: Tensor) -> Tensor:
    """``atan(w / h)`` as torchvision computes it, defined where h = 0.

    For h = 0 < w it is pi / 2 (the limit, and what atan(inf) gives); for a
    point box (w = h = 0, NaN in torchvision) it is 0. ``h`` is replaced by 1
    where it is 0 before dividing, so the unused branch cannot put NaN or inf
    into the gradient.
    """
    flat = h > 0
    ratio = w / torch.where(flat, h, torch.ones_like(h))
    degenerate = (w > 0).to(w.dtype) * (math.pi / 2)
    return torch.where(flat, torch.atan(ratio), degenerate)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU ``[N, M]`` (Zheng et al., 2020) of xyxy boxes.

    ``CIoU = DIoU - alpha * v`` with the aspect-ratio term
    ``v = 4 / pi**2 * (atan(w1 / h1) - atan(w2 / h2))**2`` and
    ``alpha = v / (1 - IoU + v + eps)`` (alpha is treated as a constant for
    gradients, as in the paper and torchvision). Equals
    ``torchvision.ops.complete_box_iou``, except where torchvision gives NaN:
    IoU 0 / 0 is 0, ``atan(w / 0)`` is pi / 2 and a point box's angle is 0.
    """
    boxes1 = _checks.boxes(boxes1, "boxes1")
    boxes2 = _checks.boxes(boxes2, "boxes2")
    eps = _checks.number(eps, "eps", low=0.0)
    diou, iou = _diou_and_iou(boxes1, boxes2, eps)
    angle1 = _aspect_angle(boxes1[:, 2] - boxes1[:, 0], boxes1[:, 3] - boxes1[:, 1])
    angle2 = _aspect_angle(boxes2[:, 2] - boxes2[:, 0], boxes2[:, 3] - boxes2[:, 1])
    v = (4 / (math.pi**2)) * torch.pow(angle1[:, None] - angle2[None, :], 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


# --- cleaning up ---------------------------------------------------------------------------


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
