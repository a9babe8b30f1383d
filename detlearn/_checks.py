"""Input validation for detlearn's public functions, in one place.

Every public entry point calls these checks first; the helpers behind it then
trust their input. A check either returns the value to use (for boxes: the
tensor, promoted to float32 when it holds integers) or raises ``ValueError``
with a message that names the argument and says what was expected. Nothing
is clamped or reordered here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
REDUCTIONS = ("none", "mean", "sum")


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def tensor(value: object, name: str) -> Tensor:
    """Require a ``torch.Tensor``."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def real_dtype(t: Tensor, name: str) -> None:
    """Reject bool and complex dtypes: boxes, scores and IoUs are real numbers."""
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")


def as_float(t: Tensor, name: str) -> Tensor:
    """Keep float32/float64; promote integers (and float16/bfloat16) to float32.

    Readers write ``torch.tensor([[0, 0, 10, 10]])``, which is int64; box
    geometry divides, so such input is computed in float32, as torchvision does.
    """
    if t.dtype in (torch.float32, torch.float64):
        return t
    real_dtype(t, name)
    return t.float()


def finite(t: Tensor, name: str) -> None:
    """Reject NaN and +-inf."""
    if t.is_floating_point() and t.numel() > 0 and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")


def box_format(fmt: object, name: str) -> str:
    """Require one of ``'xyxy'``, ``'xywh'``, ``'cxcywh'``."""
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    return fmt  # type: ignore[return-value]


def boxes(value: object, name: str, fmt: str = "xyxy", allow_single: bool = False) -> Tensor:
    """Require finite boxes ``[N, 4]`` (or ``[4]`` with ``allow_single``) with
    non-negative width and height in format ``fmt``; return them as float."""
    t = as_float(tensor(value, name), name)
    ranks_ok = t.dim() == 2 or (allow_single and t.dim() == 1)
    if not ranks_ok or t.shape[-1] != 4:
        expected = "[N, 4] or [4]" if allow_single else "[N, 4]"
        raise ValueError(f"{name} must have shape {expected}, got {_shape(t)}")
    finite(t, name)
    if fmt == "xyxy":
        w, h = t[..., 2] - t[..., 0], t[..., 3] - t[..., 1]
        what = "x2 >= x1 and y2 >= y1"
    else:  # 'xywh' and 'cxcywh' store the width and height themselves
        w, h = t[..., 2], t[..., 3]
        what = "width >= 0 and height >= 0"
    if not bool(((w >= 0) & (h >= 0)).all()):
        raise ValueError(f"{name} must be {fmt} boxes with {what}; some boxes are inverted")
    return t


def same_length(a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    """Require ``len(a) == len(b)`` (paired inputs)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same length, got {_shape(a)} and {_shape(b)}"
        )


def same_shape(a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    """Require equal shapes (elementwise losses)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape, got {_shape(a)} and {_shape(b)}"
        )


def scores(value: object, name: str, n: int) -> Tensor:
    """Require finite real scores ``[n]``."""
    t = tensor(value, name)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one per box), got {_shape(t)}")
    real_dtype(t, name)
    finite(t, name)
    return t


def labels(value: object, name: str, n: int) -> Tensor:
    """Require integer class indices ``[n]``."""
    t = tensor(value, name)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one per box), got {_shape(t)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    return t


def number(value: object, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """Require a finite real number in ``[low, high]``; return it as a float."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value}")
    return value


def positive(value: object, name: str) -> float:
    """Require a finite number > 0."""
    value = number(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def threshold(value: object, name: str) -> float:
    """Require an IoU-like threshold in ``[0, 1]``."""
    return number(value, name, 0.0, 1.0)


def reduction(value: object, name: str = "reduction") -> str:
    """Require ``'none'``, ``'mean'`` or ``'sum'``."""
    if value not in REDUCTIONS:
        raise ValueError(f"{name} must be one of {REDUCTIONS}, got {value!r}")
    return value  # type: ignore[return-value]


def image_size(value: object, name: str = "size") -> tuple[float, float]:
    """Require ``(height, width)``: two finite numbers >= 0."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be (height, width), got {value!r}")
    height = number(value[0], f"{name}[0] (height)", low=0.0)
    width = number(value[1], f"{name}[1] (width)", low=0.0)
    return height, width


def pair(value: object, name: str) -> tuple[float, float]:
    """Require one positive number or two, e.g. a stride ``s`` or ``(sy, sx)``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be a number or a pair of numbers, got {value!r}")
    return positive(value[0], f"{name}[0]"), positive(value[1], f"{name}[1]")


def grid_size(value: object, name: str) -> tuple[int, int]:
    """Require ``(H, W)``: two integers >= 0."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be (height, width), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must hold two integers >= 0, got {value!r}")
        out.append(v)
    return out[0], out[1]


def positive_list(value: object, name: str) -> list[float]:
    """Require a non-empty sequence of finite numbers > 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers > 0, got {value!r}")
    return [positive(v, f"{name}[{k}]") for k, v in enumerate(value)]


def box_weights(value: object, name: str = "weights") -> tuple[float, float, float, float]:
    """Require four finite numbers > 0 (box-coder weights)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 4:
        raise ValueError(f"{name} must be four numbers (wx, wy, ww, wh), got {value!r}")
    wx, wy, ww, wh = (positive(v, f"{name}[{k}]") for k, v in enumerate(value))
    return wx, wy, ww, wh


def matrix(value: object, name: str) -> Tensor:
    """Require a finite float matrix ``[G, A]``."""
    t = as_float(tensor(value, name), name)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape [G, A], got {_shape(t)}")
    finite(t, name)
    return t


