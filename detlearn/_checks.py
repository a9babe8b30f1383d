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

import numpy as np
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


def size_range(value: object, name: str) -> tuple[float, float]:
    """Require a range ``(low, high)`` of finite numbers with ``0 < low <= high``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}")
    low = positive(value[0], f"{name}[0] (low)")
    high = positive(value[1], f"{name}[1] (high)")
    if low > high:
        raise ValueError(f"{name} must satisfy 0 < low <= high, got {value!r}")
    return low, high


def one_of(value: object, name: str, options: Sequence[object]) -> object:
    """Require one of ``options`` (a task name, a mode, ...)."""
    if isinstance(value, Tensor) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


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


def integer(value: object, name: str, low: int = 0, high: float = math.inf) -> int:
    """Require a Python or numpy integer (not a bool) in ``[low, high]``."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not is_int or not low <= value <= high:  # type: ignore[operator]
        bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def positive_int(value: object, name: str) -> int:
    """Require an integer >= 1 (a count such as ``max_dets``)."""
    return integer(value, name, low=1)


def positive_ints(value: Sequence[object], name: str) -> tuple[int, ...]:
    """Require integers >= 1 (such as layer widths); return them as a tuple."""
    return tuple(positive_int(v, f"{name}[{k}]") for k, v in enumerate(value))


def images(value: object, name: str = "images") -> Tensor | list[Tensor]:
    """Require a ``[B, 3, H, W]`` tensor or a non-empty list of ``[3, H, W]`` tensors.

    Returns the tensor as it is, or the images as a list.
    """
    if isinstance(value, Tensor):
        if value.dim() != 4 or value.shape[1] != 3:
            raise ValueError(f"{name} must be [B, 3, H, W], got shape {_shape(value)}")
        return value
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise ValueError(f"{name} must hold at least one image, got {value!r}")
    for i, image in enumerate(value):
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            got = _shape(image) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"{name}[{i}] must be a [3, H, W] tensor, got {got}")
    return list(value)


def targets(
    value: object, batch_size: int, keys: Sequence[str], name: str = "targets"
) -> list[dict[str, Tensor]]:
    """Require one target dict per image holding ``keys``; return checked copies.

    ``boxes`` must be finite xyxy boxes ``[N, 4]`` (integers become float32) and
    ``labels`` integers ``[N]``, one per box (``[1]`` when there are no boxes).
    Each returned dict holds ``keys`` only.
    """
    if value is None:
        raise ValueError(
            f"{name} are required in training mode (call model.eval() to predict)"
        )
    if not isinstance(value, Sequence) or isinstance(value, (str, dict)):
        raise ValueError(f"{name} must be a list of dicts, got {type(value).__name__}")
    if len(value) != batch_size:
        raise ValueError(
            f"{name} must hold one dict per image ({batch_size}), got {len(value)}"
        )
    checked = []
    for i, target in enumerate(value):
        if not isinstance(target, dict):
            raise ValueError(f"{name}[{i}] must be a dict, got {type(target).__name__}")
        missing = [k for k in keys if k not in target]
        if missing:
            raise ValueError(f"{name}[{i}] needs {list(keys)}, missing {missing}")
        out = {k: target[k] for k in keys}
        if "boxes" in out:
            out["boxes"] = boxes(out["boxes"], f"{name}[{i}]['boxes']")
        if "labels" in out:
            n = len(out["boxes"]) if "boxes" in out else 1
            out["labels"] = labels(out["labels"], f"{name}[{i}]['labels']", n)
        checked.append(out)
    return checked


def output_size(value: object, name: str) -> tuple[int, int]:
    """Require ``n`` or ``(h, w)``: integers >= 1 (a pooled grid's size)."""
    pair = (value, value) if isinstance(value, int) else value
    if (
        not isinstance(pair, Sequence)
        or isinstance(pair, str)
        or len(pair) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair)
    ):
        raise ValueError(
            f"{name} must be an integer >= 1 or two of them, got {value!r}"
        )
    return pair[0], pair[1]


def roi_boxes(value: object, name: str, input: object, input_name: str) -> Tensor:
    """Require features ``[N, C, H, W]`` and RoIs for them; return the RoIs ``[K, 5]``.

    ``value`` is a ``[K, 5]`` tensor of rows ``(batch_index, x1, y1, x2, y2)`` or a
    sequence of at most ``N`` tensors ``[K_i, 4]`` (image ``i``'s xyxy boxes), as
    ``torchvision.ops.roi_align`` takes them. Batch indices must be whole numbers in
    ``[0, N)`` and boxes finite with ``x2 >= x1``, ``y2 >= y1``. The RoIs come back
    in the features' float dtype.
    """
    features = tensor(input, input_name)
    if features.dim() != 4:
        raise ValueError(
            f"{input_name} must have shape [N, C, H, W], got {_shape(features)}"
        )
    if not features.is_floating_point():
        raise ValueError(
            f"{input_name} must be a floating-point tensor, got dtype {features.dtype}"
        )
    n = features.shape[0]
    if isinstance(value, Tensor):
        t = as_float(value, name)
        if t.dim() != 2 or t.shape[1] != 5:
            raise ValueError(
                f"{name} must have shape [K, 5] (batch_index, x1, y1, x2, y2) or be a "
                f"list of [K_i, 4] tensors, got {_shape(t)}"
            )
        boxes(t[:, 1:], name)
        index = t[:, 0]
        if (
            _reads_values()
            and len(t)
            and not bool(((index == index.round()) & (index >= 0) & (index < n)).all())
        ):
            raise ValueError(
                f"{name}[:, 0] must hold batch indices, whole numbers in [0, {n}), "
                f"for {input_name} of {n} images"
            )
        return t.to(features.dtype)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(
            f"{name} must be a [K, 5] tensor or a list of [K_i, 4] tensors, "
            f"got {type(value).__name__}"
        )
    if len(value) > n:
        raise ValueError(
            f"{name} holds boxes for {len(value)} images, but {input_name} has {n}"
        )
    rows = []
    for i, b in enumerate(value):
        b = boxes(b, f"{name}[{i}]")
        rows.append(torch.cat([b.new_full((len(b), 1), i), b], 1).to(features.dtype))
    if not rows:
        return features.new_zeros((0, 5))
    return torch.cat(rows).to(features.device)
