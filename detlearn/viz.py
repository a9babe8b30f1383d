"""Pictures for the chapters: images, boxes, detections and dataset tours
(matplotlib only).

Nothing else in detlearn imports this module. The helpers draw on matplotlib
axes and return them (or the figure); they never call ``plt.show()``, which
the chapters do at the end of a figure cell.

Images are accepted as float tensors ``[3, H, W]`` (or ``[1, H, W]``,
``[H, W]``) with values in ``[0, 1]``, or as NumPy arrays ``[H, W, 3]``.
Boxes are ``xyxy`` in pixels, as everywhere in detlearn; a box ``(x1, y1, x2,
y2)`` is drawn along the pixel edges it names, so ``(0, 0, 1, 1)`` outlines
exactly the top-left pixel. Each class label has a fixed colour
(:func:`class_color`), the same in every figure.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = [
    "SourceCode",
    "class_color",
    "draw_boxes",
    "show_dataset",
    "show_detections",
    "show_image",
    "show_source",
]

# matplotlib's "tab10" colours, without its grey (hard to see on the noisy backgrounds)
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)
_TARGET_COLOR = "white"


def class_color(label: int) -> str:
    """The colour (a hex string) that every figure uses for class ``label``."""
    return _PALETTE[int(label) % len(_PALETTE)]


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _image_hwc(image: Any) -> np.ndarray:
    """An image as a NumPy array ``[H, W, 3]`` or ``[H, W]`` that ``imshow`` draws."""
    array = _to_numpy(image)
    if isinstance(image, torch.Tensor) and array.ndim == 3:  # channels first
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(
            "image must be [3, H, W] or [H, W] (tensor) or [H, W, 3] (array), "
            f"got {array.shape}"
        )
    return array


def show_image(image: Any, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Draw one image on ``ax`` (a new figure when ``None``) without axis ticks.

    Args:
        image: tensor ``[3, H, W]`` / ``[H, W]`` with values in ``[0, 1]``, or an
            array ``[H, W, 3]``; grey images use the grey colour map.
        ax: the axes to draw on.
        title: optional title above the image.

    Returns:
        the axes.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    array = _image_hwc(image)
    height, width = array.shape[:2]
    extent = (0, width, height, 0)  # pixel edges on integer coordinates, like the boxes
    if array.ndim == 2:
        ax.imshow(array, cmap="gray", vmin=0.0, vmax=1.0, extent=extent)
    else:
        ax.imshow(np.clip(array, 0.0, 1.0), extent=extent)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def draw_boxes(
    ax: Axes,
    boxes: Any,
    labels: Any = None,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    color: str | None = None,
    linestyle: str = "-",
    linewidth: float = 1.5,
    fontsize: float = 7.0,
    show_text: bool = True,
) -> list[Rectangle]:
    """Draw xyxy boxes as rectangles, each with a short caption above it.

    Args:
        ax: axes showing the image (pixel coordinates, as :func:`show_image` sets).
        boxes: ``[N, 4]`` xyxy in pixels (tensor, array or nested lists).
        labels: ``[N]`` integer class labels, or ``None``.
        scores: ``[N]`` scores, or ``None``; shown with two decimals.
        class_names: names to print for the labels (``class_names[label]``);
            without them the label number is printed.
        color: one colour for every box; by default each label's
            :func:`class_color` (or the first palette colour without labels).
        linestyle, linewidth: rectangle line style.
        fontsize: caption font size.
        show_text: write the captions ("name 0.93"); off draws bare rectangles.

    Returns:
        the ``N`` rectangles added to ``ax.patches``, in box order.
    """
    boxes_np = _to_numpy(boxes).astype(float).reshape(-1, 4)
    n = len(boxes_np)
    labels_np = None if labels is None else _to_numpy(labels).astype(int).reshape(-1)
    scores_np = None if scores is None else _to_numpy(scores).astype(float).reshape(-1)
    for name, values in (("labels", labels_np), ("scores", scores_np)):
        if values is not None and len(values) != n:
            raise ValueError(
                f"{name} must have one entry per box ({n}), got {len(values)}"
            )

    # a caption sits inside its box when the box is close to the image's top edge
    top, bottom = sorted(ax.get_ylim())
    near_top = 0.12 * (bottom - top)
    rectangles = []
    for k, (x1, y1, x2, y2) in enumerate(boxes_np):
        label = None if labels_np is None else int(labels_np[k])
        edge = color or class_color(label if label is not None else 0)
        rect = Rectangle(
            (x1, y1),
            x2 - x1,
            y2 - y1,
            fill=False,
            edgecolor=edge,
            linewidth=linewidth,
            linestyle=linestyle,
        )
        ax.add_patch(rect)
        rectangles.append(rect)
        parts = []
        if label is not None:
            parts.append(class_names[label] if class_names is not None else str(label))
        if scores_np is not None:
            parts.append(f"{scores_np[k]:.2f}")
        if show_text and parts:
            inside = y1 - top < near_top
            ax.text(
                x1,
                y1 if inside else y1 - 0.5,
                " ".join(parts),
                color="white",
                fontsize=fontsize,
                va="top" if inside else "bottom",
                bbox={"facecolor": edge, "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
            )
    return rectangles


def _grid(count: int, ncols: int, size: float) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, count))
    nrows = max(1, math.ceil(count / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.axis("off")
    return fig, flat


def show_detections(
    images: Sequence[Any],
    predictions: Sequence[Mapping[str, Any]] | None = None,
    targets: Sequence[Mapping[str, Any]] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 4,
    score_threshold: float = 0.5,
    size: float = 2.5,
) -> Figure:
    """A grid of images with ground truth and/or predicted boxes.

    Targets are drawn as dashed white rectangles without captions; predictions
    with ``score >= score_threshold`` as solid rectangles in their class colour
    with "name score" captions.

    Args:
        images: a sequence of images (see :func:`show_image`), or a batch
            tensor ``[B, 3, H, W]``.
        predictions: one dict per image with ``boxes`` ``[N, 4]``, ``labels``
            ``[N]`` and ``scores`` ``[N]`` (torchvision's format), or ``None``.
        targets: one dict per image with ``boxes`` and ``labels``, or ``None``.
        class_names: names for the labels (e.g. ``dataset.classes``).
        ncols: images per row.
        score_threshold: predictions scoring lower are not drawn.
        size: side of each image in inches.

    Returns:
        the figure (call ``plt.show()`` to display it).
    """
    images = list(images)
    for name, per_image in (("predictions", predictions), ("targets", targets)):
        if per_image is not None and len(per_image) != len(images):
            raise ValueError(
                f"{name} must have one dict per image ({len(images)}), "
                f"got {len(per_image)}"
            )
    fig, axes = _grid(len(images), ncols, size)
    for k, image in enumerate(images):
        ax = show_image(image, ax=axes[k])
        if targets is not None:
            draw_boxes(
                ax,
                targets[k]["boxes"],
                color=_TARGET_COLOR,
                linestyle="--",
                linewidth=1.0,
            )
        if predictions is not None:
            prediction = predictions[k]
            scores = _to_numpy(prediction["scores"]).reshape(-1)
            keep = scores >= score_threshold
            labels = prediction.get("labels")
            draw_boxes(
                ax,
                _to_numpy(prediction["boxes"]).reshape(-1, 4)[keep],
                labels=None if labels is None else _to_numpy(labels).reshape(-1)[keep],
                scores=scores[keep],
                class_names=class_names,
            )
    fig.tight_layout()
    return fig


def show_dataset(
    dataset: Any,
    n: int = 8,
    ncols: int = 4,
    start: int = 0,
    size: float = 2.5,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """A tour of a dataset: images ``start .. start + n - 1`` with their targets.

    Classification targets become the image titles; boxes (localization and
    detection) are drawn in their class colours with the class names.

    Args:
        dataset: indexable, ``dataset[i] -> (image, target)`` as
            :class:`detlearn.data.ShapesDataset` returns.
        n: number of images (fewer if the dataset is shorter).
        ncols: images per row.
        start: index of the first image.
        size: side of each image in inches.
        class_names: label names; ``dataset.classes`` by default.

    Returns:
        the figure.
    """
    if class_names is None:
        class_names = getattr(dataset, "classes", None)
    count = max(0, min(n, len(dataset) - start))
    fig, axes = _grid(count, ncols, size)
    for k in range(count):
        image, target = dataset[start + k]
        labels = target["labels"]
        if "boxes" in target:
            show_image(image, ax=axes[k], title=f"#{start + k}")
            draw_boxes(axes[k], target["boxes"], labels=labels, class_names=class_names)
        else:
            names = [
                class_names[int(x)] if class_names else str(int(x)) for x in labels
            ]
            show_image(image, ax=axes[k], title=f"#{start + k}: {', '.join(names)}")
    fig.tight_layout()
    return fig


class SourceCode:
    """Python source that Jupyter shows highlighted.

    Its Markdown form (a fenced ``python`` block) is what JupyterLab, Colab and
    the built book render; its plain form, the source itself, is what a terminal
    prints and what a notebook stores as the cell's text output.
    """

    def __init__(self, source: str):
        self.source = source

    def _repr_markdown_(self) -> str:
        return f"```python\n{self.source}```"

    def __repr__(self) -> str:
        return self.source


def show_source(obj: Any) -> SourceCode:
    """The source code of a function, class or method of detlearn, ready to display.

    A chapter ends a code cell with ``show_source(box_iou)`` to show the code it
    teaches. The code is read from the installed package, never pasted, so what
    the cell shows is what runs.

    Args:
        obj: a function, class or method (a ``functools.wraps`` wrapper shows
            the function it wraps).

    Returns:
        a :class:`SourceCode` whose text is the dedented source.
    """
    if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj)):
        raise ValueError(
            f"obj must be a function, class or method, got {type(obj).__name__}"
        )
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    return SourceCode(source if source.endswith("\n") else source + "\n")
