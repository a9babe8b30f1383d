"""Heads: what turns backbone feature maps into class scores and boxes.

* :class:`ClassificationHead` pools a map to one vector and scores K classes.
* :class:`BoxHead` reads a whole (small) map and regresses one box: the
  localizer's "4-number head".
* :class:`DenseHead` predicts at every location of a map, for each of its A
  anchors, K class logits and 4 box deltas: the detector's head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from detlearn.models.backbone import conv_bn_relu

__all__ = ["POOLS", "BoxHead", "ClassificationHead", "DenseHead"]

POOLS = ("avg", "max")


class ClassificationHead(nn.Module):
    """Global pooling then a linear layer: ``[B, C, H, W]`` -> logits ``[B, K]``.

    Args:
        in_channels: C.
        num_classes: K.
        pool: ``"avg"`` averages each channel over the map (every location
            counts the same), ``"max"`` keeps each channel's strongest response
            (one location is enough, which suits small objects).
    """

    def __init__(self, in_channels: int, num_classes: int, pool: str = "avg") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.adaptive_avg_pool2d if self.pool == "avg" else F.adaptive_max_pool2d
        return self.linear(pool(x, 1).flatten(1))


class BoxHead(nn.Module):
    """One box from a whole feature map: ``[B, C, H, W]`` -> ``[B, 4]`` in (0, 1).

    A 1x1 convolution squeezes the channels, the map is flattened (so every
    location keeps its own weights: *where* a response is tells where the object
    is), and a two-layer MLP ends in a sigmoid. The four outputs are the box's
    ``(cx, cy, w, h)`` as fractions of the image width and height.

    Args:
        in_channels: C.
        feature_size: ``(H, W)`` of the input map; fixed, because of the flatten.
        squeeze: channels after the 1x1 convolution.
        hidden: width of the MLP's hidden layer.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: tuple[int, int],
        squeeze: int = 16,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        h, w = feature_size
        self.squeeze = nn.Sequential(
            nn.Conv2d(in_channels, squeeze, 1), nn.ReLU(inplace=True)
        )
        self.mlp = nn.Sequential(
            nn.Linear(squeeze * h * w, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.squeeze(x).flatten(1)))


class DenseHead(nn.Module):
    """Predictions at every location of one feature map, for each of its A anchors.

    A 3x3 conv-BN-ReLU, then two 3x3 convolutions: one gives ``A * K`` class
    logits per location, the other ``A * 4`` box deltas. The outputs are
    reshaped so that row ``(i * W + j) * A + a`` belongs to anchor ``a`` at
    location ``(i, j)``: the order of :func:`detlearn.anchors.make_anchors`.

    Args:
        in_channels: C of the map.
        num_anchors: A, anchors per location.
        num_classes: K.
        prior_prob: the class bias starts at ``-log((1 - p) / p)`` so that every
            sigmoid score starts near ``p`` (RetinaNet's initialisation; without
            it the many background anchors swamp the first steps).

    ``forward(x [B, C, H, W])`` -> ``(logits [B, H*W*A, K], deltas [B, H*W*A, 4])``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.tower = conv_bn_relu(in_channels, in_channels)
        self.cls_logits = nn.Conv2d(
            in_channels, num_anchors * num_classes, 3, padding=1
        )
        self.box_deltas = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for conv in (self.cls_logits, self.box_deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        prior_bias = -math.log((1 - prior_prob) / prior_prob)
        nn.init.constant_(self.cls_logits.bias, prior_bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tower(x)
        return self._per_anchor(self.cls_logits(x), self.num_classes), self._per_anchor(
            self.box_deltas(x), 4
        )

    @staticmethod
    def _per_anchor(x: torch.Tensor, n: int) -> torch.Tensor:
        """``[B, A * n, H, W]`` -> ``[B, H * W * A, n]``, location-major then anchor."""
        b, _, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, h * w * (x.shape[1] // n), n)
