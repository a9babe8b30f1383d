"""TinyDetector: a single-stage anchor-based detector, as RetinaNet or SSD (chapter 11).

    images -> Backbone -> feature maps at strides (4, 8, 16)
           -> one DenseHead per map -> class logits and box deltas for every anchor
    train: anchors -> box_iou -> Matcher -> encode_boxes -> focal + box losses
    eval:  sigmoid scores -> threshold -> top-k -> decode_boxes -> clip -> batched_nms

Every geometric step is one of detlearn's building blocks; this file only wires
them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from detlearn import _checks
from detlearn._kernels import matching
from detlearn._kernels.boxes import box_iou
from detlearn.anchors import Matcher, decode_boxes, encode_boxes, make_anchors
from detlearn.boxes import clip_boxes_to_image
from detlearn.losses import (
    generalized_box_iou_loss,
    hard_negative_mask,
    sigmoid_focal_loss,
    smooth_l1_loss,
)
from detlearn.models.backbone import (
    Backbone,
    ConfiguredModule,
    check_targets,
    set_fields,
    to_batch,
)
from detlearn.models.heads import DenseHead
from detlearn.models.transform import (
    image_sizes,
    resize_and_pad,
    resize_targets,
    restore_boxes,
)
from detlearn.nms import batched_nms, box_voting

__all__ = ["CLS_LOSSES", "DET_BOX_LOSSES", "DetectorConfig", "TinyDetector"]

CLS_LOSSES = ("focal", "ce", "hard_negatives")
DET_BOX_LOSSES = ("smooth_l1", "giou")


def positives(foreground: torch.Tensor) -> torch.Tensor:
    """The losses' normaliser: positive anchors in ``foreground`` (bool), at least 1.

    Under DistributedDataParallel each process holds a shard of the batch and
    DDP averages their gradients. Dividing each shard's loss by the whole batch's
    count (summed over the processes) over the number of processes makes that
    average the gradient of the whole batch's loss, as in one process. Done only
    while gradients are being computed, when every process takes the same step.
    """
    count = foreground.sum()
    if not (dist.is_available() and dist.is_initialized() and torch.is_grad_enabled()):
        return count.clamp(min=1)
    dist.all_reduce(count)
    return count.clamp(min=1) / dist.get_world_size()


@dataclass(frozen=True)
class DetectorConfig:
    """The settings of a :class:`TinyDetector`, checked once, here.

    Attributes:
        num_classes: K. Labels are ``0 .. K-1``; there is no background class:
            an anchor is background when all its K targets are 0.
        widths: channels of the backbone's stages (stage ``k`` has stride ``2**k``).
        strides: the feature levels the heads read, e.g. ``(8, 16)`` (the
            backbone checks that they are stages' strides, increasing).
        sizes: anchor sizes in pixels, one tuple per level (anchor area is
            ``size**2``). The defaults cover ShapesDataset's objects (10 to 48
            pixels on a 96-pixel image) with sizes a factor sqrt(2) apart; the
            stride-4 level gives the smallest objects several anchors and fine
            features to place their boxes.
        aspect_ratios: anchor height / width ratios, shared by all levels.
        fg_iou_thresh: anchors with IoU >= this with a ground-truth box are
            foreground.
        bg_iou_thresh: anchors whose best IoU is below this are background; those
            in between are ignored by the classification loss.
        allow_low_quality_matches: also match each ground-truth box to its best
            anchor(s) even below ``fg_iou_thresh``, so that no object goes unmatched.
        cls_loss: ``"focal"`` (sigmoid focal loss), ``"ce"`` (binary cross-entropy
            per class: the focal loss with ``gamma = 0`` and no ``alpha``) or
            ``"hard_negatives"`` (SSD's hard negative mining: the binary
            cross-entropy summed over the classes of each anchor, kept for every
            positive anchor and, in each image, for the ``3 * P`` background
            anchors with the largest loss, ``P`` the image's positives; see
            :func:`detlearn.losses.hard_negative_mask`). Each is summed over the
            anchors it covers (all but the ignored ones for ``"focal"`` and
            ``"ce"``) and divided by the number of positive anchors.
        box_loss: ``"smooth_l1"`` on the encoded deltas or ``"giou"`` on the
            decoded boxes, over the positive anchors, divided by their number.
        focal_alpha, focal_gamma: the focal loss's parameters.
        box_weights: the ``(wx, wy, ww, wh)`` weights of encode/decode.
        smooth_l1_beta: smooth L1's switch point, in delta units.
        score_thresh: detections scoring at most this are dropped.
        nms_thresh: IoU above which class-aware NMS suppresses a box.
        topk_candidates: most candidates per level kept before NMS.
        detections_per_img: most detections returned per image.
        voting_thresh: if not ``None``, each detection's box becomes the
            score-weighted mean of the candidates of its class that overlap it by
            at least this IoU (:func:`detlearn.nms.box_voting`); ``None`` returns
            the boxes NMS kept as they are.
        prior_prob: initial foreground probability of every class score.
        min_size, max_size: if set, each image is first resized (aspect ratio
            kept) so that its shorter side is ``min_size`` pixels and its longer
            side at most ``max_size``, as torchvision's detectors do (see
            :func:`detlearn.models.transform.resized_size`); ``None`` (the
            default) keeps every image's size. Detections come back in each
            original image's pixels either way.

    Sequences are stored as tuples and numbers as floats, so a config read
    back from a checkpoint (lists) equals the one saved.
    """

    num_classes: int
    widths: Sequence[int] = (8, 16, 32, 64, 64)
    strides: Sequence[int] = (4, 8, 16)
    sizes: Sequence[Sequence[float]] = ((10.0, 14.0), (20.0, 28.0), (40.0, 56.0))
    aspect_ratios: Sequence[float] = (1.0,)
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    allow_low_quality_matches: bool = True
    cls_loss: str = "focal"
    box_loss: str = "smooth_l1"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0 / 9.0
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    topk_candidates: int = 1000
    detections_per_img: int = 100
    voting_thresh: float | None = None
    prior_prob: float = 0.01
    min_size: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        if self.cls_loss not in CLS_LOSSES:
            raise ValueError(
                f"cls_loss must be one of {CLS_LOSSES}, got {self.cls_loss!r}"
            )
        if self.box_loss not in DET_BOX_LOSSES:
            raise ValueError(
                f"box_loss must be one of {DET_BOX_LOSSES}, got {self.box_loss!r}"
            )
        if len(self.sizes) != len(self.strides):
            levels = len(self.strides)
            raise ValueError(
                f"sizes needs one tuple per level ({levels}), got {self.sizes}"
            )
        fg = _checks.threshold(self.fg_iou_thresh, "fg_iou_thresh")
        bg = _checks.threshold(self.bg_iou_thresh, "bg_iou_thresh")
        if bg > fg:
            raise ValueError(f"bg_iou_thresh must be <= fg_iou_thresh, got {bg} > {fg}")
        prior = _checks.number(self.prior_prob, "prior_prob", 0.0, 1.0)
        if prior in (0.0, 1.0):
            raise ValueError(
                f"prior_prob must be strictly between 0 and 1, got {prior}"
            )
        voting = self.voting_thresh
        min_size, max_size = self.min_size, self.max_size
        if min_size is not None:
            min_size = _checks.positive_int(min_size, "min_size")
        if max_size is not None:
            max_size = _checks.positive_int(max_size, "max_size")
        if min_size is not None and max_size is not None and max_size < min_size:
            raise ValueError(
                f"max_size must be >= min_size, got {max_size} < {min_size}"
            )
        if voting is not None:
            voting = _checks.threshold(voting, "voting_thresh")
        set_fields(
            self,
            num_classes=_checks.positive_int(self.num_classes, "num_classes"),
            widths=_checks.positive_ints(self.widths, "widths"),
            strides=tuple(int(s) for s in self.strides),
            sizes=tuple(
                tuple(_checks.positive_list(s, f"sizes[{k}]"))
                for k, s in enumerate(self.sizes)
            ),
            aspect_ratios=tuple(
                _checks.positive_list(self.aspect_ratios, "aspect_ratios")
            ),
            fg_iou_thresh=fg,
            bg_iou_thresh=bg,
            focal_alpha=_checks.number(self.focal_alpha, "focal_alpha", -1.0, 1.0),
            focal_gamma=_checks.number(self.focal_gamma, "focal_gamma", low=0.0),
            box_weights=_checks.box_weights(self.box_weights, "box_weights"),
            smooth_l1_beta=_checks.number(
                self.smooth_l1_beta, "smooth_l1_beta", low=0.0
            ),
            score_thresh=_checks.threshold(self.score_thresh, "score_thresh"),
            nms_thresh=_checks.threshold(self.nms_thresh, "nms_thresh"),
            topk_candidates=_checks.positive_int(
                self.topk_candidates, "topk_candidates"
            ),
            detections_per_img=_checks.positive_int(
                self.detections_per_img, "detections_per_img"
            ),
            voting_thresh=voting,
            prior_prob=prior,
            min_size=min_size,
            max_size=max_size,
        )


class TinyDetector(ConfiguredModule):
    """Dense detector: for every anchor, K sigmoid class scores and 4 box deltas.

    ``TinyDetector(num_classes, **settings)`` or ``TinyDetector(config=...)``:
    the settings are the fields of :class:`DetectorConfig` (``model.config``),
    and each reads as an attribute too (``model.nms_thresh``).

    Calling convention (torchvision's):

    * training mode, ``model(images, targets)`` -> ``{'loss_cls', 'loss_box'}``;
      each target holds ``boxes`` float ``[N, 4]`` xyxy pixels and ``labels``
      int64 ``[N]``; ``N = 0`` is legal (an image of background only).
    * eval mode, ``model(images)`` -> one dict per image ``{'boxes': float32
      [D, 4], 'labels': int64 [D], 'scores': float32 [D]}``, by decreasing score.

    ``images`` is a ``[B, 3, H, W]`` tensor or a list of ``[3, H, W]`` tensors of
    any sizes; detections come back in each image's own pixels. ``forward`` checks
    its inputs; the steps behind it trust them. The steps are methods, to be read
    and called one by one: :meth:`prepare`, :meth:`anchors_for`,
    :meth:`predict_raw`, :meth:`assign`, :meth:`compute_loss`, :meth:`postprocess`.
    """

    config_class = DetectorConfig
    layer_settings = (
        "num_classes",
        "widths",
        "strides",
        "sizes",
        "aspect_ratios",
        "prior_prob",
    )

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        config: DetectorConfig | None = None,
        **settings,
    ) -> None:
        super().__init__(num_classes, config, **settings)
        config = self.config
        self.backbone = Backbone(config.widths, out_strides=config.strides)
        anchors_per_location = [
            len(s) * len(config.aspect_ratios) for s in config.sizes
        ]
        self.heads = nn.ModuleList(
            DenseHead(channels, num_anchors, config.num_classes, config.prior_prob)
            for channels, num_anchors in zip(
                self.backbone.out_channels, anchors_per_location, strict=True
            )
        )
        self._anchor_cache: dict[tuple, list[torch.Tensor]] = {}

    @property
    def matcher(self) -> Matcher:
        """The :class:`~detlearn.anchors.Matcher` that :meth:`assign` applies."""
        return Matcher(
            self.fg_iou_thresh, self.bg_iou_thresh, self.allow_low_quality_matches
        )

    # -- the steps ---------------------------------------------------------------------

    def anchors_for(
        self, image_size: tuple[int, int], device: torch.device | str = "cpu"
    ) -> list[torch.Tensor]:
        """Anchors of every level for ``(H, W)``-pixel images: ``[H_l * W_l * A_l, 4]``.

        Same order as the heads' outputs (location-major, then anchor), so row ``n``
        of level ``l``'s anchors is the anchor that row ``n`` of its predictions is
        about.
        """
        key = (int(image_size[0]), int(image_size[1]), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = [
                make_anchors(
                    Backbone.feature_size(image_size, stride),
                    stride,
                    sizes,
                    self.aspect_ratios,
                ).to(device)
                for stride, sizes in zip(self.strides, self.sizes, strict=True)
            ]
        return self._anchor_cache[key]

    def predict_raw(
        self, images: torch.Tensor | Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: class logits ``[B, N_l, K]`` and box deltas ``[B, N_l, 4]``."""
        return self.head_outputs(self.backbone(to_batch(images)))

    def head_outputs(
        self, features: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The heads on the maps at ``strides``: per level logits and deltas."""
        outputs = [
            head(feature) for head, feature in zip(self.heads, features, strict=True)
        ]
        return [logits for logits, _ in outputs], [deltas for _, deltas in outputs]

    def prepare(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]] | None, list, list]:
        """One batch from ``images`` and, in training, its checked targets.

        The images are resized if ``min_size``/``max_size`` are set and padded at
        the bottom and right to a multiple of the largest stride; training
        targets are checked and resized with them. Returns ``(batch [B, 3, H, W],
        targets, sizes, originals)``: each image's ``(H, W)`` in the batch and
        before, for :func:`~detlearn.models.restore_boxes`.
        """
        stride = self.strides[-1]
        batch, sizes = resize_and_pad(images, self.min_size, self.max_size, stride)
        originals = image_sizes(images)
        if self.training:
            targets = check_targets(
                targets, len(batch), ["boxes", "labels"], batch.device
            )
            targets = resize_targets(targets, originals, sizes)
        return batch, targets, sizes, originals

    def assign(
        self, anchors: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]
    ) -> torch.Tensor:
        """Match anchors ``[N, 4]`` to each image's boxes: int64 ``[B, N]``.

        Entry ``[b, n]`` is the index of the ground-truth box of image ``b`` that
        anchor ``n`` must predict, ``Matcher.BELOW_LOW_THRESHOLD`` (-1, background) or
        ``Matcher.BETWEEN_THRESHOLDS`` (-2, ignored): :attr:`matcher`'s rules, applied
        to the whole batch at once. The targets are trusted (``forward`` checks them).
        """
        counts = [len(t["boxes"]) for t in targets]
        iou = box_iou(torch.cat([t["boxes"] for t in targets]), anchors)  # [sum G_b, N]
        return matching.match_batch(  # = self.matcher.match_batch, without the checks
            iou.split(counts),
            self.fg_iou_thresh,
            self.bg_iou_thresh,
            self.allow_low_quality_matches,
        )

    def compute_loss(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        anchors: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Losses of one batch, all levels concatenated.

        Args:
            logits: ``[B, N, K]`` class logits.
            deltas: ``[B, N, 4]`` box deltas.
            anchors: ``[N, 4]`` xyxy.
            targets: one dict per image, ``boxes`` ``[G, 4]`` and ``labels`` ``[G]``.

        Returns:
            ``{'loss_cls', 'loss_box'}``: sums over anchors divided by the number of
            positive (foreground) anchors in the batch, at least 1 (see
            :func:`positives`).
        """
        matched = self.assign(anchors, targets)  # [B, N]
        foreground = matched >= 0
        valid = matched != Matcher.BETWEEN_THRESHOLDS
        num_pos = positives(foreground)  # of the whole batch, also under torchrun
        gt_labels, gt_boxes = self.matched_targets(matched, targets)

        # classification against a one-hot target (all zeros for background anchors)
        cls_target = F.one_hot(gt_labels, self.num_classes).to(logits.dtype)
        cls_target = cls_target * foreground.unsqueeze(-1)
        if self.cls_loss == "focal":
            loss_cls = sigmoid_focal_loss(
                logits[valid],
                cls_target[valid],
                self.focal_alpha,
                self.focal_gamma,
                "sum",
            )
        elif self.cls_loss == "ce":
            loss_cls = F.binary_cross_entropy_with_logits(
                logits[valid], cls_target[valid], reduction="sum"
            )
        else:  # hard negatives: all positives, the 3 * P hardest background anchors
            per_anchor = F.binary_cross_entropy_with_logits(
                logits, cls_target, reduction="none"
            ).sum(-1)  # [B, N]
            background = matched == Matcher.BELOW_LOW_THRESHOLD
            kept = hard_negative_mask(per_anchor, foreground, background, ratio=3)
            loss_cls = per_anchor[kept].sum()

        # box regression: foreground anchors only
        fg_deltas, fg_gt = deltas[foreground], gt_boxes[foreground]
        fg_anchors = anchors.expand_as(deltas)[foreground]
        if self.box_loss == "smooth_l1":
            target = encode_boxes(fg_gt, fg_anchors, self.box_weights)
            loss_box = smooth_l1_loss(
                fg_deltas, target, beta=self.smooth_l1_beta, reduction="sum"
            )
        else:
            boxes = decode_boxes(fg_deltas, fg_anchors, self.box_weights)
            loss_box = generalized_box_iou_loss(boxes, fg_gt, reduction="sum")
        return {"loss_cls": loss_cls / num_pos, "loss_box": loss_box / num_pos}

    @staticmethod
    def matched_targets(
        matched: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Label ``[B, N]`` and box ``[B, N, 4]`` of each anchor's matched object.

        Entries of unmatched anchors hold some object's values (zeros when the
        batch has no objects at all); the losses mask them out.
        """
        labels = torch.cat([t["labels"] for t in targets])
        boxes = torch.cat([t["boxes"] for t in targets])
        if len(labels) == 0:
            return torch.zeros_like(matched), matched.new_zeros(
                (*matched.shape, 4), dtype=boxes.dtype
            )
        counts = matched.new_tensor([len(t["labels"]) for t in targets])
        first = counts.cumsum(0) - counts  # row of each image's first object
        index = (matched.clamp(min=0) + first[:, None]).clamp(max=len(labels) - 1)
        return labels[index], boxes[index]

    def postprocess(
        self,
        logits: Sequence[torch.Tensor],
        deltas: Sequence[torch.Tensor],
        anchors: Sequence[torch.Tensor],
        image_size: tuple[int, int],
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image from per-level logits, deltas and anchors.

        For each level: sigmoid scores, keep those above ``score_thresh``, the
        ``topk_candidates`` best, decode their boxes and clip them to the image;
        then class-aware NMS over all levels and the ``detections_per_img`` best,
        whose boxes box voting refines if ``voting_thresh`` is set.
        """
        results = []
        for b in range(len(logits[0])):
            boxes, scores, labels = [], [], []
            for level_logits, level_deltas, level_anchors in zip(
                logits, deltas, anchors, strict=True
            ):
                level_scores = torch.sigmoid(level_logits[b]).flatten()  # [N_l * K]
                candidates = torch.nonzero(level_scores > self.score_thresh).squeeze(1)
                k = min(self.topk_candidates, len(candidates))
                top = level_scores[candidates].topk(k)
                candidates = candidates[top.indices]
                anchor_idx = candidates // self.num_classes
                decoded = decode_boxes(
                    level_deltas[b, anchor_idx],
                    level_anchors[anchor_idx],
                    self.box_weights,
                )
                boxes.append(clip_boxes_to_image(decoded, image_size))
                scores.append(top.values)
                labels.append(candidates % self.num_classes)
            boxes, scores, labels = map(torch.cat, (boxes, scores, labels))
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            kept_boxes = boxes[keep]
            if self.voting_thresh is not None:
                kept_boxes = box_voting(boxes, scores, keep, self.voting_thresh, labels)
            results.append(
                {"boxes": kept_boxes, "labels": labels[keep], "scores": scores[keep]}
            )
        return results

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        batch, targets, sizes, originals = self.prepare(images, targets)
        # The inputs are checked: the blocks below need not re-read the values of
        # tensors the model computes itself (on a GPU each such check waits for it).
        with _checks.trusted():
            logits, deltas = self.predict_raw(batch)
            anchors = self.anchors_for(tuple(batch.shape[-2:]), batch.device)
            if self.training:
                return self.compute_loss(
                    torch.cat(logits, 1),
                    torch.cat(deltas, 1),
                    torch.cat(anchors),
                    targets,
                )
            detections = self.postprocess(
                logits, deltas, anchors, tuple(batch.shape[-2:])
            )
            return restore_boxes(detections, sizes, originals)
