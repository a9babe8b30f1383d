"""Tests for detlearn.viz (Agg backend, nothing shown)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from detlearn.data import ShapesDataset
from detlearn.viz import class_color, draw_boxes, show_dataset, show_detections, show_image

plt.switch_backend("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_show_image_aligns_pixel_edges():
    image = torch.rand(3, 20, 30)
    ax = show_image(image, title="x")
    assert ax.get_title() == "x"
    assert tuple(ax.images[0].get_extent()) == (0, 30, 20, 0)
    assert np.array_equal(ax.images[0].get_array(), image.permute(1, 2, 0).numpy())
    show_image(np.zeros((8, 8, 3)), ax=ax)  # arrays are channels last
    show_image(torch.zeros(1, 8, 8), ax=ax)  # grey
    with pytest.raises(ValueError, match="image"):
        show_image(torch.zeros(5, 8, 8))


def test_draw_boxes_rectangles_and_captions():
    _, ax = plt.subplots()
    show_image(torch.zeros(3, 50, 50), ax=ax)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [10.0, 20.0, 30.0, 45.0]])
    added = draw_boxes(
        ax, boxes, labels=torch.tensor([0, 2]), scores=[0.9, 0.456], class_names=["a", "b", "c"]
    )
    assert rectangles(ax) == added and len(added) == 2
    assert added[1].get_xy() == (10.0, 20.0)
    assert (added[1].get_width(), added[1].get_height()) == (20.0, 25.0)
    assert added[1].get_edgecolor() == matplotlib.colors.to_rgba(class_color(2))
    assert [t.get_text() for t in ax.texts] == ["a 0.90", "c 0.46"]


def test_draw_boxes_options_and_empty():
    _, ax = plt.subplots()
    assert draw_boxes(ax, torch.zeros(0, 4)) == []
    draw_boxes(ax, [[1, 2, 3, 4]], labels=[5], color="red", show_text=False)
    assert len(rectangles(ax)) == 1 and not ax.texts
    assert rectangles(ax)[0].get_edgecolor() == matplotlib.colors.to_rgba("red")
    with pytest.raises(ValueError, match="labels"):
        draw_boxes(ax, [[1, 2, 3, 4]], labels=[1, 2])
    with pytest.raises(ValueError, match="scores"):
        draw_boxes(ax, [[1, 2, 3, 4]], scores=[])


def test_class_colors_are_fixed_and_distinct():
    colours = [class_color(k) for k in range(9)]
    assert len(set(colours)) == 9
    assert class_color(torch.tensor(1)) == colours[1] == class_color(10)


def test_show_detections_draws_targets_and_kept_predictions():
    images = torch.rand(3, 3, 32, 32)
    targets = [
        {"boxes": torch.tensor([[1.0, 1.0, 10.0, 10.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {
            "boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0], [6, 6, 20, 20]]),
            "labels": torch.tensor([1, 2]),
        },
    ]
    predictions = [
        {
            "boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0], [2, 2, 4, 4]]),
            "labels": torch.tensor([0, 1]),
            "scores": torch.tensor([0.9, 0.2]),
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
        },
        {
            "boxes": torch.tensor([[6.0, 6.0, 20.0, 20.0]]),
            "labels": torch.tensor([2]),
            "scores": torch.tensor([0.5]),
        },
    ]
    fig = show_detections(images, predictions, targets, class_names=["a", "b", "c"], ncols=2)
    axes = fig.axes
    assert len(axes) == 4  # a 2 x 2 grid, the last one blank
    assert [len(rectangles(ax)) for ax in axes] == [2, 0, 3, 0]
    assert [t.get_text() for t in axes[2].texts] == ["c 0.50"]
    only_targets = show_detections(list(images), targets=targets, ncols=3)
    assert [len(rectangles(ax)) for ax in only_targets.axes] == [1, 0, 2]
    with pytest.raises(ValueError, match="predictions"):
        show_detections(images, predictions[:2])


@pytest.mark.parametrize("task", ["classify", "localize", "detect"])
def test_show_dataset(task):
    ds = ShapesDataset(6, task=task, image_size=48, seed=0)
    fig = show_dataset(ds, n=5, ncols=3)
    axes = fig.axes
    assert len(axes) == 6 and len(axes[5].images) == 0  # 2 x 3 grid, one left blank
    for k in range(5):
        _, target = ds[k]
        assert len(axes[k].images) == 1
        expected = 0 if task == "classify" else len(target["labels"])
        assert len(rectangles(axes[k])) == expected
        if task == "classify":
            assert ds.classes[int(target["labels"][0])] in axes[k].get_title()


def test_show_source_returns_the_dedented_source_of_a_method():
    from detlearn.models import TinyDetector
    from detlearn.viz import show_source

    shown = show_source(TinyDetector.compute_loss)
    assert repr(shown).startswith("def compute_loss(")
    compile(repr(shown), "<shown>", "exec")  # dedented: valid code at the top level
    markdown = shown._repr_markdown_()
    assert markdown.startswith("```python\ndef compute_loss(") and markdown.endswith("\n```")


def test_show_source_refuses_what_has_no_source():
    from detlearn.viz import show_source

    with pytest.raises(ValueError, match="obj"):
        show_source(3)
