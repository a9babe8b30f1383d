"""Tests for detlearn.data: ShapesDataset and collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from detlearn.data import SHAPES, Scene, ShapesDataset, collate

TASKS = ("classify", "localize", "detect")


def assert_same_item(a, b) -> None:
    image_a, target_a = a
    image_b, target_b = b
    assert torch.equal(image_a, image_b)
    assert target_a.keys() == target_b.keys()
    for key in target_a:
        assert target_a[key].dtype == target_b[key].dtype
        assert torch.equal(target_a[key], target_b[key]), key


def extent(mask: torch.Tensor) -> list[float]:
    """Tight xyxy box of a bool mask [H, W] in pixel-edge coordinates."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return [cols[0].item(), rows[0].item(), cols[-1].item() + 1.0, rows[-1].item() + 1.0]


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """[N, N] IoU of xyxy boxes with positive area (kept here to avoid importing torchvision)."""
    lt = torch.max(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    return inter / (area[:, None] + area[None, :] - inter)


@pytest.mark.parametrize("task", TASKS)
def test_item_shapes_and_dtypes(task):
    ds = ShapesDataset(20, task=task, image_size=64, seed=3)
    assert len(ds) == 20
    assert ds.classes == ["circle", "square", "triangle"]
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert image.min().item() >= 0.0 and image.max().item() <= 1.0
        labels = target["labels"]
        assert labels.dtype == torch.int64 and labels.ndim == 1
        assert ((labels >= 0) & (labels < ds.num_classes)).all()
        if task == "classify":
            assert set(target) == {"labels"}
            assert labels.shape == (1,)
        if task == "localize":
            assert set(target) == {"labels", "boxes"}
            assert labels.shape == (1,)
        if task == "detect":
            assert set(target) == {"labels", "boxes", "area", "iscrowd"}
            n = len(labels)
            assert target["area"].shape == (n,) and target["area"].dtype == torch.float32
            assert target["iscrowd"].dtype == torch.int64
            assert torch.equal(target["iscrowd"], torch.zeros(n, dtype=torch.int64))
        if task != "classify":
            boxes = target["boxes"]
            assert boxes.shape == (len(labels), 4) and boxes.dtype == torch.float32
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()


def test_area_is_box_area():
    ds = ShapesDataset(10, seed=1)
    for i in range(len(ds)):
        _, target = ds[i]
        boxes = target["boxes"]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert torch.equal(target["area"], area)


@pytest.mark.parametrize("task", TASKS)
def test_same_arguments_same_tensors(task):
    a = ShapesDataset(12, task=task, seed=7)
    b = ShapesDataset(12, task=task, seed=7)
    for i in reversed(range(len(a))):  # the order of access does not matter
        assert_same_item(a[i], b[i])
        assert_same_item(a[i], a[i])


def test_different_seeds_and_indices_differ():
    a = ShapesDataset(5, seed=0)
    b = ShapesDataset(5, seed=1)
    for i in range(len(a)):
        assert not torch.equal(a[i][0], b[i][0])
    assert not torch.equal(a[0][0], a[1][0])


def test_scene_depends_on_seed_and_index_only():
    """A longer dataset with the same seed starts with the same scenes."""
    short = ShapesDataset(3, seed=4)
    long = ShapesDataset(50, seed=4)
    for i in range(len(short)):
        assert_same_item(short[i], long[i])


def test_dataloader_workers_give_identical_batches():
    ds = ShapesDataset(16, seed=5)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=workers)
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1]) == 4
    for (images_a, targets_a), (images_b, targets_b) in zip(*batches, strict=True):
        for image_a, target_a, image_b, target_b in zip(
            images_a, targets_a, images_b, targets_b, strict=True
        ):
            assert_same_item((image_a, target_a), (image_b, target_b))


