"""Dense windows: a window classifier slid over a photograph, at several scales.

The oldest answer to "how many boxes?": look at every square window of a
fixed size, at a fixed step, ask a classifier about each one, keep the
confident windows and suppress duplicates. Objects larger than the window are
found by shrinking the photo (an *image pyramid*) and sliding the same window
over every level.

* :func:`sliding_windows` lists the windows of one image as xyxy boxes;
  :func:`window_crops` cuts them out.
* :func:`window_scores` scores the windows one crop at a time;
  :func:`dense_window_scores` runs the same network once over the whole image
  (fully convolutionally) and maps its output map back to the same boxes.
* :func:`pyramid_scales`, :func:`image_pyramid` and :func:`rescale_boxes`
  build the pyramid and bring boxes back to the photo's own coordinates.
* :func:`pyramid_window_scores`, :func:`detect_windows` and
  :func:`mine_hard_negatives` put them together.

A *scorer* is any callable that maps images ``[B, C, H, W]`` to score maps
``[B, h, w]``, one score per window of size ``window`` at step ``stride``, so
``h = (H - window) // stride + 1`` (likewise ``w``). On a batch of crops of
exactly the window's size it returns ``[B, 1, 1]``: one score per crop. A
convolutional network without padding whose total stride is ``stride`` and
whose receptive field is ``window`` is such a scorer. Scorers are called under
``torch.no_grad()``.

Window ``(i, j)`` of an image (row i, column j) is the box
``(j * stride, i * stride, j * stride + window, i * stride + window)``; lists
of windows are row-major (row by row, then column), the order of a flattened
score map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detlearn import _checks
from detlearn.nms import nms

__all__ = [
    "Scorer",
    "sliding_windows",
    "window_crops",
    "window_scores",
    "dense_window_scores",
    "pyramid_scales",
    "image_pyramid",
    "rescale_boxes",
    "pyramid_window_scores",
    "detect_windows",
    "mine_hard_negatives",
]

Scorer = Callable[[Tensor], Tensor]
"""Images ``[B, C, H, W]`` -> score maps ``[B, h, w]`` (see the module docstring)."""


# --- checks -------------------------------------------------------------------


def _image(value: object, name: str = "image") -> Tensor:
    """Require a finite float image ``[C, H, W]``."""
    t = _checks.float_tensor(value, name)
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape [C, H, W], got {list(t.shape)}")
    return t


def _fits(size: tuple[int, int], window: int, name: str) -> None:
    """Require a ``window`` x ``window`` square to fit in an image of ``size``."""
    if window > size[0] or window > size[1]:
        raise ValueError(
            f"window ({window}) must fit in the {name} (height {size[0]}, "
            f"width {size[1]})"
        )


# --- the windows of one image -------------------------------------------------


def sliding_windows(
    image_size: tuple[int, int],
    window: int,
    stride: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Every ``window`` x ``window`` square at step ``stride``: xyxy ``[N, 4]``.

    ``image_size`` is ``(H, W)``. There are ``(H - window) // stride + 1`` rows
    and ``(W - window) // stride + 1`` columns of windows; window ``(i, j)`` is
    ``(j * stride, i * stride, j * stride + window, i * stride + window)`` and
    the list is row-major. Windows that would cross the right or bottom edge
    are not made (the last ``(H - window) % stride`` rows of pixels are seen
    by fewer windows).
    """
    height, width = _checks.grid_size(image_size, "image_size")
    window = _checks.positive_int(window, "window")
    stride = _checks.positive_int(stride, "stride")
    if window > min(height, width):
        raise ValueError(f"window ({window}) must fit in the image {image_size}")
    ys = torch.arange(0, height - window + 1, stride, dtype=dtype, device=device)
    xs = torch.arange(0, width - window + 1, stride, dtype=dtype, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # [rows, columns] each
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack((x, y, x + window, y + window), dim=1)


def window_crops(image: Tensor, window: int, stride: int) -> Tensor:
    """The windows of :func:`sliding_windows` cut out of ``image`` ``[C, H, W]``.

    Returns ``[N, C, window, window]`` in the same row-major order (a copy).
    """
    image = _image(image)
    window = _checks.positive_int(window, "window")
    stride = _checks.positive_int(stride, "stride")
    _fits(tuple(image.shape[1:]), window, "image")
    # unfold makes [C, rows, columns, window, window] views of the windows
    patches = image.unfold(1, window, stride).unfold(2, window, stride)
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, image.shape[0], window, window)


