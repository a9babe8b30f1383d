"""Fast exact greedy NMS: the kernels behind ``detlearn.nms.nms`` and ``batched_nms``.

``detlearn.nms.nms_reference`` defines the result: visit the boxes by
decreasing score (a stable sort, so ties go by increasing index), keep a box
unless a kept box overlaps it with IoU > threshold. These kernels give the
same indices, faster:

* :func:`nms` visits the boxes in tiles of ``tile``. Inside a tile the greedy
  rule runs sequentially on a small ``tile x tile`` table of "IoU >
  threshold", whose rows are Python integers used as bit sets; then the
  tile's kept boxes suppress all later boxes in one vectorised step, and
  suppressed boxes are dropped before the next tile. It never builds an
  N x N matrix.
* :func:`batched_nms` runs the greedy rule within each group (class). Groups
  of up to ``small_group`` boxes are laid out in zero-padded tables and
  decided many at once; larger groups are tiled one by one.

Both decide their small tables with a short sequential loop. On the CPU that
loop runs in numpy and Python integers; for tensors elsewhere (CUDA) the same
loop runs as tensor operations on the device (:func:`_greedy_on_groups_tensor`),
so no table is copied to the host. ``tensor_only=True`` forces that path on the
CPU too, which is how the tests check that both give the same indices.

The tuning arguments (``tile``, ``block``, ``small_group``, ``group_table``,
``tensor_only``) change the speed, never the result; tests pass small ones to
exercise the bookkeeping.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from detlearn._kernels.boxes import BLOCK, columns, iou_columns

# A tile x tile table stays below PyTorch's parallel grain (see BLOCK).
TILE = 181  # boxes decided per step (181 * 181 < 32768)
SMALL_GROUP = 1024  # batched_nms: larger groups (classes) are tiled one by one
GROUP_TABLE = 1 << 22  # batched_nms: most values in one batch of per-group tables


def threshold_in(dtype: torch.dtype, iou_threshold: float) -> float:
    """The threshold to compare IoU values of ``dtype`` against.

    torchvision's kernel compares a float32 IoU with the *double* threshold.
    PyTorch would round the threshold to float32 first, and for a threshold
    such as 0.1 (not a float32) that flips ``iou > threshold`` for the float32
    just above it. Rounding the threshold *down* to a float32 t gives the same
    test without converting the IoU: a float32 x is > the double exactly when
    x > t.
    """
    if dtype != torch.float32:
        return iou_threshold
    t = np.float32(iou_threshold)
    if float(t) > iou_threshold:  # compare as Python floats, i.e. doubles
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


def _empty_indices(device: torch.device) -> Tensor:
    return torch.empty(0, dtype=torch.int64, device=device)


def _suppressed_by(kept: Tensor, later: Tensor, threshold: float, block: int) -> Tensor:
    """bool ``[M]``: later boxes that overlap any kept box by more than threshold.

    Boxes are columns ``[5, K]`` and ``[5, M]``. Done in blocks of at most
    ``block`` IoU values, so memory stays small however many boxes there are.
    Each later box needs only its largest IoU with the kept boxes; taking the
    column maximum first and comparing once is cheaper than comparing every
    value.
    """
    if kept.shape[1] == 0:
        return torch.zeros(later.shape[1], dtype=torch.bool, device=later.device)
    step = max(1, block // kept.shape[1])
    blocks = [
        iou_columns(kept, part).amax(dim=0) > threshold
        for part in later.split(step, dim=1)
    ]
    return torch.cat(blocks) if len(blocks) != 1 else blocks[0]


def _tensor_only(device: torch.device, tensor_only: bool | None) -> bool:
    """Whether to decide the tables on the device: by default, off the CPU."""
    return device.type != "cpu" if tensor_only is None else tensor_only


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


def _greedy_on_groups_tensor(over: Tensor) -> Tensor:
    """:func:`_greedy_on_groups` in tensor operations, where ``over`` lives.

    bool ``[G, M, M]`` -> bool ``[G, M]``. The same loop down the M positions,
    each step a few operations on the device and none of them a read by the
    host, so a GPU runs the whole loop without waiting for it.
    """
    removed = torch.zeros(over.shape[:2], dtype=torch.bool, device=over.device)
    keep = torch.zeros_like(removed)
    for i in range(over.shape[1]):
        keep_i = ~removed[:, i]
        keep[:, i] = keep_i
        removed |= over[:, i] & keep_i[:, None]
    return keep


def _greedy(
    boxes: Tensor,
    scores: Tensor,
    threshold: float,
    tile: int,
    block: int,
    tensor_only: bool | None = None,
) -> Tensor:
    """Greedy NMS, tile by tile, with a threshold from :func:`threshold_in`;
    returns the kept indices in visiting order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    index, cols = order, columns(boxes.index_select(0, order))
    on_device = _tensor_only(boxes.device, tensor_only)
    kept = []
    while len(index) > 0:
        tiled, tile_index = cols[:, :tile], index[:tile]
        over = iou_columns(tiled, tiled) > threshold
        if on_device:
            keep = torch.nonzero(_greedy_on_groups_tensor(over[None])[0]).squeeze(1)
        else:
            keep = _greedy_on_tile(over)
        kept.append(tile_index[keep])
        index, cols = index[tile:], cols[:, tile:]
        if len(index) > 0:
            kept_cols = tiled.index_select(1, keep)
            alive = torch.nonzero(~_suppressed_by(kept_cols, cols, threshold, block))
            alive = alive.squeeze(1)
            index, cols = index.index_select(0, alive), cols.index_select(1, alive)
    return torch.cat(kept) if kept else _empty_indices(order.device)


def nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    *,
    tile: int = TILE,
    block: int = BLOCK,
    tensor_only: bool | None = None,
) -> Tensor:
    """Indices int64 ``[K]`` kept by greedy NMS of valid boxes ``[N, 4]`` with
    scores ``[N]``, in visiting order (decreasing score, ties by index)."""
    threshold = threshold_in(boxes.dtype, iou_threshold)
    return _greedy(boxes, scores, threshold, max(1, tile), block, tensor_only)


def _greedy_on_groups(over: np.ndarray) -> np.ndarray:
    """Greedy NMS in G groups at once: bool ``[G, M, M]`` tables -> bool ``[G, M]``.

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


def _per_group(
    boxes: Tensor,
    order: Tensor,
    starts: Tensor,
    counts: Tensor,
    threshold: float,
    block: int,
    tensor_only: bool | None = None,
) -> Tensor:
    """Greedy NMS in each of a few groups of similar size, all at once.

    Group g's boxes are ``order[starts[g] : starts[g] + counts[g]]``, by
    decreasing score. They are laid out in a zero-padded ``[G, M]`` table
    (padding has zero area, so it never suppresses), the ``[G, M, M]`` IoU
    tables are computed ``block`` values at a time (small enough to stay in
    the CPU cache) and :func:`_greedy_on_groups` decides every group
    together. Returns the kept indices.
    """
    device = order.device
    num_groups, size = len(counts), int(counts.max())
    group = torch.repeat_interleave(torch.arange(num_groups, device=device), counts)
    position = (
        torch.arange(len(group), device=device) - (counts.cumsum(0) - counts)[group]
    )
    index = order[starts[group] + position]
    table = boxes.new_zeros(5, num_groups, size)
    table[:, group, position] = columns(boxes.index_select(0, index))
    step = max(1, block // size**2)
    overs = [iou_columns(part, part) > threshold for part in table.split(step, dim=1)]
    if _tensor_only(device, tensor_only):
        keep = _greedy_on_groups_tensor(torch.cat(overs))
    else:
        over = np.concatenate([over.cpu().numpy() for over in overs])
        keep = torch.from_numpy(_greedy_on_groups(over)).to(device)
    return index[keep.flatten()[group * size + position]]


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    iou_threshold: float,
    *,
    tile: int = TILE,
    block: int = BLOCK,
    small_group: int = SMALL_GROUP,
    group_table: int = GROUP_TABLE,
    tensor_only: bool | None = None,
) -> Tensor:
    """Greedy NMS within each group of ``groups`` (int ``[N]``); returns the kept
    indices int64 ``[K]`` in no particular order.

    Classes usually hold tens to hundreds of boxes each, too few for the tiles
    of :func:`nms` to pay off one class at a time. So groups of up to
    ``small_group`` boxes are sorted by size and handled in batches by
    :func:`_per_group` (each batch's padded tables hold at most
    ``group_table`` values, or one group); larger groups are tiled.
    """
    threshold = threshold_in(boxes.dtype, iou_threshold)
    tile = max(1, tile)
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(groups[order], stable=True).indices]  # by group, score
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)
    starts = counts.cumsum(0) - counts
    kept = []
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        if count > small_group:
            index = order[start : start + count]
            group_boxes = boxes.index_select(0, index)
            greedy = _greedy(
                group_boxes, scores[index], threshold, tile, block, tensor_only
            )
            kept.append(index[greedy])
    small = torch.nonzero(counts <= small_group).squeeze(1)
    small = small[torch.sort(counts[small], stable=True).indices]
    sizes = counts[small].tolist()
    first = 0
    while first < len(small):
        last = first + 1  # the batch grows while its padded tables fit
        while (
            last < len(small) and (last + 1 - first) * sizes[last] ** 2 <= group_table
        ):
            last += 1
        batch = small[first:last]
        batch_starts, batch_counts = starts[batch], counts[batch]
        kept.append(
            _per_group(
                boxes, order, batch_starts, batch_counts, threshold, block, tensor_only
            )
        )
        first = last
    return torch.cat(kept) if kept else _empty_indices(boxes.device)
