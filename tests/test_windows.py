"""detlearn.windows: window lists, crops, scorers (crop by crop and fully
convolutional), the image pyramid and the mapping back to the photo."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.ops as tvo
from hypothesis import given
from hypothesis import strategies as st
from strategies import assert_reads_whole

from detlearn.windows import (
    dense_window_scores,
    detect_windows,
    image_pyramid,
    mine_hard_negatives,
    pyramid_scales,
    pyramid_window_scores,
    rescale_boxes,
    sliding_windows,
    window_crops,
    window_scores,
)


def linear_scorer(channels: int, window: int, stride: int, seed: int = 0):
    """A linear classifier of one window: a convolution with the window as kernel."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels, 1, kernel_size=window, stride=stride).double()
    return lambda x: conv(x.double())[:, 0].to(x.dtype)


def face_net(kernel: int = 4, seed: int = 0, head: int = 1) -> nn.Sequential:
    """Chapter 5's classifier: three convolutions without padding, output stride 4."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel),
        nn.ReLU(),
        nn.Conv2d(64, 2, head),
    ).eval()


def face_scorer(net: nn.Module):
    return lambda x: net(x).softmax(dim=1)[:, 1]


def explicit(scorer, image: torch.Tensor, window: int, stride: int):
    """The windows, written out with two loops: boxes and one scorer call per crop."""
    boxes, scores = [], []
    _, height, width = image.shape
    for y in range(0, height - window + 1, stride):
        for x in range(0, width - window + 1, stride):
            boxes.append([x, y, x + window, y + window])
            with torch.no_grad():
                scores.append(scorer(image[None, :, y : y + window, x : x + window])[0, 0, 0])
    return torch.tensor(boxes, dtype=image.dtype), torch.stack(scores)


# --- the windows of one image -------------------------------------------------


def test_sliding_windows_worked_example():
    boxes = sliding_windows((6, 7), 3, 2)
    # rows y = 0, 2 (6 - 3 = 3, so y = 4 would cross the edge), columns x = 0, 2, 4
    assert boxes.tolist() == [
        [0, 0, 3, 3],
        [2, 0, 5, 3],
        [4, 0, 7, 3],
        [0, 2, 3, 5],
        [2, 2, 5, 5],
        [4, 2, 7, 5],
    ]
    assert boxes.dtype == torch.float32
    assert sliding_windows((25, 25), 25, 4).tolist() == [[0, 0, 25, 25]]


@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    window=st.integers(1, 40),
    stride=st.integers(1, 9),
)
def test_sliding_windows_count_and_order(height, width, window, stride):
    if window > min(height, width):
        with pytest.raises(ValueError, match="window"):
            sliding_windows((height, width), window, stride)
        return
    boxes = sliding_windows((height, width), window, stride, dtype=torch.float64)
    rows, columns = (height - window) // stride + 1, (width - window) // stride + 1
    assert boxes.shape == (rows * columns, 4) and boxes.dtype == torch.float64
    i, j = torch.arange(rows * columns) // columns, torch.arange(rows * columns) % columns
    assert torch.equal(boxes[:, 0], (j * stride).double())
    assert torch.equal(boxes[:, 1], (i * stride).double())
    assert torch.equal(boxes[:, 2:] - boxes[:, :2], torch.full((rows * columns, 2), window * 1.0))
    assert boxes[:, 2].max() <= width and boxes[:, 3].max() <= height
    assert boxes[:, 2].max() + stride > width  # no further column fits
    assert boxes[:, 3].max() + stride > height


@pytest.mark.parametrize("window, stride", [(1, 1), (3, 1), (3, 2), (5, 3), (8, 8), (25, 4)])
def test_window_crops_are_the_boxes(window, stride):
    image = torch.rand(2, 31, 37, generator=torch.Generator().manual_seed(window + stride))
    crops = window_crops(image, window, stride)
    boxes = sliding_windows((31, 37), window, stride).long().tolist()
    assert crops.shape == (len(boxes), 2, window, window)
    for crop, (x1, y1, x2, y2) in zip(crops, boxes, strict=True):
        assert torch.equal(crop, image[:, y1:y2, x1:x2])


# --- the scorers --------------------------------------------------------------


@pytest.mark.parametrize("window, stride", [(1, 1), (3, 1), (3, 2), (5, 3), (6, 6), (4, 5)])
@pytest.mark.parametrize("size", [(6, 6), (13, 9), (20, 27)])
def test_scorers_equal_explicit_crops(window, stride, size):
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(sum(size)))
    scorer = linear_scorer(3, window, stride)
    boxes, scores = explicit(scorer, image, window, stride)
    for score in (window_scores, dense_window_scores):
        got_boxes, got_scores = score(scorer, image, window, stride)
        assert torch.equal(got_boxes, boxes)
        torch.testing.assert_close(got_scores, scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("height, width", [(25, 25), (28, 26), (29, 40), (57, 33), (64, 64)])
def test_fully_convolutional_face_net_equals_crops(height, width):
    image = torch.rand(1, height, width, generator=torch.Generator().manual_seed(height))
    scorer = face_scorer(face_net())
    boxes, scores = explicit(scorer, image, 25, 4)
    crop_boxes, crop_scores = window_scores(scorer, image, 25, 4, batch_size=7)
    dense_boxes, dense_scores = dense_window_scores(scorer, image, 25, 4)
    assert torch.equal(crop_boxes, boxes) and torch.equal(dense_boxes, boxes)
    torch.testing.assert_close(crop_scores, scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(dense_scores, scores, rtol=0, atol=1e-6)


def test_face_net_map_size_and_receptive_field():
    net = face_net()
    for size in range(25, 60):
        out = net(torch.zeros(1, 1, size, size + 3))
        assert out.shape[2:] == ((size - 25) // 4 + 1, (size + 3 - 25) // 4 + 1)
    # every pixel of the 25 x 25 window moves the score (summed over random inputs,
    # since a max pooling passes the gradient to one pixel of its four)
    x = torch.rand(64, 1, 25, 25, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    net(x)[:, 1].sum().backward()
    assert bool((x.grad.abs().sum(dim=0) > 0).all())


def test_three_by_three_kernels_miss_part_of_the_window():
    """With 3 x 3 kernels (and a 2 x 2 head to end on one cell) the same layout maps a
    25 x 25 crop to one score, yet sees only 22 x 22 of its pixels."""
    net = face_net(kernel=3, head=2)
    assert net(torch.zeros(1, 1, 25, 25)).shape[2:] == (1, 1)
    assert net(torch.zeros(1, 1, 26, 26)).shape[2:] == (2, 2)  # a window of 22, not 25
    x = torch.rand(64, 1, 25, 25, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    net(x)[:, 1].sum().backward()
    seen = x.grad.abs().sum(dim=0)[0] > 0
    assert int(seen.sum()) == 22 * 22 and not seen[22:].any() and not seen[:, 22:].any()


def test_scorers_keep_dtype_and_run_without_gradients():
    image = torch.rand(1, 12, 10, dtype=torch.float64)
    conv = nn.Conv2d(1, 1, 4, stride=2).double()
    scorer = lambda x: conv(x)[:, 0]  # noqa: E731
    for score in (window_scores, dense_window_scores):
        boxes, scores = score(scorer, image, 4, 2)
        assert boxes.dtype == scores.dtype == torch.float64
        assert not scores.requires_grad


# --- the pyramid --------------------------------------------------------------


def test_pyramid_scales_worked_example():
    scales = pyramid_scales(25, 60, 215, 1.2)
    sizes = [25 / s for s in scales]
    assert len(scales) == 8
    assert all(math.isclose(size, 60 * 1.2**k) for k, size in enumerate(sizes))
    assert sizes[-1] <= 215 < sizes[-1] * 1.2
    assert pyramid_scales(10, 20, 20, 2.0) == [0.5]
    assert pyramid_scales(10, 20, 80, 2.0) == [0.5, 0.25, 0.125]


def test_image_pyramid_sizes_and_area_averaging():
    image = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0))
    levels = image_pyramid(image, [1.0, 0.5, 0.25, 0.3])
    assert [tuple(level.shape) for level in levels] == [
        (3, 20, 30),
        (3, 10, 15),
        (3, 5, 8),  # 7.5 rounds up
        (3, 6, 9),
    ]
    assert torch.equal(levels[0], image)
    torch.testing.assert_close(levels[1], F.avg_pool2d(image[None], 2)[0])


def test_rescale_boxes():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert rescale_boxes(boxes, (10, 20), (30, 40)).tolist() == [[2.0, 6.0, 6.0, 12.0]]
    back = rescale_boxes(rescale_boxes(boxes, (7, 9), (13, 11)), (13, 11), (7, 9))
    torch.testing.assert_close(back, boxes)
    assert rescale_boxes(torch.zeros(0, 4), (7, 9), (13, 11)).shape == (0, 4)


@pytest.mark.parametrize("scales", [[1.0, 0.5, 0.25], [0.5], [1.0, 0.75, 0.4]])
def test_pyramid_boxes_map_back_to_the_photo(scales):
    image = torch.rand(2, 48, 64, generator=torch.Generator().manual_seed(1))
    scorer = linear_scorer(2, 5, 2)
    boxes, scores, levels = pyramid_window_scores(scorer, image, 5, 2, scales)
    crop_boxes, crop_scores, crop_levels = pyramid_window_scores(
        scorer, image, 5, 2, scales, dense=False
    )
    assert torch.equal(boxes, crop_boxes) and torch.equal(levels, crop_levels)
    torch.testing.assert_close(scores, crop_scores, rtol=0, atol=1e-6)
    start = 0
    for k, level in enumerate(image_pyramid(image, scales)):
        h, w = level.shape[1:]
        level_boxes, level_scores = explicit(scorer, level, 5, 2)
        n = len(level_boxes)
        assert torch.equal(levels[start : start + n], torch.full((n,), k))
        factors = torch.tensor([64 / w, 48 / h, 64 / w, 48 / h])
        assert torch.equal(boxes[start : start + n], level_boxes * factors)
        torch.testing.assert_close(scores[start : start + n], level_scores, rtol=0, atol=1e-6)
        start += n
    assert start == len(boxes)


def test_a_window_on_a_level_covers_the_pixels_it_averages():
    """With a whole-number shrink factor, area resizing averages blocks of pixels:
    a window on the level is exactly the average of the photo's region its box names."""
    image = torch.rand(1, 24, 36, generator=torch.Generator().manual_seed(2))
    boxes, _, levels = pyramid_window_scores(linear_scorer(1, 3, 1), image, 3, 1, [1 / 3])
    level = image_pyramid(image, [1 / 3])[0]
    crops = window_crops(level, 3, 1)
    for box, crop in zip(boxes.tolist(), crops, strict=True):
        x1, y1, x2, y2 = (round(v) for v in box)
        assert all(abs(v - round(v)) < 1e-9 for v in box) and (x2 - x1, y2 - y1) == (9, 9)
        torch.testing.assert_close(F.avg_pool2d(image[None, :, y1:y2, x1:x2], 3)[0], crop)


