"""Images of different sizes in one batch, as torchvision's GeneralizedRCNNTransform.

    images (h_b, w_b) -> resize each: shorter side min_size, longer side at most
                         max_size (only when they are set)
                      -> zero-pad at the bottom and right to one size, a multiple of
                         the largest stride -> one tensor [B, 3, H, W]
    train: each target's boxes scale with its image       (resize_targets)
    eval:  each image's detections scale back to its own  (restore_boxes)
           pixels and are clipped to it

Padding only at the bottom and right leaves every pixel where it was, so boxes
need no shift; only a resize moves them, by the ratio of the sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from detlearn import _checks
from detlearn.boxes import clip_boxes_to_image

__all__ = [
    "image_sizes",
    "pad_images",
    "resize_and_pad",
    "resize_boxes",
    "resize_image",
    "resize_targets",
    "resized_size",
    "restore_boxes",
]

Size = tuple[int, int]
Target = dict[str, torch.Tensor]


def image_sizes(images: torch.Tensor | Sequence[torch.Tensor]) -> list[Size]:
    """``(H, W)`` of each image of a ``[B, 3, H, W]`` tensor or ``[3, H, W]`` list."""
    return [(int(image.shape[-2]), int(image.shape[-1])) for image in images]


def resized_size(
    size: Size, min_size: int | None = None, max_size: int | None = None
) -> Size:
    """The ``(H, W)`` an image of ``size`` is resized to (torchvision's rule).

    One scale for both sides, so the aspect ratio stays: ``min_size / shorter side``,
    made smaller if the longer side would then exceed ``max_size``. A bound that is
    ``None`` does not apply; with both ``None`` the size is kept. The sides are
    rounded to whole pixels.
    """
    height, width = size
    scales = []
    if min_size is not None:
        scales.append(min_size / min(height, width))
    if max_size is not None:
        scales.append(max_size / max(height, width))
    if not scales:
        return height, width
    scale = min(scales)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: torch.Tensor, size: Size) -> torch.Tensor:
    """``image [3, H, W]`` resampled to ``size = (h, w)``: bilinear, ``align_corners=
    False``, no antialiasing, as torchvision's detectors; unchanged if it has that size.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False
    ).squeeze(0)


def pad_images(
    images: torch.Tensor | Sequence[torch.Tensor], size_divisible: int = 1
) -> torch.Tensor:
    """Images as one tensor ``[B, 3, H, W]``, zero-padded at the bottom and right.

    ``H`` and ``W`` are the largest height and width, rounded up to a multiple of
    ``size_divisible`` (so that every stride-``s`` map covers the whole image when
    ``s`` divides it). A tensor that needs no padding is returned as it is.
    """
    sizes = image_sizes(images)
    height = -(-max(h for h, _ in sizes) // size_divisible) * size_divisible
    width = -(-max(w for _, w in sizes) // size_divisible) * size_divisible
    if isinstance(images, torch.Tensor):
        if images.shape[-2:] == (height, width):
            return images
        return F.pad(
            images, (0, width - images.shape[-1], 0, height - images.shape[-2])
        )
    batch = images[0].new_zeros((len(images), 3, height, width))
    for b, (image, (h, w)) in enumerate(zip(images, sizes, strict=True)):
        batch[b, :, :h, :w] = image
    return batch


def resize_and_pad(
    images: torch.Tensor | Sequence[torch.Tensor],
    min_size: int | None = None,
    max_size: int | None = None,
    size_divisible: int = 1,
) -> tuple[torch.Tensor, list[Size]]:
    """Resize each image (see :func:`resized_size`) and pad them into one batch.

    Args:
        images: ``[B, 3, H, W]`` or a list of ``[3, H_b, W_b]`` float tensors.
        min_size, max_size: the resize bounds; ``None`` and ``None`` keep each size.
        size_divisible: the batch's height and width are multiples of it.

    Returns:
        ``(batch [B, 3, H, W], sizes)``: ``sizes[b] = (h_b, w_b)`` is the resized
        image ``b``, which fills ``batch[b, :, :h_b, :w_b]`` (zeros elsewhere).
        Images that keep their size are not resampled (:func:`resize_image`), so
        without resizing and padding a tensor comes back unchanged.
    """
    images = _checks.images(images)
    size_divisible = _checks.positive_int(size_divisible, "size_divisible")
    if min_size is not None:
        min_size = _checks.positive_int(min_size, "min_size")
    if max_size is not None:
        max_size = _checks.positive_int(max_size, "max_size")
    sizes = [resized_size(size, min_size, max_size) for size in image_sizes(images)]
    if sizes != image_sizes(images):
        images = [
            resize_image(im, size) for im, size in zip(images, sizes, strict=True)
        ]
    return pad_images(images, size_divisible), sizes


def resize_boxes(boxes: torch.Tensor, old_size: Size, new_size: Size) -> torch.Tensor:
    """xyxy boxes ``[N, 4]`` on an image of ``old_size`` moved onto the same image
    resized to ``new_size`` (both ``(H, W)``): x times ``W_new / W_old``, y times
    ``H_new / H_old``, as torchvision's ``resize_boxes``."""
    ratio_y, ratio_x = new_size[0] / old_size[0], new_size[1] / old_size[1]
    return boxes * boxes.new_tensor([ratio_x, ratio_y, ratio_x, ratio_y])


def resize_targets(
    targets: Sequence[Target], old_sizes: Sequence[Size], new_sizes: Sequence[Size]
) -> list[Target]:
    """Each target's ``boxes`` moved onto its resized image (other keys kept)."""
    return [
        {**target, "boxes": resize_boxes(target["boxes"], old, new)}
        for target, old, new in zip(targets, old_sizes, new_sizes, strict=True)
    ]


def restore_boxes(
    detections: Sequence[Target], sizes: Sequence[Size], original_sizes: Sequence[Size]
) -> list[Target]:
    """Detections on the resized, padded batch back in each original image's pixels.

    ``detections[b]['boxes']`` (on image ``b`` resized to ``sizes[b]``) scale back
    to ``original_sizes[b]`` and are clipped to it: a box that reached into the
    padding ends at the image's border. Scores and labels are kept.
    """
    return [
        {
            **out,
            "boxes": clip_boxes_to_image(
                resize_boxes(out["boxes"], size, original), original
            ),
        }
        for out, size, original in zip(detections, sizes, original_sizes, strict=True)
    ]
