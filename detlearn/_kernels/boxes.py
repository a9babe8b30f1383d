"""Pairwise IoU in cache-sized blocks: the fast path of ``detlearn.boxes.box_iou``.

``detlearn.boxes.box_iou_reference`` defines the IoU matrix with torchvision's
broadcasting formula. The kernel here does the same floating-point operations
in the same order, so the results are bit-identical, but it never builds the
``[N, M, 2]`` corner tensors: boxes are stored as columns (rows x1, y1, x2, y2
and area, each contiguous), each ``[K, M]`` temporary is made once and then
updated in place, and the matrix is computed a block of rows at a time.

The NMS kernels (:mod:`detlearn._kernels.nms`) build on :func:`columns` and
:func:`iou_columns`, so the one rule for a pair of zero-area boxes
(IoU 0 / 0 is 0) lives in one place: :func:`iou_columns`.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Most IoU values computed at once. A block this small keeps every temporary
# in the CPU cache, so only results travel to memory, and it stays below
# PyTorch's parallel grain (32768 elements), so it runs on the calling thread:
# for work this small, waking a thread pool costs more than it saves.
BLOCK = 32_767


def columns(boxes: Tensor) -> Tensor:
    """``[5, N]``: rows x1, y1, x2, y2 and area of xyxy boxes ``[N, 4]``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return torch.cat((boxes.t(), area[None]))


def iou_columns(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[*G, K, M]`` of boxes given as columns ``[5, *G, K]`` and ``[5, *G, M]``.

    ``*G`` are optional leading batch dimensions: every box of ``a`` is paired
    with every box of ``b`` in the same batch entry (batched NMS compares the
    boxes of many classes at once this way). The arithmetic is torchvision's,
    operation for operation: ``w = clamp(min(x2) - max(x1), 0)``, likewise
    ``h``, ``inter = w * h``, ``union = (area_a + area_b) - inter`` and
    ``inter / union``, with 0 / 0 (two zero-area boxes, NaN in torchvision)
    defined as 0. Since intersection <= union, those are the only NaNs.
    """
    a_x1, a_y1, a_x2, a_y2, a_area = a[..., None].unbind(0)  # each [*G, K, 1]
    b_x1, b_y1, b_x2, b_y2, b_area = b.unsqueeze(-2).unbind(0)  # each [*G, 1, M]
    w = torch.minimum(a_x2, b_x2).sub_(torch.maximum(a_x1, b_x1)).clamp_(min=0)
    h = torch.minimum(a_y2, b_y2).sub_(torch.maximum(a_y1, b_y1)).clamp_(min=0)
    inter = w.mul_(h)
    union = (a_area + b_area).sub_(inter)
    return inter.div_(union).nan_to_num_(nan=0.0)


def box_iou(boxes1: Tensor, boxes2: Tensor, *, block: int = BLOCK) -> Tensor:
    """IoU ``[N, M]`` of valid xyxy boxes ``[N, 4]`` and ``[M, 4]``, ``block``
    values at a time (at least one row of ``M``)."""
    b = columns(boxes2)
    rows = max(1, block // max(1, len(boxes2)))
    blocks = [iou_columns(columns(part), b) for part in boxes1.split(rows)]
    if len(blocks) == 1:
        return blocks[0]
    return torch.cat(blocks) if blocks else boxes1.new_zeros(0, len(boxes2))