# --- detection and mining -----------------------------------------------------


def test_detect_windows_equals_threshold_then_torchvision_nms():
    image = torch.rand(1, 60, 50, generator=torch.Generator().manual_seed(3))
    scorer = face_scorer(face_net(seed=1))
    scales = [1.0, 0.8, 0.6]
    boxes, scores, _ = pyramid_window_scores(scorer, image, 25, 4, scales)
    threshold = scores.median().item()
    found = detect_windows(scorer, image, 25, 4, scales, threshold, 0.3)
    confident = scores > threshold
    keep = tvo.nms(boxes[confident], scores[confident], 0.3)
    assert 0 < len(keep) < int(confident.sum())
    assert torch.equal(found["boxes"], boxes[confident][keep])
    assert torch.equal(found["scores"], scores[confident][keep])
    assert found["labels"].dtype == torch.int64 and found["labels"].tolist() == [0] * len(keep)


def test_nothing_above_the_threshold_gives_empty_results():
    image = torch.rand(1, 40, 40)
    scorer = face_scorer(face_net())
    found = detect_windows(scorer, image, 25, 4, [1.0, 0.7], 1.0, 0.5)
    assert found["boxes"].shape == (0, 4) and found["boxes"].dtype == torch.float32
    assert found["scores"].shape == (0,) and found["labels"].shape == (0,)
    assert found["labels"].dtype == torch.int64
    crops = mine_hard_negatives(scorer, [image], 25, 4, [1.0, 0.7], 1.0, 10)
    assert crops.shape == (0, 1, 25, 25) and crops.dtype == torch.float32
    assert mine_hard_negatives(scorer, [], 25, 4, [1.0], 0.5, 10).shape == (0, 1, 25, 25)


