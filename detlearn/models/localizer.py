"""Localizer: one object per image, its class and its box (chapter 4).

A classifier with a second head: the backbone's last map feeds a
:class:`ClassificationHead` (what) and a :class:`BoxHead` (where). Training
minimises the multi-task loss ``L = L_cls + lam * L_box``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from detlearn import _checks
from detlearn.boxes import box_convert
from detlearn.losses import generalized_box_iou_loss, smooth_l1_loss
from detlearn.models.backbone import (
    Backbone,
    ConfiguredModule,
    check_targets,
    set_fields,
    to_batch,
)
from detlearn.models.heads import POOLS, BoxHead, ClassificationHead

__all__ = ["BOX_LOSSES", "Localizer", "LocalizerConfig"]

BOX_LOSSES = ("l2", "smooth_l1", "giou")


@dataclass(frozen=True)
class LocalizerConfig:
    """The settings of a :class:`Localizer`, checked once, here.

    Attributes:
        num_classes: K.
        image_size: side of the (square) input images; the box head's flatten
            needs it.
        widths: channels of the backbone's stages.
        pool: global pooling of the classification head, ``"avg"`` or ``"max"``.
        box_loss: ``"l2"`` (mean squared error), ``"smooth_l1"`` (quadratic
            below ``beta``, linear above) or ``"giou"`` (``1 - GIoU``). L2 and
            smooth L1 compare the corners ``x1, y1, x2, y2`` divided by the image
            size, so they do not depend on the image size in pixels; GIoU needs no
            scaling.
        lam: weight of the box loss in ``L_cls + lam * L_box``.
        beta: smooth L1's switch point, in image fractions (0.02 is 2 pixels of a
            96-pixel image).
    """

    num_classes: int
    image_size: int = 96
    widths: Sequence[int] = (8, 16, 32, 64, 64)
    pool: str = "max"
    box_loss: str = "giou"
    lam: float = 1.0
    beta: float = 0.02

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(
                f"box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}"
            )
        set_fields(
            self,
            num_classes=_checks.positive_int(self.num_classes, "num_classes"),
            image_size=_checks.positive_int(self.image_size, "image_size"),
            widths=_checks.positive_ints(self.widths, "widths"),
            lam=_checks.number(self.lam, "lam", low=0.0),
            beta=_checks.number(self.beta, "beta", low=0.0),
        )


class Localizer(ConfiguredModule):
    """What and where, for images that hold exactly one object.

    ``Localizer(num_classes, **settings)`` or ``Localizer(config=...)``: the
    settings are the fields of :class:`LocalizerConfig` (``model.config``), and
    each reads as an attribute too (``model.image_size``).

    Calling convention (torchvision's):

    * training mode, ``model(images, targets)`` -> ``{'loss_cls': L_cls,
      'loss_box': lam * L_box}``, so the values sum to
      ``detlearn.losses.multitask_loss(L_cls, L_box, lam)``;
      each target holds ``labels`` int64 ``[1]`` and ``boxes`` float32 ``[1, 4]``.
    * eval mode, ``model(images)`` -> one dict per image: ``{'boxes': float32
      [1, 4] xyxy pixels, 'labels': int64 [1], 'scores': float32 [1]}``.
    * ``model.predict_raw(images)`` -> ``(logits [B, K], boxes [B, 4])`` in either
      mode.
    """

    config_class = LocalizerConfig
    layer_settings = ("num_classes", "image_size", "widths", "pool")

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        config: LocalizerConfig | None = None,
        **settings,
    ) -> None:
        super().__init__(num_classes, config, **settings)
        config = self.config
        stride = 2 ** (len(config.widths) - 1)
        self.backbone = Backbone(config.widths, out_strides=(stride,))
        channels = self.backbone.out_channels[-1]
        self.cls_head = ClassificationHead(channels, config.num_classes, config.pool)
        size = config.image_size
        self.box_head = BoxHead(channels, Backbone.feature_size((size, size), stride))

    def predict_raw(
        self, images: torch.Tensor | Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, K], boxes [B, 4])``, boxes xyxy in the input images' pixels."""
        x = to_batch(images)
        size = self.image_size
        if x.shape[-2:] != (size, size):
            raise ValueError(
                f"images must be {size} x {size}, got {tuple(x.shape[-2:])}"
            )
        feature = self.backbone(x)[-1]
        cxcywh = self.box_head(feature)  # fractions of the image
        h, w = x.shape[-2:]
        scale = cxcywh.new_tensor([w, h, w, h])
        return self.cls_head(feature), box_convert(cxcywh, "cxcywh", "xyxy") * scale

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        logits, boxes = self.predict_raw(images)
        if self.training:
            targets = check_targets(
                targets, len(logits), ["labels", "boxes"], logits.device
            )
            loss_cls, loss_box = self.compute_loss(logits, boxes, targets)
            # the values sum to multitask_loss(loss_cls, loss_box, self.lam)
            return {"loss_cls": loss_cls, "loss_box": self.lam * loss_box}
        return self.postprocess(logits, boxes)

    def compute_loss(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_cls, L_box)``: batch means (``L_box`` not yet times ``lam``)."""
        labels = torch.cat([t["labels"] for t in targets])
        gt_boxes = torch.cat([t["boxes"] for t in targets])
        loss_cls = F.cross_entropy(logits, labels)
        return loss_cls, self.box_regression_loss(boxes, gt_boxes)

    def box_regression_loss(
        self, boxes: torch.Tensor, gt_boxes: torch.Tensor
    ) -> torch.Tensor:
        """Mean box loss between predicted and true ``[B, 4]`` xyxy pixel boxes."""
        if self.box_loss == "giou":
            return generalized_box_iou_loss(boxes, gt_boxes, reduction="mean")
        scale = float(self.image_size)
        if self.box_loss == "l2":
            return F.mse_loss(boxes / scale, gt_boxes / scale)
        return smooth_l1_loss(boxes / scale, gt_boxes / scale, beta=self.beta)

    @staticmethod
    def postprocess(
        logits: torch.Tensor, boxes: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        """One dict per image: the box, the most probable class and its probability."""
        scores, labels = logits.softmax(dim=1).max(dim=1)
        return [
            {
                "boxes": boxes[i : i + 1],
                "labels": labels[i : i + 1],
                "scores": scores[i : i + 1],
            }
            for i in range(len(labels))
        ]
