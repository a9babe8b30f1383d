"""COCO-style evaluation of object detections, written from scratch in NumPy.

Chapter 9 builds this package up piece by piece. The readable half,
:mod:`detlearn.evaluate.curves`:

1. :func:`match_detections` -- the greedy matching rule for one image and one
   class, as a plain loop: which detection found which object?
2. :func:`precision_recall_curves` -- match image by image, pool, sort all
   detections of a class by score and count true and false positives: a
   precision/recall curve.
3. :func:`average_precision` -- three ways to turn that curve into one
   number: VOC 11-point, VOC all-point and COCO 101-point, each read off
   :func:`precision_envelope` (which the fast half uses too).

The fast half, :mod:`detlearn.evaluate.coco`:

4. :func:`coco_evaluate` -- the full COCO protocol (ten IoU thresholds, four
   area ranges, three ``maxDets``) and its twelve summary numbers, equal to
   ``pycocotools.cocoeval.COCOeval(...).stats`` to 1e-6, vectorised over the
   whole data set.

And :mod:`detlearn.evaluate.coco_json`:

5. :func:`to_coco` -- the same data as COCO JSON, so pycocotools can referee.

pycocotools is never imported here; the tests and ``benchmarks/bench_eval.py``
use it as the reference. The COCO rules, stated once (they are pycocotools'
``COCOeval`` for ``iouType='bbox'``):

* **Groups.** Images and categories are evaluated independently. Only the
  labels that occur in the ground truth count; a label that has no
  (non-crowd) ground truth gets AP = -1 and is left out of every mean.
* **maxDets.** Per image and category only the ``max_dets`` highest scoring
  detections take part (stable sort on the negated score, so equal scores
  keep their input order).
* **IoU.** ``IoU = intersection / union``; against a *crowd* box it is
  ``intersection / detection area``. Computed in float64 on ``xywh`` boxes
  exactly as ``pycocotools.mask.iou`` does.
* **Matching.** Detections in decreasing score order each take the
  still-unmatched ground truth box with the highest IoU, provided that IoU is
  ``>= min(t, 1 - 1e-10)``. Regular boxes are preferred to *ignored* ones
  (crowd, or area outside the range being evaluated): a detection matches an
  ignored box only when no regular box is available. Equal IoUs go to the
  later box. Crowd boxes can absorb any number of detections.
* **Ignored detections.** A detection matched to an ignored box, or an
  unmatched detection whose own area (``w * h``) lies outside the area range,
  counts neither as true nor as false positive.
* **Areas.** A ground truth box's area is its ``'area'`` entry when the
  target has one, else ``w * h``. The ranges are closed intervals: all
  ``[0, 1e10]``, small ``[0, 32**2]``, medium ``[32**2, 96**2]``, large
  ``[96**2, 1e10]``.
* **Precision.** Per category, area range, ``maxDets`` and IoU threshold, all
  images' detections are sorted by score (ties: image order, then rank within
  the image), precision is made monotone (the envelope, read from the right)
  and sampled at the 101 recall values ``0, 0.01, ..., 1`` (first point whose
  recall reaches the value; 0 if none does). AP is the mean of those samples;
  recall is the final recall.

Inputs everywhere are lists with one dict per image in torchvision's format:
predictions ``{'boxes': [N, 4] xyxy, 'labels': int [N], 'scores': [N]}``,
targets ``{'boxes': [M, 4] xyxy, 'labels': int [M]}`` plus optional
``'iscrowd'`` (0/1) ``[M]`` and ``'area'`` ``[M]``. Values may be torch tensors
on any device or NumPy arrays. Image ``i`` of the list is image id ``i + 1`` in
:func:`to_coco`'s output.
"""

from detlearn.evaluate.coco import SUMMARY_KEYS, coco_evaluate
from detlearn.evaluate.coco_json import to_coco
from detlearn.evaluate.curves import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    PRCurve,
    average_precision,
    match_detections,
    precision_envelope,
    precision_recall_curves,
)

__all__ = [
    "AREA_RANGES",
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "SUMMARY_KEYS",
    "PRCurve",
    "average_precision",
    "coco_evaluate",
    "match_detections",
    "precision_envelope",
    "precision_recall_curves",
    "to_coco",
]