def test_collate():
    ds = ShapesDataset(3, seed=2)
    images, targets = collate([ds[0], ds[1], ds[2]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == 3
    assert_same_item((images[1], targets[1]), ds[1])
    assert collate([]) == ([], [])


def test_indexing():
    ds = ShapesDataset(4, seed=0)
    assert_same_item(ds[-1], ds[3])
    for bad in (4, 100, -5):
        with pytest.raises(IndexError):
            ds[bad]
    assert len(list(ds)) == 4  # iteration stops at the IndexError
    assert len(ShapesDataset(0)) == 0


def test_render_matches_getitem():
    ds = ShapesDataset(6, seed=9)
    for i in range(len(ds)):
        scene = ds.render(i)
        assert isinstance(scene, Scene)
        assert_same_item((scene.image, scene.target), ds[i])
        n = len(scene.target["labels"])
        assert scene.masks.shape == scene.visible.shape == (n, 96, 96)
        assert scene.masks.dtype == scene.visible.dtype == torch.bool
        assert not (scene.visible & ~scene.masks).any()  # visible is a subset of the mask


def test_boxes_are_tight_and_objects_visible():
    ds = ShapesDataset(150, seed=11)
    unoccluded = 0
    for i in range(len(ds)):
        scene = ds.render(i)
        boxes = scene.target["boxes"]
        for k in range(len(boxes)):
            full, visible = scene.masks[k], scene.visible[k]
            assert boxes[k].tolist() == extent(full)
            # every object keeps most of its pixels in view
            assert visible.sum() >= (1 - ds.max_occlusion) * full.sum()
            if torch.equal(visible, full):
                unoccluded += 1
                assert boxes[k].tolist() == extent(visible)
        # a later object is drawn on top: pixels belong to at most one visible mask
        assert scene.visible.sum(dim=0).max() <= 1
        if len(boxes) > 1:
            iou = pairwise_iou(boxes).fill_diagonal_(0)
            assert iou.max() <= ds.max_box_iou + 1e-6
    assert unoccluded > 300  # the check above ran on many objects


def test_masks_describe_the_image():
    """On a plain background each visible mask is one flat colour and the rest is background."""
    ds = ShapesDataset(40, seed=12, background="plain")
    for i in range(len(ds)):
        scene = ds.render(i)
        pixels = scene.image.reshape(3, -1).T  # [H*W, 3]
        visible = scene.visible.reshape(len(scene.visible), -1)
        uncovered = ~visible.any(dim=0)
        colours = [pixels[uncovered]] + [pixels[v] for v in visible]
        means = []
        for group in colours:
            assert len(group) > 0
            assert torch.equal(group, group[:1].expand_as(group))  # one colour per region
            means.append(group[0])
        means = torch.stack(means)
        # shapes contrast with the background
        assert ((means[1:] - means[0]).norm(dim=1) > 0.3).all()


@pytest.mark.parametrize(("low", "high"), [(1, 6), (3, 4), (0, 2)])
def test_object_counts_in_range(low, high):
    ds = ShapesDataset(80, max_objects=high, seed=13, min_objects=low)
    counts = [len(ds[i][1]["labels"]) for i in range(len(ds))]
    assert min(counts) >= low and max(counts) <= high
    assert len(set(counts)) > 1  # not a constant count


def test_empty_scenes_are_well_formed():
    ds = ShapesDataset(30, max_objects=1, min_objects=0, seed=0)
    empties = [ds[i][1] for i in range(len(ds)) if len(ds[i][1]["labels"]) == 0]
    assert empties
    assert empties[0]["boxes"].shape == (0, 4) and empties[0]["boxes"].dtype == torch.float32
    assert empties[0]["labels"].shape == (0,)


@pytest.mark.parametrize("object_size", [(0.1, 0.5), (0.08, 0.33), (0.25, 0.25)])
def test_object_sizes_in_range(object_size):
    size = 96
    ds = ShapesDataset(100, task="localize", image_size=size, seed=14, object_size=object_size)
    sides = torch.cat([ds[i][1]["boxes"][:, 2:] - ds[i][1]["boxes"][:, :2] for i in range(len(ds))])
    low, high = round(object_size[0] * size), round(object_size[1] * size)
    assert sides.min() >= low - 1  # a triangle's apex row may be empty
    assert sides.max() <= high
    if object_size[0] < object_size[1]:
        assert sides.max() - sides.min() >= 0.5 * (high - low)  # the range is used


def test_small_objects_for_classification():
    ds = ShapesDataset(50, task="classify", seed=0, object_size=(0.08, 0.33))
    for i in range(len(ds)):
        box = torch.tensor(extent(ds.render(i).masks[0]))
        assert (box[2:] - box[:2]).max() <= 32


def test_all_classes_appear_evenly():
    ds = ShapesDataset(300, task="classify", seed=15)
    labels = torch.cat([ds[i][1]["labels"] for i in range(len(ds))])
    counts = torch.bincount(labels, minlength=3)
    assert len(counts) == 3 and counts.min() > 70


def test_custom_classes_and_aspect_ratio():
    ds = ShapesDataset(60, seed=16, classes=("cross", "diamond"), aspect_ratio=(0.5, 2.0))
    assert ds.classes == ["cross", "diamond"] and ds.num_classes == 2
    labels, ratios = [], []
    for i in range(len(ds)):
        _, target = ds[i]
        labels.append(target["labels"])
        boxes = target["boxes"]
        ratios.append((boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0]))
    assert set(torch.cat(labels).tolist()) == {0, 1}
    ratios = torch.cat(ratios)
    assert ratios.min() < 0.7 and ratios.max() > 1.4


def test_every_shape_draws():
    ds = ShapesDataset(40, seed=17, classes=SHAPES, background="black")
    seen = set()
    for i in range(len(ds)):
        image, target = ds[i]
        seen.update(target["labels"].tolist())
        assert image.max() > 0
    assert seen == set(range(len(SHAPES)))


@pytest.mark.parametrize("background", ["noise", "plain", "black"])
def test_backgrounds(background):
    ds = ShapesDataset(5, task="classify", seed=18, background=background)
    scene = ds.render(0)
    bg = scene.image[:, ~scene.masks[0]]
    if background == "black":
        assert bg.abs().max() == 0
    elif background == "plain":
        assert torch.equal(bg, bg[:, :1].expand_as(bg))
    else:
        assert bg.std(dim=1).min() > 0.01  # texture and noise


def test_materialize():
    ds = ShapesDataset(5, task="localize", image_size=32, seed=19)
    images, targets = ds.materialize()
    assert images.shape == (5, 3, 32, 32)
    for i in range(len(ds)):
        assert_same_item((images[i], targets[i]), ds[i])
    empty_images, empty_targets = ShapesDataset(0, image_size=32).materialize()
    assert empty_images.shape == (0, 3, 32, 32) and empty_targets == []


def test_numpy_integers_are_integers():
    a = ShapesDataset(np.int64(3), image_size=np.int32(32), seed=np.int64(5))
    b = ShapesDataset(3, image_size=32, seed=5)
    assert len(a) == 3 and a.image_size == 32
    assert torch.equal(a[2][0], b[2][0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_images": -1}, "num_images"),
        ({"num_images": 2.5}, "num_images"),
        ({"task": "segment"}, "task"),
        ({"image_size": 4}, "image_size"),
        ({"image_size": 96.0}, "image_size"),
        ({"max_objects": 0}, "max_objects"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"object_size": (0.5, 0.1)}, "object_size"),
        ({"object_size": (0.1, 1.5)}, "object_size"),
        ({"object_size": (0.01, 0.5)}, "object_size"),
        ({"object_size": 0.3}, "object_size"),
        ({"object_size": (0.1, float("nan"))}, "object_size"),
        ({"min_objects": 7}, "min_objects"),
        ({"min_objects": -1}, "min_objects"),
        ({"classes": ()}, "classes"),
        ({"classes": "circle"}, "classes"),
        ({"classes": ("circle", "hexagon")}, "classes"),
        ({"classes": ("circle", "circle")}, "classes"),
        ({"background": "stripes"}, "background"),
        ({"aspect_ratio": (0.0, 1.0)}, "aspect_ratio"),
        ({"max_occlusion": 1.0}, "max_occlusion"),
        ({"max_box_iou": 0.0}, "max_box_iou"),
        ({"num_images": True}, "num_images"),
        ({"max_occlusion": "0.3"}, "max_occlusion"),
        ({"aspect_ratio": (2.0, 1.0)}, "aspect_ratio"),
        ({"classes": ("circle", 3)}, r"classes\[1\]"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, name):
    args = {"num_images": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        ShapesDataset(**args)
