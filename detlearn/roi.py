"""Region-of-interest pooling: a fixed grid of features from a box of any size.

A second detection stage looks again at each proposal: it needs the features
inside the box as a fixed ``h x w`` grid, whatever the box's size. Two ways,
both with torchvision's arguments and box forms (chapter 13):

* :func:`roi_pool` (Fast R-CNN) rounds the box to whole feature cells, cuts it
  into ``h x w`` bins, rounded outwards to whole cells too, and keeps each bin's
  maximum. The rounding moves the box by up to half a cell: at stride 16, eight
  pixels.
* :func:`roi_align` (Mask R-CNN) rounds nothing: each bin averages a few
  *bilinear samples* taken at exact, fractional positions.

Bilinear sampling is separable: the value at ``(y, x)`` is
``sum_r sum_c t(y - r) f[r, c] t(x - c)`` with the tent ``t(d) = max(0, 1 - |d|)``.
So an average of samples over a bin is a weighted sum of rows (weights along y)
of weighted sums of columns (weights along x), and a whole RoI is two small
matrix products: ``out[k, c] = Wy[k] @ input[b, c] @ Wx[k].T``, with ``Wy[k]``
(``[h, H]``) and ``Wx[k]`` (``[w, W]``) from :func:`sampling_weights`.

Both follow torchvision's CPU kernels exactly (``csrc/ops/cpu/roi_align_kernel.cpp``
and ``roi_pool_kernel.cpp``), corner cases included: a sample more than one cell
outside the map counts as zero, one less than a cell outside reads the edge;
with ``aligned=False`` a box is at least one cell long; an empty pooling bin is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detlearn import _checks

__all__ = ["bin_edges", "roi_align", "roi_pool", "sampling_weights"]

Boxes = Tensor | Sequence[Tensor]


def sampling_weights(
    start: Tensor,
    end: Tensor,
    bins: int,
    size: int,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Weights ``[K, bins, size]`` that average bilinear samples along one axis.

    Args:
        start, end: ``[K]`` edges of each RoI along the axis, in cells of the
            feature map (already scaled, and shifted by half a cell if aligned).
        bins: how many output cells the RoI is cut into along this axis.
        size: the feature map's length along the axis (H or W).
        sampling_ratio: samples per bin; ``<= 0`` takes ``ceil(RoI length / bins)``,
            about one sample per feature cell.
        aligned: if ``False`` (the legacy convention) a RoI is at least one cell long.

    Row ``[k, p]`` holds, for every feature cell, its weight in bin ``p``: the
    tents of the bin's samples, averaged.
    """
    length = end - start
    if not aligned:
        length = length.clamp(min=1.0)
    bin_size = length / bins  # [K]
    if sampling_ratio > 0:
        grid = torch.full_like(length, sampling_ratio)
    else:
        grid = torch.ceil(length / bins)
    grid = grid[:, None, None]  # [K, 1, 1]
    most = int(grid.max()) if len(grid) else 0
    # a zero-length RoI (aligned) takes no sample: its bins are 0, as in torchvision
    count = grid.clamp(min=1)
    p = torch.arange(bins, device=start.device, dtype=start.dtype)[:, None]  # [bins, 1]
    i = torch.arange(max(most, 1), device=start.device, dtype=start.dtype)  # [G]
    b = bin_size[:, None, None]
    # the sample positions, in the order of torchvision's arithmetic: [K, bins, G]
    pos = start[:, None, None] + p * b + (i + 0.5) * b / count
    used = (i < grid) & (pos >= -1) & (pos <= size)  # samples beyond a cell outside: 0
    pos = pos.clamp(0, size - 1)  # within a cell outside: the edge's value
    cells = torch.arange(size, device=start.device, dtype=start.dtype)
    tent = (1 - (pos[..., None] - cells).abs()).clamp(min=0)  # [K, bins, G, size]
    return (tent * used[..., None]).sum(2) / count


