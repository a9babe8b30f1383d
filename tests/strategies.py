"""Hypothesis strategies and small helpers shared by the test modules (not a test module)."""

from __future__ import annotations

import inspect
import re

import torch
from hypothesis import strategies as st


@st.composite
def box_lists(draw, max_size: int = 10, integer: bool | None = None) -> list[list[float]]:
    """xyxy boxes, often with shared edges, zero widths or heights, and duplicates."""
    if integer is None:
        integer = draw(st.booleans())
    if integer:
        corner = st.integers(-20, 60).map(float)
        side = st.integers(0, 40).map(float)
    else:
        corner = st.floats(-100, 500, allow_nan=False, width=32)
        side = st.one_of(st.just(0.0), st.floats(0, 300, width=32))
    n = draw(st.integers(0, max_size))
    out = []
    for _ in range(n):
        if out and draw(st.integers(0, 5)) == 0:  # an exact duplicate now and then
            out.append(list(draw(st.sampled_from(out))))
            continue
        x, y, w, h = draw(corner), draw(corner), draw(side), draw(side)
        out.append([x, y, x + w, y + h])
    return out


def as_boxes(rows: list[list[float]], dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype).reshape(-1, 4)


def assert_reads_whole(obj, max_lines: int = 50, max_columns: int = 88) -> None:
    """A function a chapter shows: a screenful, page-wide, no hidden helper but the checks.

    Names with a leading underscore are private, except ``_checks`` (validation at
    the entry point) and dunder names such as ``__call__``.
    """
    source = inspect.getsource(obj)
    assert len(source.splitlines()) <= max_lines
    assert max(len(line) for line in source.splitlines()) <= max_columns
    names = set(re.findall(r"(?<![\w.])_\w+", source)) - {"_checks"}
    private = {name for name in names if not (name.startswith("__") and name.endswith("__"))}
    assert not private, private
