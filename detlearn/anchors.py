"""Anchors: the grid of reference boxes, box deltas, and matching.

* :func:`make_anchors` lays ``len(sizes) * len(aspect_ratios)`` boxes on every
  cell of a feature map.
* :func:`encode_boxes` / :func:`decode_boxes` turn a box into the offsets
  ``(dx, dy, dw, dh)`` relative to an anchor and back, as torchvision's
  ``BoxCoder.encode_single`` / ``decode_single``.
* :class:`Matcher` assigns each anchor a ground-truth box, the background, or
  "ignore", from an IoU matrix, as torchvision's ``Matcher``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detlearn import _checks
from detlearn._kernels import matching

__all__ = ["make_anchors", "encode_boxes", "decode_boxes", "Matcher"]


# --- the anchor grid ----------------------------------------------------------


def make_anchors(
    feature_size: tuple[int, int],
    stride: int | float | tuple[float, float],
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Anchors ``[H * W * A, 4]`` (xyxy) on a map of ``feature_size = (H, W)`` cells.

    Cell (i, j) of the map (row i, column j) sees the image around
    ``((j + 0.5) * sx, (i + 0.5) * sy)``, where ``stride`` is ``s`` or
    ``(sy, sx)``. Each cell gets ``A = len(sizes) * len(aspect_ratios)``
    anchors centred there: for ratios in order (outer) and sizes in order
    (inner), the box of area ``s * s`` with ``height / width = r``, so
    ``w = s / sqrt(r)`` and ``h = s * sqrt(r)``. Rows are ordered by location
    (row, then column), then by that anchor order, which matches a dense head
    whose output is reshaped ``[H, W, A, ...]``.

    Values are computed in float64 and converted to ``dtype`` once; they are
    not rounded to integers (torchvision's ``AnchorGenerator`` rounds its
    base anchors and puts centres at ``j * sx`` instead).
    """
    height, width = _checks.grid_size(feature_size, "feature_size")
    sy, sx = _checks.number_pair(stride, "stride")
    sizes = _checks.positive_list(sizes, "sizes")
    aspect_ratios = _checks.positive_list(aspect_ratios, "aspect_ratios")

    # one cell's A anchors, centred on (0, 0): ratios outer, sizes inner
    s = torch.tensor(sizes, dtype=torch.float64)
    root_r = torch.tensor(aspect_ratios, dtype=torch.float64).sqrt()
    w = (s[None, :] / root_r[:, None]).reshape(-1)  # [A]
    h = (s[None, :] * root_r[:, None]).reshape(-1)  # [A]
    cell_anchors = torch.stack((-w, -h, w, h), dim=1) / 2  # [A, 4]

    # the H * W cell centres, row by row
    cy = (torch.arange(height, dtype=torch.float64) + 0.5) * sy  # [H]
    cx = (torch.arange(width, dtype=torch.float64) + 0.5) * sx  # [W]
    y, x = torch.meshgrid(cy, cx, indexing="ij")  # [H, W] each
    x, y = x.reshape(-1), y.reshape(-1)
    centres = torch.stack((x, y, x, y), dim=1)  # [H * W, 4]

    anchors = centres[:, None, :] + cell_anchors[None, :, :]  # [H * W, A, 4]
    return anchors.reshape(-1, 4).to(dtype=dtype, device=device)


# --- box deltas ---------------------------------------------------------------


def encode_boxes(
    gt_boxes: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """Deltas ``[N, 4]`` that take ``anchors[i]`` to ``gt_boxes[i]`` (xyxy ``[N, 4]``).

    With centres (x, y) and sizes (w, h) of the anchor (a) and the box (g)::

        dx = wx * (x_g - x_a) / w_a      dw = ww * log(w_g / w_a)
        dy = wy * (y_g - y_a) / h_a      dh = wh * log(h_g / h_a)

    Offsets are relative to the anchor's size, so they mean the same for
    small and large anchors; the weights scale them to a comfortable range
    for a regression head (Faster R-CNN uses (10, 10, 5, 5)). Equals
    ``torchvision.models.detection._utils.BoxCoder(weights).encode_single``.
    Both sets of boxes need width and height > 0; anchors are cast to the
    dtype of ``gt_boxes``.
    """
    gt_boxes = _checks.boxes(gt_boxes, "gt_boxes")
    anchors = _checks.boxes(anchors, "anchors").to(gt_boxes.dtype)
    _checks.same_length(gt_boxes, "gt_boxes", anchors, "anchors")
    _checks.positive_sides(gt_boxes, "gt_boxes")
    _checks.positive_sides(anchors, "anchors")
    wx, wy, ww, wh = _checks.box_weights(weights)

    a_w = anchors[:, 2] - anchors[:, 0]
    a_h = anchors[:, 3] - anchors[:, 1]
    a_x = anchors[:, 0] + 0.5 * a_w
    a_y = anchors[:, 1] + 0.5 * a_h
    g_w = gt_boxes[:, 2] - gt_boxes[:, 0]
    g_h = gt_boxes[:, 3] - gt_boxes[:, 1]
    g_x = gt_boxes[:, 0] + 0.5 * g_w
    g_y = gt_boxes[:, 1] + 0.5 * g_h

    dx = wx * (g_x - a_x) / a_w
    dy = wy * (g_y - a_y) / a_h
    dw = ww * torch.log(g_w / a_w)
    dh = wh * torch.log(g_h / a_h)
    return torch.stack((dx, dy, dw, dh), dim=1)


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = math.log(1000 / 16),
) -> Tensor:
    """Boxes ``[N, 4]`` (xyxy) from deltas ``[N, 4]`` relative to anchors ``[N, 4]``.

    The inverse of :func:`encode_boxes`: ``x = x_a + dx / wx * w_a`` and
    ``w = w_a * exp(dw / ww)`` (likewise y, h). Before the exponential,
    ``dw / ww`` and ``dh / wh`` are capped at ``clip`` (default
    ``log(1000 / 16)``: at most 62.5 times the anchor) so that an untrained
    head cannot overflow; pass ``clip=math.inf`` for no cap. Equals
    ``BoxCoder(weights, clip).decode_single(deltas, anchors)``; anchors are
    cast to the dtype of ``deltas``.
    """
    deltas = _checks.float_tensor(deltas, "deltas")
    if deltas.dim() != 2 or deltas.shape[-1] != 4:
        raise ValueError(f"deltas must have shape [N, 4], got {list(deltas.shape)}")
    anchors = _checks.boxes(anchors, "anchors").to(deltas.dtype)
    _checks.same_length(deltas, "deltas", anchors, "anchors")
    wx, wy, ww, wh = _checks.box_weights(weights)
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or math.isnan(clip):
        raise ValueError(f"clip must be a number (math.inf for no cap), got {clip!r}")

    a_w = anchors[:, 2] - anchors[:, 0]
    a_h = anchors[:, 3] - anchors[:, 1]
    a_x = anchors[:, 0] + 0.5 * a_w
    a_y = anchors[:, 1] + 0.5 * a_h
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = torch.clamp(deltas[:, 2] / ww, max=clip)
    dh = torch.clamp(deltas[:, 3] / wh, max=clip)

    x = dx * a_w + a_x
    y = dy * a_h + a_y
    half_w = 0.5 * (torch.exp(dw) * a_w)
    half_h = 0.5 * (torch.exp(dh) * a_h)
    return torch.stack((x - half_w, y - half_h, x + half_w, y + half_h), dim=1)


