"""Input validation for detlearn's public functions, in one place.

Every public entry point calls these checks first; the helpers behind it then
trust their input. A check either returns the value to use (for boxes: the
tensor, promoted to float32 when it holds integers) or raises ``ValueError``
with a message that names the argument and says what was expected. Nothing
is clamped or reordered here. The checks of whole evaluation data sets
(lists of per-image dicts) live with the evaluator, in
``detlearn/evaluate/_checks.py``, and build on these.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
REDUCTIONS = ("none", "mean", "sum")


_state = threading.local()


@contextmanager
def trusted() -> Iterator[None]:
    """Skip the checks that read tensor values (finiteness, box order) inside the block.

    For a model's hot paths, after its entry point has checked the inputs: the
    building blocks then work on tensors the model computed itself, and on a GPU
    each value check would wait for the device. Shape and dtype checks still run.
    """
    previous = getattr(_state, "trusted", False)
    _state.trusted = True
    try:
        yield
    finally:
        _state.trusted = previous


def _reads_values() -> bool:
    """Whether checks that read tensor values run here (not inside :func:`trusted`)."""
    return not getattr(_state, "trusted", False)


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
    if not (_reads_values() and t.is_floating_point() and t.numel() > 0):
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")


def box_format(fmt: object, name: str) -> str:
    """Require one of ``'xyxy'``, ``'xywh'``, ``'cxcywh'``."""
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    return fmt  # type: ignore[return-value]


def boxes(
    value: object, name: str, fmt: str = "xyxy", allow_single: bool = False
) -> Tensor:
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
    if _reads_values() and not bool(((w >= 0) & (h >= 0)).all()):
        raise ValueError(
            f"{name} must be {fmt} boxes with {what}; some boxes are inverted"
        )
    return t


def same_length(a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    """Require ``len(a) == len(b)`` (paired inputs)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same length, "
            f"got {_shape(a)} and {_shape(b)}"
        )


def same_shape(a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    """Require equal shapes (elementwise losses)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape, "
            f"got {_shape(a)} and {_shape(b)}"
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


def number(
    value: object, name: str, low: float = -math.inf, high: float = math.inf
) -> float:
    """Require a finite real number in ``[low, high]``; return it as a float."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(
            f"{name} must be a finite number in [{low}, {high}], got {value}"
        )
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


def number_pair(value: object, name: str) -> tuple[float, float]:
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
        raise ValueError(
            f"{name} must be a non-empty sequence of numbers > 0, got {value!r}"
        )
    return [positive(v, f"{name}[{k}]") for k, v in enumerate(value)]


def positive_sides(boxes: Tensor, name: str) -> None:
    """Require xyxy boxes of width > 0 and height > 0 (box deltas divide by them)."""
    if _reads_values() and not bool(
        ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    ):
        raise ValueError(
            f"{name} must have width > 0 and height > 0 (deltas divide by them)"
        )


def box_weights(
    value: object, name: str = "weights"
) -> tuple[float, float, float, float]:
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


def positive_int(value: object, name: str) -> int:
    """Require an integer >= 1 (a count such as ``max_dets``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def positive_ints(value: Sequence[object], name: str) -> tuple[int, ...]:
    """Require integers >= 1 (such as layer widths); return them as a tuple."""
    return tuple(positive_int(v, f"{name}[{k}]") for k, v in enumerate(value))