def roi_align(
    input: Tensor,
    boxes: Boxes,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign: average bilinear samples in each of ``h x w`` bins of every box.

    Args:
        input: features ``[N, C, H, W]`` (float32 or float64).
        boxes: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``, or a list of
            ``[K_i, 4]`` xyxy boxes, one per image; in image pixels.
        output_size: ``h`` (square) or ``(h, w)``.
        spatial_scale: feature cells per pixel (``1 / stride``).
        sampling_ratio: samples per bin along each axis; ``<= 0`` adapts it to the
            box, ``ceil(box length in cells / bins)``.
        aligned: ``True`` shifts the box by half a cell, so that cell ``j`` covers
            pixels ``[j, j + 1) / scale`` (pixel centres at ``j + 0.5``);
            ``False`` is the original, half-a-cell-off convention.

    Returns:
        ``[K, C, h, w]`` in ``input``'s dtype, equal to ``torchvision.ops.roi_align``.
        Gradients flow to ``input`` (not to the boxes, as in torchvision).
    """
    rois = _checks.roi_boxes(boxes, "boxes", input, "input")
    h, w = _checks.output_size(output_size, "output_size")
    scale = _checks.positive(spatial_scale, "spatial_scale")
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:].detach() * scale - offset).unbind(1)
    weights_y = sampling_weights(y1, y2, h, input.shape[2], sampling_ratio, aligned)
    weights_x = sampling_weights(x1, x2, w, input.shape[3], sampling_ratio, aligned)
    image = rois[:, 0].long()
    out = input.new_zeros((len(rois), input.shape[1], h, w))
    for b in image.unique().tolist():
        k = image == b
        # out[k, c] = Wy[k] @ input[b, c] @ Wx[k].T: rows, then columns
        out[k] = torch.einsum("kph,chw,kqw->kcpq", weights_y[k], input[b], weights_x[k])
    return out


def roi_pool(
    input: Tensor,
    boxes: Boxes,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoIPool: the maximum of each of ``h x w`` bins, box and bins rounded to cells.

    Arguments as :func:`roi_align`. The box's corners are rounded to the nearest
    cell (halves away from zero) and its last cell counts (``x2 - x1 + 1`` cells);
    bin ``p`` spans cells ``floor(p * L / h)`` to ``ceil((p + 1) * L / h)``
    (exclusive), clipped to the map; an empty bin gives 0.

    Returns:
        ``[K, C, h, w]``, equal to ``torchvision.ops.roi_pool``; the gradient goes
        to each bin's (first) maximum.
    """
    rois = _checks.roi_boxes(boxes, "boxes", input, "input")
    h, w = _checks.output_size(output_size, "output_size")
    scale = _checks.positive(spatial_scale, "spatial_scale")
    v = rois[:, 1:].detach() * scale
    corners = torch.where(  # C's round(): halves away from zero
        (v - v.trunc()).abs() == 0.5, v.trunc() + v.sign(), v.round()
    ).long()
    out = input.new_zeros((len(rois), input.shape[1], h, w))
    for k, (x1, y1, x2, y2) in enumerate(corners.tolist()):
        rows = bin_edges(y1, y2, h, input.shape[2], input.dtype)
        cols = bin_edges(x1, x2, w, input.shape[3], input.dtype)
        for p, (r0, r1) in enumerate(rows):
            for q, (c0, c1) in enumerate(cols):
                if r1 > r0 and c1 > c0:
                    region = input[int(rois[k, 0]), :, r0:r1, c0:c1]
                    out[k, :, p, q] = region.flatten(1).max(1).values
    return out


def bin_edges(
    first: int, last: int, bins: int, size: int, dtype: torch.dtype = torch.float32
) -> list[tuple[int, int]]:
    """RoIPool's ``(start, end)`` cells of each bin along one axis, clipped to ``size``.

    ``first`` and ``last`` are the RoI's rounded first and last cells; the bin
    length ``(last - first + 1) / bins`` is computed in ``dtype``, as torchvision
    does, so that its floors and ceilings land on the same cells.
    """
    length = max(last - first + 1, 1)
    bin_size = torch.tensor(length, dtype=dtype) / bins
    p = torch.arange(bins, dtype=dtype)
    starts = (torch.floor(p * bin_size).long() + first).clamp(0, size)
    ends = (torch.ceil((p + 1) * bin_size).long() + first).clamp(0, size)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))
