"""TwoStageDetector: a TinyDetector proposes, a second stage looks again (chapter 13).

    images -> Backbone -> maps at strides 1, 2, 4, 8, 16
      stage 1 (a TinyDetector): dense heads on strides 4, 8, 16 -> detections: proposals
      stage 2: each proposal, enlarged -> roi_align on the image and the stride-1, 2, 4
               maps -> RoIHead -> C + 1 class logits, 4 deltas relative to the
               proposal, a predicted IoU -> decode -> class-aware NMS again

As Fast/Faster R-CNN, the second stage classifies each proposal again (with a
background class) and regresses its box; it pools *finer* features than the
dense heads read, so it can place edges to a fraction of a pixel. Its training
RoIs resemble what a trained first stage proposes: the first stage's decoded
boxes at foreground anchors and at its best-scoring anchors, plus the
ground-truth boxes and jittered copies of them (Faster R-CNN adds the ground
truth too).

Every geometric step is one of detlearn's building blocks; this file wires them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from detlearn import _checks
from detlearn._kernels.boxes import box_iou
from detlearn.anchors import decode_boxes, encode_boxes
from detlearn.boxes import clip_boxes_to_image
from detlearn.losses import smooth_l1_loss
from detlearn.models.backbone import conv_bn_relu, set_fields
from detlearn.models.detector import DetectorConfig, TinyDetector
from detlearn.models.transform import restore_boxes
from detlearn.nms import batched_nms
from detlearn.roi import roi_align

__all__ = ["RoIHead", "TwoStageConfig", "TwoStageDetector", "roi_targets"]


@dataclass(frozen=True)
class TwoStageConfig(DetectorConfig):
    """The settings of a :class:`TwoStageDetector`, checked once, here.

    The fields of :class:`~detlearn.models.DetectorConfig` set up the first stage
    exactly as they set up a :class:`~detlearn.models.TinyDetector`: its
    detections (``score_thresh``, ``nms_thresh``, ``detections_per_img``) are the
    proposals. The ``roi_`` fields set up the second stage.

    Attributes:
        roi_size: RoIAlign's output, ``roi_size x roi_size`` cells.
        roi_strides: the backbone maps pooled (strides, each a stage's); the image
            itself is pooled too.
        roi_sampling_ratio: RoIAlign's samples per bin along each axis.
        roi_enlarge, roi_pad: the pooled region is the proposal scaled by
            ``roi_enlarge`` about its centre plus ``roi_pad`` pixels on every side,
            so that the true edges fall inside it even when the proposal is short.
        roi_channels, roi_hidden: widths of the :class:`RoIHead`.
        roi_fg_iou_thresh: a proposal with IoU >= this with a ground-truth box is
            that object (class and box targets); below ``roi_bg_iou_thresh`` it is
            background; in between it is left out.
        roi_per_image: training RoIs sampled per image, at most
            ``roi_positive_fraction`` of them foreground.
        roi_train_proposals: stage-1 boxes per image taken as training proposals
            at foreground anchors, and again at the best-scoring anchors.
        roi_jitter: one jittered copy of each ground-truth box per entry, whose
            edges move by a normal draw of that fraction of the box's size: small
            jitter makes foreground RoIs to refine, large jitter also background
            RoIs that overlap an object partly, as poor proposals do.
        roi_box_weights: the ``(wx, wy, ww, wh)`` of the deltas relative to the
            proposal; large weights, because the corrections are small.
        roi_box_lambda: weight of the box loss (the lambda of the four-term loss).
        roi_iou_score: also predict the IoU of the refined box with its object and
            rank detections by ``sqrt(class score x predicted IoU)``.
        roi_score_thresh, roi_nms_thresh, roi_detections_per_img: the final
            detections, as in the first stage.
        roi_proposals_per_img: in eval mode, the second stage refines the first
            stage's best this many detections of each image.
    """

    roi_size: int = 14
    roi_strides: Sequence[int] = (1, 2, 4)
    roi_sampling_ratio: int = 2
    roi_enlarge: float = 1.3
    roi_pad: float = 2.0
    roi_channels: int = 32
    roi_hidden: int = 256
    roi_fg_iou_thresh: float = 0.5
    roi_bg_iou_thresh: float = 0.5
    roi_per_image: int = 16
    roi_positive_fraction: float = 0.5
    roi_train_proposals: int = 8
    roi_jitter: Sequence[float] = (0.05, 0.2)
    roi_box_weights: Sequence[float] = (20.0, 20.0, 10.0, 10.0)
    roi_box_lambda: float = 1.0
    roi_iou_score: bool = True
    roi_score_thresh: float = 0.05
    roi_nms_thresh: float = 0.5
    roi_detections_per_img: int = 100
    roi_proposals_per_img: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        stages = [2**k for k in range(len(self.widths))]
        strides = tuple(int(s) for s in self.roi_strides)
        if not strides or any(s not in stages for s in strides):
            raise ValueError(f"roi_strides must be taken from {stages}, got {strides}")
        fg = _checks.threshold(self.roi_fg_iou_thresh, "roi_fg_iou_thresh")
        bg = _checks.threshold(self.roi_bg_iou_thresh, "roi_bg_iou_thresh")
        if bg > fg:
            raise ValueError(
                f"roi_bg_iou_thresh must be <= roi_fg_iou_thresh, got {bg} > {fg}"
            )
        jitter = self.roi_jitter
        if isinstance(jitter, (int, float)):
            jitter = (jitter,)
        if not isinstance(jitter, Sequence) or isinstance(jitter, str):
            raise ValueError(
                f"roi_jitter must be a sequence of numbers, got {jitter!r}"
            )
        set_fields(
            self,
            roi_size=_checks.positive_int(self.roi_size, "roi_size"),
            roi_strides=strides,
            roi_sampling_ratio=_checks.positive_int(
                self.roi_sampling_ratio, "roi_sampling_ratio"
            ),
            roi_enlarge=_checks.number(self.roi_enlarge, "roi_enlarge", low=1.0),
            roi_pad=_checks.number(self.roi_pad, "roi_pad", low=0.0),
            roi_channels=_checks.positive_int(self.roi_channels, "roi_channels"),
            roi_hidden=_checks.positive_int(self.roi_hidden, "roi_hidden"),
            roi_fg_iou_thresh=fg,
            roi_bg_iou_thresh=bg,
            roi_per_image=_checks.positive_int(self.roi_per_image, "roi_per_image"),
            roi_positive_fraction=_checks.threshold(
                self.roi_positive_fraction, "roi_positive_fraction"
            ),
            roi_train_proposals=_checks.integer(
                self.roi_train_proposals, "roi_train_proposals"
            ),
            roi_jitter=tuple(
                _checks.number(v, f"roi_jitter[{k}]", low=0.0)
                for k, v in enumerate(jitter)
            ),
            roi_box_weights=_checks.box_weights(
                self.roi_box_weights, "roi_box_weights"
            ),
            roi_box_lambda=_checks.number(self.roi_box_lambda, "roi_box_lambda", 0.0),
            roi_iou_score=bool(self.roi_iou_score),
            roi_score_thresh=_checks.threshold(
                self.roi_score_thresh, "roi_score_thresh"
            ),
            roi_nms_thresh=_checks.threshold(self.roi_nms_thresh, "roi_nms_thresh"),
            roi_detections_per_img=_checks.positive_int(
                self.roi_detections_per_img, "roi_detections_per_img"
            ),
            roi_proposals_per_img=_checks.positive_int(
                self.roi_proposals_per_img, "roi_proposals_per_img"
            ),
        )


class RoIHead(nn.Module):
    """The second stage's head: pooled features of each RoI -> class, box, IoU.

    A 1x1 conv-BN-ReLU mixes the pooled levels cell by cell, a 2x2 max pool and a
    3x3 conv-BN-ReLU follow, and the map is flattened (where a response sits is
    where an edge is) into a hidden layer with three outputs.

    ``forward(x [R, C, S, S])`` -> ``(logits [R, K + 1], deltas [R, 4], iou [R])``:
    class logits with background last (index K), class-agnostic box deltas and an
    IoU logit.
    """

    def __init__(
        self, in_channels: int, size: int, num_classes: int, channels: int, hidden: int
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            conv_bn_relu(channels, channels),
            nn.Flatten(),
            nn.Linear(channels * (size // 2) ** 2, hidden),
            nn.ReLU(inplace=True),
        )
        self.cls_logits = nn.Linear(hidden, num_classes + 1)
        self.box_deltas = nn.Linear(hidden, 4)
        self.iou_logit = nn.Linear(hidden, 1)
        nn.init.normal_(self.box_deltas.weight, std=0.001)
        nn.init.zeros_(self.box_deltas.bias)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return self.cls_logits(x), self.box_deltas(x), self.iou_logit(x).squeeze(1)


def roi_targets(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    num_classes: int,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class and box targets of one image's proposals ``[P, 4]``.

    Each proposal is matched to the ground-truth box it overlaps most. Returns
    ``(labels int64 [P], boxes [P, 4])``: the matched object's label when the IoU
    is >= ``fg_iou_thresh``, ``num_classes`` (background) when it is below
    ``bg_iou_thresh`` (or there is no object), -1 (left out) in between; ``boxes``
    holds the matched object's box (the proposal itself where there is none).
    """
    labels = torch.full((len(proposals),), num_classes, dtype=torch.int64)
    labels = labels.to(proposals.device)
    if len(gt_boxes) == 0:
        return labels, proposals.clone()
    best_iou, best = box_iou(gt_boxes, proposals).max(0)  # [P]: each proposal's object
    labels = torch.where(best_iou >= fg_iou_thresh, gt_labels[best], labels)
    between = (best_iou >= bg_iou_thresh) & (best_iou < fg_iou_thresh)
    return labels.masked_fill(between, -1), gt_boxes[best]


class TwoStageDetector(TinyDetector):
    """A :class:`~detlearn.models.TinyDetector` whose detections a second stage refines.

    ``TwoStageDetector(num_classes, **settings)`` or ``(config=...)``: the settings
    are the fields of :class:`TwoStageConfig`. ``model.first_stage_only = True``
    returns the first stage's detections (the proposals) in eval mode.

    Calling convention (torchvision's):

    * training mode, ``model(images, targets)`` -> ``{'loss_proposal_cls',
      'loss_proposal_box', 'loss_roi_cls', 'loss_roi_box', 'loss_roi_iou'}``: the
      first stage's two losses (as TinyDetector's), the second stage's
      cross-entropy over K + 1 classes, its smooth L1 on the deltas of foreground
      RoIs (times ``roi_box_lambda``) and the binary cross-entropy of its
      predicted IoU (0 when ``roi_iou_score`` is off). Images with no objects train.
    * eval mode, ``model(images)`` -> one dict per image ``{'boxes', 'labels',
      'scores'}`` by decreasing score.

    The second stage reads the backbone's maps *detached*: its gradients train
    its own head only, so the first stage learns as a TinyDetector does (and
    RoIAlign's backward pass is never run). The steps are methods:
    :meth:`training_proposals`, :meth:`sample_rois`, :meth:`pool`,
    :meth:`roi_loss`, :meth:`refine`.
    """

    config_class = TwoStageConfig
    layer_settings = (
        *TinyDetector.layer_settings,
        "roi_size",
        "roi_strides",
        "roi_channels",
        "roi_hidden",
    )

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        config: TwoStageConfig | None = None,
        **settings,
    ) -> None:
        super().__init__(num_classes, config=config, **settings)
        stage_strides = [2**k for k in range(len(self.widths))]
        pooled = 3 + sum(self.widths[stage_strides.index(s)] for s in self.roi_strides)
        self.roi_head = RoIHead(
            pooled, self.roi_size, self.num_classes, self.roi_channels, self.roi_hidden
        )
        self.first_stage_only = False

    # -- the steps ---------------------------------------------------------------------

    def training_proposals(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        anchors: torch.Tensor,
        targets: Sequence[dict[str, torch.Tensor]],
        image_size: tuple[int, int],
    ) -> list[torch.Tensor]:
        """Boxes for the second stage to learn from, per image ``[P_b, 4]``.

        The first stage's decoded boxes (detached) at up to ``roi_train_proposals``
        random foreground anchors and at its as many best-scoring anchors, the
        ground-truth boxes and jittered copies of them (``roi_jitter``), all
        clipped to the image; boxes thinner than a pixel are dropped.
        """
        matched = self.assign(anchors, targets)  # [B, N]
        best_scores = logits.detach().max(-1).values  # [B, N]
        n = self.roi_train_proposals
        proposals = []
        for b, target in enumerate(targets):
            foreground = torch.nonzero(matched[b] >= 0).squeeze(1)
            foreground = foreground[
                torch.randperm(len(foreground))[:n].to(anchors.device)
            ]
            top = best_scores[b].topk(min(n, len(anchors))).indices
            index = torch.cat([foreground, top])
            decoded = decode_boxes(
                deltas[b, index].detach(), anchors[index], self.box_weights
            )
            gt = target["boxes"]
            size = torch.cat([gt[:, 2:] - gt[:, :2]] * 2, 1)
            jittered = [gt + j * size * torch.randn_like(gt) for j in self.roi_jitter]
            jittered = torch.cat([gt, *jittered])
            corners = jittered[:, :2].minimum(jittered[:, 2:])
            jittered = torch.cat([corners, jittered[:, :2].maximum(jittered[:, 2:])], 1)
            boxes = clip_boxes_to_image(torch.cat([decoded, jittered]), image_size)
            wide = (boxes[:, 2:] - boxes[:, :2] >= 1).all(1)
            proposals.append(boxes[wide])
        return proposals

    def sample_rois(
        self,
        proposals: Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]],
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Sample each image's training RoIs and their targets.

        Returns ``(rois, labels, boxes)``: per image up to ``roi_per_image`` RoIs
        ``[R_b, 4]``, at most ``roi_positive_fraction`` of them foreground, drawn at
        random from :func:`roi_targets`' foreground and background ones; then the
        labels ``[R]`` (``num_classes`` for background) and target boxes ``[R, 4]``
        of all images' RoIs, concatenated.
        """
        rois, labels, boxes = [], [], []
        for props, target in zip(proposals, targets, strict=True):
            lab, box = roi_targets(
                props,
                target["boxes"],
                target["labels"],
                self.num_classes,
                self.roi_fg_iou_thresh,
                self.roi_bg_iou_thresh,
            )
            fg = torch.nonzero((lab >= 0) & (lab < self.num_classes)).squeeze(1)
            bg = torch.nonzero(lab == self.num_classes).squeeze(1)
            num_fg = min(len(fg), int(self.roi_per_image * self.roi_positive_fraction))
            num_bg = min(len(bg), self.roi_per_image - num_fg)
            keep = torch.cat(
                [
                    fg[torch.randperm(len(fg))[:num_fg].to(fg.device)],
                    bg[torch.randperm(len(bg))[:num_bg].to(bg.device)],
                ]
            )
            rois.append(props[keep])
            labels.append(lab[keep])
            boxes.append(box[keep])
        return rois, torch.cat(labels), torch.cat(boxes)

    def pool(
        self,
        images: torch.Tensor,
        maps: dict[int, torch.Tensor],
        rois: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """RoIAlign of each RoI's enlarged region: ``[R, 3 + sum C_l, S, S]``.

        The image and the maps at ``roi_strides`` (detached), each at its own
        ``spatial_scale = 1 / stride``, concatenated along the channels.
        """
        regions = []
        for r in rois:
            centre, size = (r[:, :2] + r[:, 2:]) / 2, r[:, 2:] - r[:, :2]
            half = size * self.roi_enlarge / 2 + self.roi_pad
            regions.append(torch.cat([centre - half, centre + half], 1))
        pooled = [
            roi_align(
                level.detach(),
                regions,
                self.roi_size,
                spatial_scale=1.0 / stride,
                sampling_ratio=self.roi_sampling_ratio,
                aligned=True,
            )
            for stride, level in [
                (1, images),
                *((s, maps[s]) for s in self.roi_strides),
            ]
        ]
        return torch.cat(pooled, 1)

    def roi_loss(
        self,
        rois: torch.Tensor,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        iou_logits: torch.Tensor,
        labels: torch.Tensor,
        gt_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The second stage's three losses over ``R`` sampled RoIs ``[R, 4]``.

        ``loss_roi_cls``: cross-entropy of ``logits [R, K + 1]`` against ``labels``,
        averaged over the RoIs. ``loss_roi_box``: smooth L1 between ``deltas [R, 4]``
        and ``encode_boxes(gt_boxes, rois, roi_box_weights)`` over the foreground
        RoIs, divided by their number, times ``roi_box_lambda``. ``loss_roi_iou``:
        binary cross-entropy of ``iou_logits [R]`` against the IoU of each refined
        box with its target box (0 for background), averaged.
        """
        zero = logits.sum() * 0  # keeps the graph when there are no RoIs
        loss_cls = F.cross_entropy(logits, labels, reduction="sum") / max(
            len(labels), 1
        )
        fg = labels < self.num_classes
        target = encode_boxes(gt_boxes[fg], rois[fg], self.roi_box_weights)
        loss_box = smooth_l1_loss(deltas[fg], target, beta=1 / 9, reduction="sum")
        loss_box = self.roi_box_lambda * loss_box / max(int(fg.sum()), 1)
        loss_iou = zero
        if self.roi_iou_score and len(labels):
            refined = decode_boxes(deltas.detach(), rois, self.roi_box_weights)
            iou = box_iou(refined, gt_boxes).diagonal() * fg
            loss_iou = F.binary_cross_entropy_with_logits(iou_logits, iou)
        return {
            "loss_roi_cls": loss_cls + zero,
            "loss_roi_box": loss_box + zero,
            "loss_roi_iou": loss_iou,
        }

    def refine(
        self,
        proposals: Sequence[torch.Tensor],
        logits: torch.Tensor,
        deltas: torch.Tensor,
        iou_logits: torch.Tensor,
        image_size: tuple[int, int],
    ) -> list[dict[str, torch.Tensor]]:
        """Final detections from the second stage's outputs for each image's proposals.

        Every proposal's box is decoded from its deltas and clipped; each class with
        a score above ``roi_score_thresh`` makes a detection (the score is
        ``sqrt(p_class x predicted IoU)`` when ``roi_iou_score``, else ``p_class``);
        then class-aware NMS and the ``roi_detections_per_img`` best.
        """
        probs = logits.softmax(-1)[:, : self.num_classes]  # [R, K]
        if self.roi_iou_score:
            probs = (probs * torch.sigmoid(iou_logits)[:, None]).sqrt()
        results, start = [], 0
        for props in proposals:
            end = start + len(props)
            boxes = decode_boxes(deltas[start:end], props, self.roi_box_weights)
            boxes = clip_boxes_to_image(boxes, image_size)
            scores = probs[start:end]
            index, labels = torch.nonzero(scores > self.roi_score_thresh).unbind(1)
            boxes, scores = boxes[index], scores[index, labels]
            keep = batched_nms(boxes, scores, labels, self.roi_nms_thresh)
            keep = keep[: self.roi_detections_per_img]
            results.append(
                {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}
            )
            start = end
        return results

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        batch, targets, sizes, originals = self.prepare(images, targets)
        image_size = tuple(batch.shape[-2:])
        with _checks.trusted():
            maps = self.backbone.stage_maps(batch)  # every stride, for the RoIs too
            logits, deltas = self.head_outputs([maps[s] for s in self.strides])
            anchors = self.anchors_for(image_size, batch.device)
            if self.training:
                logits, deltas = torch.cat(logits, 1), torch.cat(deltas, 1)
                anchors = torch.cat(anchors)
                stage1 = self.compute_loss(logits, deltas, anchors, targets)
                proposals = self.training_proposals(
                    logits, deltas, anchors, targets, image_size
                )
                rois, labels, gt_boxes = self.sample_rois(proposals, targets)
                roi_logits, roi_deltas, iou_logits = self.roi_head(
                    self.pool(batch, maps, rois)
                )
                return {
                    "loss_proposal_cls": stage1["loss_cls"],
                    "loss_proposal_box": stage1["loss_box"],
                    **self.roi_loss(
                        torch.cat(rois),
                        roi_logits,
                        roi_deltas,
                        iou_logits,
                        labels,
                        gt_boxes,
                    ),
                }
            detections = self.postprocess(logits, deltas, anchors, image_size)
            if self.first_stage_only:
                return restore_boxes(detections, sizes, originals)
            proposals = [d["boxes"][: self.roi_proposals_per_img] for d in detections]
            proposals = [p[(p[:, 2:] - p[:, :2] >= 1).all(1)] for p in proposals]
            roi_logits, roi_deltas, iou_logits = self.roi_head(
                self.pool(batch, maps, proposals)
            )
            detections = self.refine(
                proposals, roi_logits, roi_deltas, iou_logits, image_size
            )
            return restore_boxes(detections, sizes, originals)