def window_scores(
    scorer: Scorer, image: Tensor, window: int, stride: int, batch_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Score every window by cropping it and asking ``scorer`` about the crop.

    Args:
        scorer: images ``[B, C, window, window]`` -> scores ``[B, 1, 1]``.
        image: ``[C, H, W]`` float.
        window, stride: the window's side and step, in pixels of ``image``.
        batch_size: crops per call of ``scorer`` (bounds the memory).

    Returns:
        ``(boxes, scores)``: xyxy ``[N, 4]`` of :func:`sliding_windows` (in
        ``image``'s pixels and dtype) and ``[N]`` scores, in the same order.
    """
    crops = window_crops(image, window, stride)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    scores = []
    with torch.no_grad():
        for batch in crops.split(batch_size):
            out = scorer(batch)
            if out.shape != (len(batch), 1, 1):
                raise ValueError(
                    f"scorer must return [B, 1, 1] for crops of the window's size, "
                    f"got {list(out.shape)} for {len(batch)} crops"
                )
            scores.append(out.reshape(-1))
    boxes = sliding_windows(
        tuple(image.shape[1:]), window, stride, dtype=image.dtype, device=image.device
    )
    return boxes, torch.cat(scores)


def dense_window_scores(
    scorer: Scorer, image: Tensor, window: int, stride: int
) -> tuple[Tensor, Tensor]:
    """Score every window with one call of ``scorer`` on the whole image.

    A convolutional network with total stride ``stride`` and receptive field
    ``window`` computes, at cell ``(i, j)`` of its output map, exactly what it
    computes on the crop of window ``(i, j)``, but shares the work of
    overlapping windows. The map is read back as boxes: cell ``(i, j)`` is the
    window ``(j * stride, i * stride, j * stride + window, i * stride + window)``.

    Args:
        scorer: images ``[1, C, H, W]`` -> score map ``[1, h, w]`` with
            ``h = (H - window) // stride + 1`` (likewise ``w``).
        image: ``[C, H, W]`` float.
        window, stride: the window and step that the scorer's map has.

    Returns:
        ``(boxes, scores)`` as :func:`window_scores` returns them (same boxes,
        same order).
    """
    image = _checks.float_tensor(image, "image")
    if image.dim() != 3:
        raise ValueError(f"image must have shape [C, H, W], got {list(image.shape)}")
    boxes = sliding_windows(
        tuple(image.shape[1:]), window, stride, dtype=image.dtype, device=image.device
    )
    rows = (image.shape[1] - window) // stride + 1
    columns = (image.shape[2] - window) // stride + 1
    with torch.no_grad():
        score_map = scorer(image[None])
    if score_map.shape != (1, rows, columns):
        raise ValueError(
            f"scorer must return a map [1, {rows}, {columns}] for a window of {window} "
            f"at stride {stride} on a {image.shape[1]} x {image.shape[2]} image, got "
            f"{list(score_map.shape)}: its window and stride are not the ones given"
        )
    return boxes, score_map.reshape(-1)


# --- the image pyramid --------------------------------------------------------


def pyramid_scales(
    window: int, min_size: float, max_size: float, factor: float = 1.2
) -> list[float]:
    """The scales at which a ``window`` covers ``min_size`` to ``max_size`` pixels.

    Level k shrinks the photo by ``s_k = window / (min_size * factor**k)``, so
    that a ``window``-pixel square on it covers ``min_size * factor**k`` pixels
    of the photo; levels are made while that size is at most ``max_size``
    (plus a part in a million, for rounding). ``min_size <= max_size`` and
    ``factor > 1`` are required.
    """
    window = _checks.positive_int(window, "window")
    min_size = _checks.positive(min_size, "min_size")
    max_size = _checks.positive(max_size, "max_size")
    factor = _checks.positive(factor, "factor")
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    if max_size < min_size:
        raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")
    scales, size = [], min_size
    while size <= max_size * (1 + 1e-6):
        scales.append(window / size)
        size *= factor
    return scales


def image_pyramid(image: Tensor, scales: Sequence[float]) -> list[Tensor]:
    """The image resized by each scale: a list of ``[C, h_k, w_k]``.

    Level k has ``h_k = round(H * scales[k])`` and ``w_k = round(W * scales[k])``
    (halves round up); the exact factors of a level are therefore ``h_k / H``
    and ``w_k / W``, which :func:`rescale_boxes` uses. Pixels are averaged over
    the area each new pixel covers (``F.interpolate(mode="area")``), which is
    meant for shrinking (scales <= 1): it does not alias. Scales > 1 repeat
    pixels.
    """
    image = _image(image)
    scales = _checks.positive_list(scales, "scales")
    height, width = image.shape[1:]
    levels = []
    for k, s in enumerate(scales):
        size = (math.floor(height * s + 0.5), math.floor(width * s + 0.5))
        if min(size) < 1:
            raise ValueError(f"scales[{k}] ({s}) shrinks the image to {size} pixels")
        levels.append(F.interpolate(image[None], size=size, mode="area")[0])
    return levels


def rescale_boxes(
    boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]
) -> Tensor:
    """Boxes of an image of ``from_size`` ``(h, w)`` in one of ``to_size`` ``(H, W)``.

    x coordinates are multiplied by ``W / w`` and y coordinates by ``H / h``:
    pixel edges map onto pixel edges, so a window on a pyramid level becomes
    the region of the photo that its pixels were averaged from.
    """
    boxes = _checks.boxes(boxes, "boxes")
    from_h, from_w = _checks.image_size(from_size, "from_size")
    to_h, to_w = _checks.image_size(to_size, "to_size")
    if min(from_h, from_w) <= 0:
        raise ValueError(f"from_size must be > 0, got {from_size!r}")
    factors = boxes.new_tensor(
        [to_w / from_w, to_h / from_h, to_w / from_w, to_h / from_h]
    )
    return boxes * factors


def pyramid_window_scores(
    scorer: Scorer,
    image: Tensor,
    window: int,
    stride: int,
    scales: Sequence[float],
    dense: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Score every window of every pyramid level, with boxes in the photo's pixels.

    Args:
        scorer: see the module docstring.
        image: ``[C, H, W]`` float, the photo.
        window, stride: in pixels of each level.
        scales: one per level (see :func:`pyramid_scales`); the window must fit
            in every level.
        dense: score with :func:`dense_window_scores` (one call per level)
            or, when ``False``, with :func:`window_scores` (crop by crop).

    Returns:
        ``(boxes, scores, levels)``: xyxy ``[N, 4]`` in the photo's pixels,
        ``[N]`` scores, int64 ``[N]`` level of each window; level by level,
        row-major within a level.
    """
    image = _image(image)
    score = dense_window_scores if dense else window_scores
    boxes, scores, levels = [], [], []
    for k, level in enumerate(image_pyramid(image, scales)):
        _fits(tuple(level.shape[1:]), window, f"pyramid level scales[{k}]")
        level_boxes, level_scores = score(scorer, level, window, stride)
        boxes.append(rescale_boxes(level_boxes, level.shape[1:], image.shape[1:]))
        scores.append(level_scores)
        levels.append(torch.full_like(level_scores, k, dtype=torch.int64))
    return torch.cat(boxes), torch.cat(scores), torch.cat(levels)


def detect_windows(
    scorer: Scorer,
    image: Tensor,
    window: int,
    stride: int,
    scales: Sequence[float],
    score_threshold: float,
    iou_threshold: float,
) -> dict[str, Tensor]:
    """Dense windows as a detector: score the pyramid, threshold, suppress duplicates.

    Keeps the windows whose score is greater than ``score_threshold``, then
    greedy NMS (:func:`detlearn.nms.nms`) at ``iou_threshold``.

    Returns:
        a detection dict in torchvision's format: ``boxes`` ``[K, 4]`` xyxy in
        the photo's pixels, ``scores`` ``[K]`` by decreasing score, ``labels``
        int64 ``[K]`` (all 0: the one class the scorer scores). No window
        above the threshold gives ``K = 0``.
    """
    score_threshold = _checks.number(score_threshold, "score_threshold")
    iou_threshold = _checks.threshold(iou_threshold, "iou_threshold")
    boxes, scores, _ = pyramid_window_scores(scorer, image, window, stride, scales)
    confident = scores > score_threshold
    boxes, scores = boxes[confident], scores[confident]
    keep = nms(boxes, scores, iou_threshold)
    labels = torch.zeros(len(keep), dtype=torch.int64, device=boxes.device)
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels}


def mine_hard_negatives(
    scorer: Scorer,
    images: Sequence[Tensor],
    window: int,
    stride: int,
    scales: Sequence[float],
    score_threshold: float,
    max_per_image: int,
) -> Tensor:
    """Crops of the highest-scoring windows of images that hold no object.

    In a photo with no object every window scored above ``score_threshold``
    is a false positive: a *hard negative*, a counter-example that the
    classifier gets wrong. Each image gives at most ``max_per_image`` of them,
    the highest-scoring first (over all its pyramid levels); levels the
    window does not fit in are skipped here, so small photos can take part.

    Returns:
        ``[N, C, window, window]`` crops, cut from the pyramid levels (the
        classifier's input size), image by image.
    """
    window = _checks.positive_int(window, "window")
    stride = _checks.positive_int(stride, "stride")
    score_threshold = _checks.number(score_threshold, "score_threshold")
    max_per_image = _checks.positive_int(max_per_image, "max_per_image")
    crops = []
    for n, image in enumerate(images):
        image = _image(image, f"images[{n}]")
        found, found_scores = [], []
        for level in image_pyramid(image, scales):
            if window > min(level.shape[1:]):
                continue
            boxes, scores = dense_window_scores(scorer, level, window, stride)
            hits = (scores > score_threshold).nonzero().flatten().tolist()
            corners = boxes[hits, :2].long().tolist()  # (x1, y1) of each hit
            found += [level[:, y : y + window, x : x + window] for x, y in corners]
            found_scores.append(scores[hits])
        if found:
            order = torch.cat(found_scores).argsort(descending=True, stable=True)
            crops += [found[i] for i in order[:max_per_image].tolist()]
    if not crops:
        like = images[0] if len(images) else torch.zeros(1)
        channels = like.shape[0] if like.dim() == 3 else 1
        return like.new_zeros(0, channels, window, window)
    return torch.stack(crops)