def test_mine_hard_negatives_takes_the_top_windows_of_each_image():
    scorer = face_scorer(face_net(seed=2))
    images = [
        torch.rand(1, 50, 70, generator=torch.Generator().manual_seed(4)),
        torch.rand(1, 30, 30, generator=torch.Generator().manual_seed(5)),
    ]
    scales = [1.0, 0.6]  # the second image's 0.6 level (18 x 18) is too small: skipped
    crops = mine_hard_negatives(scorer, images, 25, 4, scales, 0.0, 5)
    assert crops.shape == (5 + 4, 1, 25, 25)  # the small image has 2 x 2 windows at 1.0
    expected = []
    for image in images:
        found, found_scores = [], []
        for level in image_pyramid(image, scales):
            if min(level.shape[1:]) < 25:
                continue
            _, level_scores = explicit(scorer, level, 25, 4)
            found.append(window_crops(level, 25, 4))
            found_scores.append(level_scores)
        order = torch.cat(found_scores).argsort(descending=True, stable=True)[:5]
        expected.append(torch.cat(found)[order])
    torch.testing.assert_close(crops, torch.cat(expected))


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: sliding_windows((10, 10), 11, 1), "window"),
        (lambda: sliding_windows((10, 30), 11, 1), "window"),
        (lambda: sliding_windows((10, 10), 0, 1), "window"),
        (lambda: sliding_windows((10, 10), 3, 0), "stride"),
        (lambda: sliding_windows((10, 10), 3, -2), "stride"),
        (lambda: sliding_windows((10, 10), 3, 1.5), "stride"),
        (lambda: sliding_windows((10, -1), 3, 1), "image_size"),
        (lambda: window_crops(torch.rand(1, 8, 8), 9, 1), "window"),
        (lambda: window_crops(torch.rand(8, 8), 3, 1), "image"),
        (lambda: window_crops(torch.zeros(1, 8, 8, dtype=torch.uint8), 3, 1), "image"),
        (lambda: window_crops(torch.rand(1, 8, 8), 3, 0), "stride"),
        (lambda: window_scores(lambda x: x[:, 0], torch.rand(1, 8, 8), 9, 1), "window"),
        (lambda: window_scores(lambda x: x[:, 0], torch.rand(1, 8, 8), 3, 1), "scorer"),
        (lambda: dense_window_scores(lambda x: x[:, 0], torch.rand(1, 8, 8), 9, 1), "window"),
        (lambda: dense_window_scores(lambda x: x[:, 0], torch.rand(1, 8, 8), 3, 1), "scorer"),
        (lambda: dense_window_scores(lambda x: x[:, 0], torch.rand(1, 8, 8), 3, -1), "stride"),
        (lambda: image_pyramid(torch.rand(1, 8, 8), [1.0, 0.0]), "scales"),
        (lambda: image_pyramid(torch.rand(1, 8, 8), [-0.5]), "scales"),
        (lambda: image_pyramid(torch.rand(1, 8, 8), [0.01]), "scales"),
        (lambda: image_pyramid(torch.rand(1, 8, 8), []), "scales"),
        (lambda: pyramid_scales(25, 0, 100), "min_size"),
        (lambda: pyramid_scales(25, 60, 50), "max_size"),
        (lambda: pyramid_scales(25, 60, 100, 1.0), "factor"),
        (lambda: pyramid_scales(0, 60, 100), "window"),
        (lambda: rescale_boxes(torch.zeros(2, 3), (4, 4), (8, 8)), "boxes"),
        (lambda: rescale_boxes(torch.zeros(2, 4), (0, 4), (8, 8)), "from_size"),
        (
            lambda: pyramid_window_scores(
                linear_scorer(1, 5, 1), torch.rand(1, 20, 20), 5, 1, [1.0, 0.2]
            ),
            "window",
        ),
        (
            lambda: detect_windows(
                linear_scorer(1, 5, 1), torch.rand(1, 20, 20), 5, 1, [1.0], 0.5, 1.5
            ),
            "iou_threshold",
        ),
        (
            lambda: mine_hard_negatives(
                linear_scorer(1, 5, 1), [torch.rand(1, 9, 9)], 5, 1, [1.0], 0.5, 0
            ),
            "max_per_image",
        ),
        (
            lambda: mine_hard_negatives(
                linear_scorer(1, 5, 1), [torch.rand(9, 9)], 5, 1, [1.0], 0.5, 3
            ),
            "images",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_a_level_too_small_names_its_scale():
    with pytest.raises(ValueError, match=r"scales\[1\]"):
        pyramid_window_scores(linear_scorer(1, 5, 1), torch.rand(1, 20, 20), 5, 1, [1.0, 0.2])


@pytest.mark.parametrize("obj", [sliding_windows, window_scores, dense_window_scores])
def test_shown_code_reads_whole(obj):
    """Chapter 5 shows these: a screenful, no hidden helper but the checks."""
    assert_reads_whole(obj)


# --- CUDA ---------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_windows_on_cuda():
    image = torch.rand(1, 40, 52)
    net = face_net()
    scorer = face_scorer(net)
    found = detect_windows(scorer, image, 25, 4, [1.0, 0.8], 0.0, 0.3)
    found_cuda = detect_windows(face_scorer(net.cuda()), image.cuda(), 25, 4, [1.0, 0.8], 0.0, 0.3)
    assert found_cuda["boxes"].device.type == "cuda"
    torch.testing.assert_close(found_cuda["boxes"].cpu(), found["boxes"])
    torch.testing.assert_close(found_cuda["scores"].cpu(), found["scores"], rtol=0, atol=1e-5)