# --- matching -----------------------------------------------------------------


class Matcher:
    """Assign each anchor a ground-truth box from an IoU matrix ``[G, A]``.

    Equal to ``torchvision.models.detection._utils.Matcher`` (the same
    arguments, codes and rules, stated in :meth:`__call__`) except for empty
    input, where torchvision raises: G = 0 gives all -1 (an image with no
    objects is all background) and A = 0 an empty result.
    :meth:`match_batch` matches the matrices of several images at once.
    """

    BELOW_LOW_THRESHOLD = -1  # background
    BETWEEN_THRESHOLDS = -2  # ignored in the loss

    def __init__(
        self,
        high_threshold: float,
        low_threshold: float,
        allow_low_quality_matches: bool = False,
    ) -> None:
        self.high_threshold = _checks.threshold(high_threshold, "high_threshold")
        self.low_threshold = _checks.threshold(low_threshold, "low_threshold")
        if self.low_threshold > self.high_threshold:
            raise ValueError(
                "low_threshold must be <= high_threshold, "
                f"got {low_threshold} > {high_threshold}"
            )
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"Matcher(high_threshold={self.high_threshold}, "
            f"low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """Match one image: IoU ``[G, A]`` (gt by anchor) -> int64 ``[A]``.

        Each anchor (column) takes its best gt (the first one on ties), and:

        * IoU >= ``high_threshold``: that gt's index (a positive);
        * IoU < ``low_threshold``: ``BELOW_LOW_THRESHOLD`` = -1 (background);
        * in between: ``BETWEEN_THRESHOLDS`` = -2 (ignored).

        With ``allow_low_quality_matches``, every anchor whose IoU with some gt
        equals that gt's best IoU (all tied anchors) gets *its own* best gt
        even below ``high_threshold``, as torchvision does; a gt whose best IoU
        is 0 does this for every anchor. G = 0 gives all -1, A = 0 ``[0]``.
        """
        iou = _checks.matrix(match_quality_matrix, "match_quality_matrix")
        num_gt, num_anchors = iou.shape
        if num_gt == 0 or num_anchors == 0:  # no objects: all background
            return torch.full((num_anchors,), -1, dtype=torch.int64, device=iou.device)

        best_iou, best_gt = iou.max(dim=0)  # [A]: each anchor's best gt
        matches = best_gt.clone()
        matches[best_iou < self.high_threshold] = self.BETWEEN_THRESHOLDS
        matches[best_iou < self.low_threshold] = self.BELOW_LOW_THRESHOLD

        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=1, keepdim=True).values  # [G, 1]
            tied = (iou == best_per_gt).any(dim=0)  # [A]: tied for some gt's best
            matches[tied] = best_gt[tied]  # its own best gt, as in torchvision
        return matches

    def match_batch(self, match_quality_matrices: Sequence[Tensor]) -> Tensor:
        """int64 ``[B, A]``: row b is ``self(match_quality_matrices[b])``.

        The images' ``[G_b, A]`` matrices (one A, any G_b) are matched in one
        go, as one ``[B, max G_b, A]`` tensor padded with ``-inf`` (never an
        anchor's best, left out of the low-quality rule), by a fast kernel that
        gives exactly the results of :meth:`__call__`.
        """
        name = "match_quality_matrices"
        matrices = [_checks.matrix(m, name) for m in match_quality_matrices]
        if len({m.shape[1] for m in matrices}) > 1:
            raise ValueError(f"{name} must all have the same number of columns")
        if len({m.dtype for m in matrices}) > 1:  # stacking would cast: one by one
            return torch.stack([self(m) for m in matrices])
        return matching.match_batch(
            matrices,
            self.high_threshold,
            self.low_threshold,
            self.allow_low_quality_matches,
        )
