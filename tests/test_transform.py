"""detlearn.models.transform: resizing and padding images of different sizes into
one batch, against torchvision's GeneralizedRCNNTransform, and boxes mapped there
and back."""

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detlearn.models.transform import (
    image_sizes,
    pad_images,
    resize_and_pad,
    resize_boxes,
    resize_image,
    resize_targets,
    resized_size,
    restore_boxes,
)


@pytest.mark.parametrize(
    ("size", "min_size", "max_size", "expected"),
    [
        ((48, 72), 96, 1000, (96, 144)),  # shorter side to min_size
        ((48, 72), 96, 120, (80, 120)),  # unless the longer side passes max_size
        ((200, 100), 50, None, (100, 50)),
        ((200, 100), None, 100, (100, 50)),
        ((37, 53), None, None, (37, 53)),
    ],
)
def test_resized_size(size, min_size, max_size, expected):
    assert resized_size(size, min_size, max_size) == expected


@pytest.mark.parametrize(("min_size", "max_size"), [(96, 1000), (96, 120)])
def test_resize_and_pad_equals_torchvision(min_size, max_size):
    """Scales that give whole pixels: the same batch and sizes as torchvision's
    GeneralizedRCNNTransform (normalisation switched off)."""
    torch.manual_seed(0)
    images = [torch.rand(3, 48, 72), torch.rand(3, 96, 64), torch.rand(3, 96, 96)]
    reference = GeneralizedRCNNTransform(
        min_size, max_size, [0.0] * 3, [1.0] * 3, size_divisible=32
    ).eval()
    expected, _ = reference(images)
    batch, sizes = resize_and_pad(images, min_size, max_size, size_divisible=32)
    assert sizes == [tuple(s) for s in expected.image_sizes]
    torch.testing.assert_close(batch, expected.tensors, atol=1e-6, rtol=0)


def test_padding_is_at_the_bottom_and_right_only():
    images = [torch.rand(3, 20, 30), torch.rand(3, 33, 10)]
    batch = pad_images(images, size_divisible=16)
    assert batch.shape == (2, 3, 48, 32)
    for image, padded in zip(images, batch, strict=True):
        h, w = image.shape[-2:]
        assert torch.equal(padded[:, :h, :w], image)
        assert padded[:, h:].abs().sum() == 0 and padded[:, :, w:].abs().sum() == 0


def test_nothing_to_resize_or_pad_returns_the_tensor_itself():
    images = torch.rand(2, 3, 32, 48)
    batch, sizes = resize_and_pad(images, size_divisible=16)
    assert batch is images and sizes == [(32, 48)] * 2
    image = images[0]
    assert resize_image(image, (32, 48)) is image


def test_boxes_go_there_and_back():
    boxes = torch.tensor([[3.0, 6.0, 30.0, 12.0], [0.0, 0.0, 60.0, 40.0]])
    moved = resize_boxes(boxes, (40, 60), (60, 30))  # y x 1.5, x x 0.5
    assert torch.equal(moved, torch.tensor([[1.5, 9.0, 15.0, 18.0], [0, 0, 30, 60.0]]))
    [target] = resize_targets(
        [{"boxes": boxes, "labels": torch.tensor([1, 2])}], [(40, 60)], [(60, 30)]
    )
    assert torch.equal(target["boxes"], moved) and target["labels"].tolist() == [1, 2]
    out = {"boxes": moved, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}
    [restored] = restore_boxes([out], [(60, 30)], [(40, 60)])
    torch.testing.assert_close(restored["boxes"], boxes)
    assert restored["scores"] is out["scores"]


def test_restore_clips_to_the_original_image():
    """A box reaching into the padding ends at the image's border."""
    out = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 45.0]])}
    [restored] = restore_boxes([out], [(32, 40)], [(32, 40)])
    assert restored["boxes"].tolist() == [[10.0, 10.0, 40.0, 32.0]]


def test_image_sizes_of_a_tensor_and_a_list():
    assert image_sizes(torch.zeros(2, 3, 5, 7)) == [(5, 7), (5, 7)]
    assert image_sizes([torch.zeros(3, 5, 7), torch.zeros(3, 2, 9)]) == [(5, 7), (2, 9)]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="size_divisible"):
        resize_and_pad([torch.rand(3, 8, 8)], size_divisible=0)
    with pytest.raises(ValueError, match="min_size"):
        resize_and_pad([torch.rand(3, 8, 8)], min_size=0)
    with pytest.raises(ValueError, match="max_size"):
        resize_and_pad([torch.rand(3, 8, 8)], max_size=-4)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        resize_and_pad([torch.rand(3, 8, 8), torch.rand(8, 8)])