def float_tensor(value: object, name: str) -> Tensor:
    """Require a finite float tensor of any shape."""
    t = tensor(value, name)
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    finite(t, name)
    return t


# --- evaluation inputs
# detlearn.evaluate takes whole data sets: lists of per-image dicts whose
# values may be tensors (any device) or NumPy arrays. Shapes and dtypes are
# checked image by image; values are checked once on the concatenated rows
# (``image_index[k]`` says which image row k came from), and the message
# names the first offending image.

_DETECTION_KEYS = {"predictions": ("boxes", "labels", "scores"), "targets": ("boxes", "labels")}


def _any_tensor(value: object, name: str) -> Tensor:
    """A tensor for a tensor, NumPy array or (nested) list; arrays are not copied."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value)  # torch rejects negative strides
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a tensor or array, got {type(value).__name__}") from err


def _per_box(value: object, name: str, n: int, kind: str) -> None:
    """Require shape ``[n]`` and a real (``kind='real'``) or integer dtype."""
    t = _any_tensor(value, name)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one per box), got {_shape(t)}")
    if kind == "integer" and (t.is_floating_point() or t.is_complex()):
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    if kind == "real":
        real_dtype(t, name)


def detection_lists(predictions: object, targets: object) -> None:
    """Require two equally long lists of per-image dicts in torchvision's format.

    predictions ``{'boxes': [N, 4], 'labels': int [N], 'scores': [N]}``;
    targets ``{'boxes': [M, 4], 'labels': int [M]}`` with optional
    ``'iscrowd'`` ``[M]`` (integers or bools) and ``'area'`` ``[M]``.
    """
    for arg, value in (("predictions", predictions), ("targets", targets)):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise ValueError(
                f"{arg} must be a list with one dict per image, got {type(value).__name__}"
            )
    if len(predictions) != len(targets):  # type: ignore[arg-type]
        raise ValueError(
            "predictions and targets must have the same length (one dict per image), "
            f"got {len(predictions)} and {len(targets)}"  # type: ignore[arg-type]
        )
    for arg, images in (("predictions", predictions), ("targets", targets)):
        for i, image in enumerate(images):  # type: ignore[arg-type]
            name = f"{arg}[{i}]"
            if not isinstance(image, Mapping):
                raise ValueError(f"{name} must be a dict, got {type(image).__name__}")
            missing = [key for key in _DETECTION_KEYS[arg] if key not in image]
            if missing:
                raise ValueError(
                    f"{name} is missing key(s) {missing}; expected {list(_DETECTION_KEYS[arg])}"
                )
            b = _any_tensor(image["boxes"], f"{name}['boxes']")
            if b.dim() != 2 or b.shape[1] != 4:
                raise ValueError(f"{name}['boxes'] must have shape [N, 4], got {_shape(b)}")
            real_dtype(b, f"{name}['boxes']")
            n = b.shape[0]
            _per_box(image["labels"], f"{name}['labels']", n, "integer")
            if arg == "predictions":
                _per_box(image["scores"], f"{name}['scores']", n, "real")
            else:
                if "iscrowd" in image:
                    _per_box(image["iscrowd"], f"{name}['iscrowd']", n, "integer")
                if "area" in image:
                    _per_box(image["area"], f"{name}['area']", n, "real")


def _first_bad(bad: np.ndarray, image_index: np.ndarray) -> int | None:
    """Image of the first True row of ``bad``, or None."""
    rows = np.flatnonzero(bad.any(axis=1) if bad.ndim == 2 else bad)
    return None if len(rows) == 0 else int(image_index[rows[0]])


def finite_rows(values: np.ndarray, image_index: np.ndarray, arg: str, key: str) -> None:
    """Require finite values in the concatenated ``arg[i][key]`` rows (NumPy)."""
    i = _first_bad(~np.isfinite(values), image_index)
    if i is not None:
        raise ValueError(f"{arg}[{i}]['{key}'] must be finite, got NaN or inf")


def box_rows(values: np.ndarray, image_index: np.ndarray, arg: str) -> None:
    """Require finite xyxy rows ``[N, 4]`` with ``x2 >= x1`` and ``y2 >= y1`` (NumPy)."""
    finite_rows(values, image_index, arg, "boxes")
    i = _first_bad((values[:, 2] < values[:, 0]) | (values[:, 3] < values[:, 1]), image_index)
    if i is not None:
        raise ValueError(
            f"{arg}[{i}]['boxes'] must be xyxy boxes with x2 >= x1 and y2 >= y1; "
            "some boxes are inverted (negative width or height)"
        )


def area_rows(values: np.ndarray, image_index: np.ndarray) -> None:
    """Require finite areas >= 0 in the concatenated ``targets[i]['area']`` rows (NumPy)."""
    finite_rows(values, image_index, "targets", "area")
    i = _first_bad(values < 0, image_index)
    if i is not None:
        raise ValueError(f"targets[{i}]['area'] must be >= 0, got a negative area")


def crowd_rows(values: np.ndarray, image_index: np.ndarray) -> None:
    """Require 0/1 flags in the concatenated ``targets[i]['iscrowd']`` rows (NumPy)."""
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
        raise ValueError(f"{name} must have shape [D, G], got {_shape(t)}")
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
            f"got shapes {_shape(r)} and {_shape(p)}"
        )
    finite(r.double(), "recall")
    finite(p.double(), "precision")
    if r.numel() > 1 and bool((r[1:] < r[:-1]).any()):
        raise ValueError("recall must be non-decreasing (points in decreasing score order)")


def positive_int(value: object, name: str) -> int:
    """Require an integer >= 1 (a count such as ``max_dets``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value
