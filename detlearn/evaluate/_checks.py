"""Input validation for detlearn.evaluate, which takes whole data sets.

Predictions and targets are lists of per-image dicts whose values may be
tensors (any device) or NumPy arrays. Shapes and dtypes are checked image by
image; values are checked once on the concatenated rows (``image_index[k]``
says which image row k came from), and the message names the first
offending image. As in :mod:`detlearn._checks`, whose generic checks these
build on (and pass on), a check raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

# the generic checks the evaluator uses too, so that it needs one _checks
from detlearn._checks import finite, positive_int, real_dtype, threshold

__all__ = [
    "area_rows",
    "box_rows",
    "choice",
    "crowd_rows",
    "detection_lists",
    "finite_rows",
    "flags",
    "iou_matrix",
    "positive_int",
    "pr_curve",
    "threshold",
]

_DETECTION_KEYS = {
    "predictions": ("boxes", "labels", "scores"),
    "targets": ("boxes", "labels"),
}


def _any_tensor(value: object, name: str) -> Tensor:
    """A tensor for a tensor, NumPy array or (nested) list; arrays are not copied."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value)  # torch rejects negative strides
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        kind = type(value).__name__
        raise ValueError(f"{name} must be a tensor or array, got {kind}") from err


def _per_box(value: object, name: str, n: int, kind: str) -> None:
    """Require shape ``[n]`` and a real (``kind='real'``) or integer dtype."""
    t = _any_tensor(value, name)
    if t.dim() != 1 or t.shape[0] != n:
        shape = list(t.shape)
        raise ValueError(f"{name} must have shape [{n}] (one per box), got {shape}")
    if kind == "integer" and (t.is_floating_point() or t.is_complex()):
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    if kind == "real":
        real_dtype(t, name)


def _image_dict(image: object, name: str, arg: str) -> None:
    """Require one image's dict: its keys, ``[N, 4]`` boxes, ``[N]`` the rest."""
    if not isinstance(image, Mapping):
        raise ValueError(f"{name} must be a dict, got {type(image).__name__}")
    keys = _DETECTION_KEYS[arg]
    missing = [key for key in keys if key not in image]
    if missing:
        raise ValueError(f"{name} is missing key(s) {missing}; expected {list(keys)}")
    b = _any_tensor(image["boxes"], f"{name}['boxes']")
    if b.dim() != 2 or b.shape[1] != 4:
        shape = list(b.shape)
        raise ValueError(f"{name}['boxes'] must have shape [N, 4], got {shape}")
    real_dtype(b, f"{name}['boxes']")
    n = b.shape[0]
    _per_box(image["labels"], f"{name}['labels']", n, "integer")
    if arg == "predictions":
        _per_box(image["scores"], f"{name}['scores']", n, "real")
        return
    for key, kind in (("iscrowd", "integer"), ("area", "real")):
        if key in image:
            _per_box(image[key], f"{name}['{key}']", n, kind)


def detection_lists(predictions: object, targets: object) -> None:
    """Require two equally long lists of per-image dicts in torchvision's format.

    predictions ``{'boxes': [N, 4], 'labels': int [N], 'scores': [N]}``;
    targets ``{'boxes': [M, 4], 'labels': int [M]}`` with optional
    ``'iscrowd'`` ``[M]`` (integers or bools) and ``'area'`` ``[M]``.
    """
    for arg, value in (("predictions", predictions), ("targets", targets)):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            kind = type(value).__name__
            message = f"{arg} must be a list with one dict per image"
            raise ValueError(f"{message}, got {kind}")
    if len(predictions) != len(targets):  # type: ignore[arg-type]
        raise ValueError(
            "predictions and targets must have the same length (one dict per "
            f"image), got {len(predictions)} and {len(targets)}"  # type: ignore[arg-type]
        )
    for arg, images in (("predictions", predictions), ("targets", targets)):
        for i, image in enumerate(images):  # type: ignore[arg-type]
            _image_dict(image, f"{arg}[{i}]", arg)


def _first_bad(bad: np.ndarray, image_index: np.ndarray) -> int | None:
    """Image of the first True row of ``bad``, or None."""
    rows = np.flatnonzero(bad.any(axis=1) if bad.ndim == 2 else bad)
    return None if len(rows) == 0 else int(image_index[rows[0]])


def finite_rows(
    values: np.ndarray,
    image_index: np.ndarray,
    arg: str,
    key: str,
) -> None:
    """Require finite values in the concatenated ``arg[i][key]`` rows (NumPy)."""
    i = _first_bad(~np.isfinite(values), image_index)
    if i is not None:
        raise ValueError(f"{arg}[{i}]['{key}'] must be finite, got NaN or inf")


def box_rows(values: np.ndarray, image_index: np.ndarray, arg: str) -> None:
    """Require finite xyxy rows ``[N, 4]``, ``x2 >= x1`` and ``y2 >= y1`` (NumPy)."""
    finite_rows(values, image_index, arg, "boxes")
    inverted = (values[:, 2] < values[:, 0]) | (values[:, 3] < values[:, 1])
    i = _first_bad(inverted, image_index)
    if i is not None:
        raise ValueError(
            f"{arg}[{i}]['boxes'] must be xyxy boxes with x2 >= x1 and y2 >= y1; "
            "some boxes are inverted (negative width or height)"
        )


def area_rows(values: np.ndarray, image_index: np.ndarray) -> None:
    """Require finite areas >= 0 in the concatenated ``targets[i]['area']`` rows."""
    finite_rows(values, image_index, "targets", "area")
    i = _first_bad(values < 0, image_index)
    if i is not None:
        raise ValueError(f"targets[{i}]['area'] must be >= 0, got a negative area")


def crowd_rows(values: np.ndarray, image_index: np.ndarray) -> None:
    """Require 0/1 flags in the concatenated ``targets[i]['iscrowd']`` rows."""
    i = _first_bad((values != 0) & (values != 1), image_index)
    if i is not None:
        raise ValueError(f"targets[{i}]['iscrowd'] must hold 0 or 1, got other values")


def choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Require one of ``choices`` (an AP method, an area range name)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def iou_matrix(value: object, name: str = "ious") -> Tensor:
    """Require a finite real matrix ``[D, G]`` (detections x ground truth boxes)."""
    t = _any_tensor(value, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape [D, G], got {list(t.shape)}")
    real_dtype(t, name)
    finite(t, name)
    return t


def flags(value: object, name: str, n: int) -> None:
    """Require ``n`` flags (bools or 0/1 integers), one per ground truth box."""
    _per_box(value, name, n, "integer")


def pr_curve(recall: object, precision: object) -> None:
    """Require two finite 1-D arrays of one length, recall non-decreasing."""
    r, p = _any_tensor(recall, "recall"), _any_tensor(precision, "precision")
    if r.dim() != 1 or r.shape != p.shape:
        raise ValueError(
            "recall and precision must be two 1-D arrays of one length, "
            f"got shapes {list(r.shape)} and {list(p.shape)}"
        )
    finite(r.double(), "recall")
    finite(p.double(), "precision")
    if r.numel() > 1 and bool((r[1:] < r[:-1]).any()):
        raise ValueError(
            "recall must be non-decreasing (points in decreasing score order)",
        )
