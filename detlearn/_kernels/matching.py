"""The batched Matcher: many images' IoU matrices matched in one go.

``detlearn.anchors.Matcher.__call__`` states the rules for one image; this
kernel applies them to a whole batch of images at once, which is what a
detector's training step needs (one pass over a ``[B, max G, A]`` tensor
instead of ``B`` small ones). Its inputs are checked by
``Matcher.match_batch``; results equal ``Matcher.__call__`` image by image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BELOW_LOW_THRESHOLD = -1  # the codes of detlearn.anchors.Matcher
BETWEEN_THRESHOLDS = -2


def match_batch(
    matrices: list[Tensor],
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool,
) -> Tensor:
    """int64 ``[B, A]``: row b matches ``matrices[b]``, an IoU matrix ``[G_b, A]``.

    The matrices share A, device and a float dtype, and are finite (G_b may
    be 0; no matrices give ``[0, 0]``). They are stacked into one
    ``[B, max G_b, A]`` tensor whose padding rows hold ``-inf``: a padding row
    is never an anchor's best (every real IoU is finite) and is left out of
    the low-quality rule.
    """
    if not matrices:
        return torch.zeros(0, 0, dtype=torch.int64)
    device = matrices[0].device
    counts = [len(m) for m in matrices]
    num_gt, num_anchors = max(counts), matrices[0].shape[1]
    matches = torch.full(
        (len(matrices), num_anchors),
        BELOW_LOW_THRESHOLD,
        dtype=torch.int64,
        device=device,
    )
    if num_gt == 0 or num_anchors == 0:
        return matches
    num_real = torch.tensor(counts, device=device)[:, None]  # [B, 1]
    real = torch.arange(num_gt, device=device) < num_real  # [B, G]: not padding
    iou = matrices[0].new_full((len(matrices), num_gt, num_anchors), -math.inf)
    iou[real] = torch.cat(matrices)

    best_iou, best_gt = iou.max(dim=1)  # [B, A]; the first gt on ties
    matches = torch.where(best_iou >= low_threshold, best_gt, matches)
    between = (best_iou >= low_threshold) & (best_iou < high_threshold)
    matches[between] = BETWEEN_THRESHOLDS
    if allow_low_quality_matches:
        best_per_gt = iou.max(dim=2, keepdim=True).values  # [B, G, 1]
        tied = ((iou == best_per_gt) & real[:, :, None]).any(dim=1)  # [B, A]
        matches = torch.where(tied, best_gt, matches)
    return matches
