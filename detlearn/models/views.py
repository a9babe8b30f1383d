"""The 8 views of a square image, for training augmentation and test-time augmentation.

A view is a combination of three steps, each its own inverse: a left-right
flip, a top-bottom flip and a transposition (which swaps x and y, so only
square images have it). View ``k`` in ``0 .. 7`` applies the steps whose bits
are set in ``k``, in the order of :class:`Step`. :func:`dihedral` moves a batch
of images and their boxes together; :func:`detect_views` runs a detector on
several views of each image and merges what it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntFlag

import torch
from torch import nn

from detlearn import _checks
from detlearn.models.backbone import to_batch
from detlearn.nms import batched_nms, box_voting

__all__ = ["Step", "detect_views", "dihedral", "view_steps"]

Target = dict[str, torch.Tensor]


class Step(IntFlag):
    """One step of a view; view ``k`` takes the steps whose bits are set in ``k``."""

    FLIP_LEFT_RIGHT = 1
    FLIP_TOP_BOTTOM = 2
    TRANSPOSE = 4


def view_steps(k: int, height: int, width: int) -> list[Step]:
    """The steps of view ``k``, in the order they are applied.

    A non-square image has no transposition: its views 4 to 7 repeat views 0 to 3.
    """
    return [
        step
        for step in Step
        if k & step and (step is not Step.TRANSPOSE or height == width)
    ]


def move_boxes(
    boxes: torch.Tensor, step: Step, height: int, width: int
) -> torch.Tensor:
    """xyxy boxes ``[N, 4]`` in pixels after one step on a ``height x width`` image."""
    x1, y1, x2, y2 = boxes.unbind(1)
    if step is Step.FLIP_LEFT_RIGHT:
        return torch.stack([width - x2, y1, width - x1, y2], 1)
    if step is Step.FLIP_TOP_BOTTOM:
        return torch.stack([x1, height - y2, x2, height - y1], 1)
    return torch.stack([y1, x1, y2, x2], 1)


def move_images(images: torch.Tensor, step: Step) -> torch.Tensor:
    """Images ``[..., H, W]`` after one step."""
    if step is Step.TRANSPOSE:
        return images.transpose(-1, -2)
    return images.flip(-1 if step is Step.FLIP_LEFT_RIGHT else -2)


def dihedral(
    images: torch.Tensor, targets: Sequence[Target], k: int
) -> tuple[torch.Tensor, list[Target]]:
    """Apply the ``k``-th of the 8 flips and transpositions of the square to a batch.

    ``images [B, 3, H, W]`` and each target's ``boxes`` (xyxy pixels) move
    together; labels stay; the input targets are left unchanged. On
    ShapesDataset the 8 views of a scene are equally likely scenes (circles and
    squares are symmetric, triangles point in all four directions), so training
    on random views multiplies the training set by 8 for free.
    """
    height, width = images.shape[-2:]
    targets = [dict(t) for t in targets]
    for step in view_steps(k, height, width):
        images = move_images(images, step)
        for t in targets:
            if "boxes" in t:
                t["boxes"] = move_boxes(t["boxes"], step, height, width)
    return images, targets


@torch.no_grad()
def detect_views(
    model: nn.Module, images: torch.Tensor, views: int = 8, voting_thresh: float = 0.7
) -> list[Target]:
    """Test-time augmentation for a detector: look at each image in several views.

    The detector runs on the first ``views`` of the 8 :func:`dihedral` views of
    ``images [B, 3, H, W]``; each view's detections are mapped back onto the
    image (its steps undone, last first), and per image their union goes
    through class-aware NMS (the model's ``nms_thresh`` and
    ``detections_per_img``) and box voting at ``voting_thresh``, so that each
    object's box is the score-weighted mean of what the views saw. ``images`` may
    also be a list of ``[3, H, W]`` tensors of one size. Returns one
    dict of ``boxes``, ``labels``, ``scores`` per image, like the model's eval
    mode. ``views = 1`` gives the model's own detections. The model must be in
    eval mode.
    """
    images = to_batch(images)
    height, width = images.shape[-2:]
    views = _checks.integer(views, "views", 1, 8)
    voting_thresh = _checks.threshold(voting_thresh, "voting_thresh")
    if views > 4 and height != width:
        raise ValueError(
            "views above 4 transpose the image, which must be square, "
            f"got {height}x{width}"
        )
    if views == 1:
        return model(images)
    seen = []
    for k in range(views):
        outputs = model(dihedral(images, [], k)[0])
        for out in outputs:
            for step in reversed(view_steps(k, height, width)):
                out["boxes"] = move_boxes(out["boxes"], step, height, width)
        seen.append(outputs)
    merged = []
    with _checks.trusted():  # the model's own outputs: no value checks, no GPU waits
        for per_view in zip(*seen, strict=True):
            boxes, labels, scores = (
                torch.cat([out[key] for out in per_view])
                for key in ("boxes", "labels", "scores")
            )
            keep = batched_nms(boxes, scores, labels, model.nms_thresh)[
                : model.detections_per_img
            ]
            boxes = box_voting(boxes, scores, keep, voting_thresh, labels)
            merged.append(
                {"boxes": boxes, "labels": labels[keep], "scores": scores[keep]}
            )
    return merged
