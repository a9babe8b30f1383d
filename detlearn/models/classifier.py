"""Classifier: backbone -> global pooling -> linear layer -> logits (chapter 2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from detlearn import _checks
from detlearn.models.backbone import (
    Backbone,
    ConfiguredModule,
    check_targets,
    set_fields,
    to_batch,
)
from detlearn.models.heads import POOLS, ClassificationHead

__all__ = ["Classifier", "ClassifierConfig"]


@dataclass(frozen=True)
class ClassifierConfig:
    """The settings of a :class:`Classifier`, checked once, here.

    Attributes:
        num_classes: K.
        widths: channels of the backbone's stages (see :class:`Backbone`).
        pool: ``"avg"`` or ``"max"`` global pooling (see :class:`ClassificationHead`).
    """

    num_classes: int
    widths: Sequence[int] = (8, 16, 32, 64, 64)
    pool: str = "max"

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        set_fields(
            self,
            num_classes=_checks.positive_int(self.num_classes, "num_classes"),
            widths=_checks.positive_ints(self.widths, "widths"),
        )


class Classifier(ConfiguredModule):
    """What is in the image: one label per image.

    ``Classifier(num_classes, **settings)`` or ``Classifier(config=...)``: the
    settings are the fields of :class:`ClassifierConfig` (``model.config``).

    Calling convention (torchvision's):

    * training mode, ``model(images, targets)`` -> ``{'loss_cls': cross-entropy}``;
      each target holds ``labels`` int64 ``[1]``.
    * eval mode, ``model(images)`` -> one dict per image:
      ``{'labels': int64 [1], 'scores': float32 [1]}``, the most probable class
      and its softmax probability.
    * ``model.logits(images)`` -> raw logits ``[B, K]`` in either mode.

    ``images`` is a ``[B, 3, H, W]`` tensor or a list of ``[3, H, W]`` tensors.
    """

    config_class = ClassifierConfig
    layer_settings = ("num_classes", "widths", "pool")

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        config: ClassifierConfig | None = None,
        **settings,
    ) -> None:
        super().__init__(num_classes, config, **settings)
        config = self.config
        stride = 2 ** (len(config.widths) - 1)
        self.backbone = Backbone(config.widths, out_strides=(stride,))
        channels = self.backbone.out_channels[-1]
        self.head = ClassificationHead(channels, config.num_classes, config.pool)

    def logits(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``[B, K]`` class logits."""
        return self.head(self.backbone(to_batch(images))[-1])

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        logits = self.logits(images)
        if self.training:
            targets = check_targets(targets, len(logits), ["labels"], logits.device)
            return {"loss_cls": self.compute_loss(logits, targets)}
        return self.postprocess(logits)

    @staticmethod
    def compute_loss(
        logits: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]
    ) -> torch.Tensor:
        """Mean cross-entropy of ``logits [B, K]`` against each target's one label."""
        labels = torch.cat([t["labels"] for t in targets])
        return F.cross_entropy(logits, labels)

    @staticmethod
    def postprocess(logits: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Softmax, then the most probable class of each image and its probability."""
        scores, labels = logits.softmax(dim=1).max(dim=1)
        return [
            {"labels": labels[i : i + 1], "scores": scores[i : i + 1]}
            for i in range(len(labels))
        ]
