"""detlearn.evaluate against pycocotools (the referee) and against hand-worked cases."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detlearn.evaluate import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    average_precision,
    coco_evaluate,
    match_detections,
    precision_recall_curves,
    to_coco,
)
from detlearn.evaluate.coco import _coco_arrays, _match_groups

KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def run_pycocotools(gt: dict, detections: list[dict]) -> COCOeval:
    """COCOeval after evaluate/accumulate/summarize, its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def stats(result: dict) -> np.ndarray:
    return np.array([result[k] for k in KEYS])


def make_data(
    seed: int,
    num_images: int = 100,
    num_classes: int = 5,
    crowd: float = 0.05,
    tied_scores: bool = False,
    crowded_images: bool = False,
) -> tuple[list[dict], list[dict]]:
    """A random but realistic data set: mixed object sizes, jittered true
    positives (some duplicated, some mislabelled), false positives (some with
    labels that never occur in the ground truth), images without objects,
    crowd boxes, explicit 'area' on some images, optionally tied scores and
    images with 150 extra false positives (more than 100 detections per image,
    though fewer than 100 of any one class: maxDets per class is tested by
    test_more_than_100_detections_of_one_class_in_one_image)."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 9)) if rng.random() > 0.15 else 0
        side = rng.choice([12.0, 45.0, 150.0], n) * rng.uniform(0.6, 1.5, n)
        aspect = rng.uniform(0.5, 2.0, n)
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
        x, y = rng.uniform(0, 400, n), rng.uniform(0, 400, n)
        gt = np.stack([x, y, x + w, y + h], 1).reshape(-1, 4).astype(np.float32)
        gt_labels = rng.integers(0, num_classes, n)
        target = {"boxes": torch.from_numpy(gt), "labels": torch.from_numpy(gt_labels)}
        if rng.random() < 0.5:
            target["iscrowd"] = torch.from_numpy((rng.random(n) < crowd).astype(np.int64))
        if rng.random() < 0.25:  # e.g. a mask area, smaller than the box
            target["area"] = torch.from_numpy((w * h * rng.uniform(0.3, 1.0, n)).astype(np.float32))
        targets.append(target)

        copies = rng.choice([0, 1, 2], n, p=[0.15, 0.65, 0.2])
        src = np.repeat(np.arange(n), copies)
        scale = np.stack([w, h, w, h], 1)[src]
        tp = gt[src] + rng.normal(0.0, 0.12, (len(src), 4)) * scale
        tp_labels = np.where(
            rng.random(len(src)) < 0.9, gt_labels[src], rng.integers(0, num_classes, len(src))
        )
        m = int(rng.integers(0, 20))
        if crowded_images and rng.random() < 0.2:
            m += 150  # > 100 detections of some classes: maxDets truncation
        fs = rng.choice([10.0, 40.0, 150.0], m) * rng.uniform(0.5, 1.5, m)
        fx, fy = rng.uniform(0, 400, m), rng.uniform(0, 400, m)
        fp = np.stack([fx, fy, fx + fs, fy + fs * rng.uniform(0.5, 2.0, m)], 1)
        boxes = np.concatenate([tp, fp]).reshape(-1, 4).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(src)), rng.uniform(0.0, 0.8, m)])
        if tied_scores:
            scores = np.round(scores, 1)
        # label num_classes never occurs in the ground truth
        labels = np.concatenate([tp_labels, rng.integers(0, num_classes + 1, m)])
        predictions.append(
            {
                "boxes": torch.from_numpy(boxes),
                "labels": torch.from_numpy(labels),
                "scores": torch.from_numpy(scores.astype(np.float32)),
            }
        )
    return predictions, targets


def box(x1, y1, x2, y2) -> list[float]:
    return [float(x1), float(y1), float(x2), float(y2)]


def pred(boxes, labels, scores) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def target(boxes, labels, iscrowd=None) -> dict:
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if iscrowd is not None:
        t["iscrowd"] = torch.tensor(iscrowd, dtype=torch.int64)
    return t


# --------------------------------------------------------------------------
# against pycocotools on random data sets
# --------------------------------------------------------------------------

RANDOM_SETS = [
    dict(seed=0, num_images=150, num_classes=5),
    dict(seed=1, num_images=300, num_classes=10, crowded_images=True),
    dict(seed=2, num_images=50, num_classes=1, tied_scores=True),
    dict(seed=3, num_images=200, num_classes=3, crowd=0.3, tied_scores=True),
    dict(seed=4, num_images=120, num_classes=7, crowded_images=True, tied_scores=True),
]


@pytest.mark.parametrize("config", RANDOM_SETS, ids=lambda c: f"seed{c['seed']}")
def test_stats_and_per_class_equal_pycocotools(config):
    predictions, targets = make_data(**config)
    ours = coco_evaluate(predictions, targets)
    reference = run_pycocotools(*to_coco(predictions, targets))
    np.testing.assert_allclose(stats(ours), reference.stats, rtol=0, atol=1e-6)

    # per class: pycocotools' precision at area 'all', maxDets 100, without -1 entries
    precision = reference.eval["precision"][:, :, :, 0, -1]
    expected = {
        int(cat): float(precision[:, :, k].mean())
        for k, cat in enumerate(reference.params.catIds)
        if (precision[:, :, k] > -1).any()
    }
    assert set(ours["per_class"]) == set(expected)
    for label, ap in expected.items():
        assert ours["per_class"][label] == pytest.approx(ap, abs=1e-6)


def test_more_than_100_detections_of_one_class_in_one_image():
    """maxDets = 100 keeps exactly the 100 best detections per image and class:
    with 110 objects all found, AR100 is 100/110, not 99/110."""
    cells = [(x, y) for y in range(11) for x in range(11)][:120]  # a grid of 20-pixel boxes
    boxes = [box(30 * x, 30 * y, 30 * x + 20, 30 * y + 20) for x, y in cells]
    targets = [target(boxes[:110], [0] * 110)]
    scores = [1.0 - k / 200 for k in range(120)]  # distinct, decreasing
    predictions = [pred(boxes, [0] * 120, scores)]  # 110 exact hits, then 10 false positives
    ours = coco_evaluate(predictions, targets)
    reference = run_pycocotools(*to_coco(predictions, targets))
    np.testing.assert_allclose(stats(ours), reference.stats, rtol=0, atol=1e-6)
    assert ours["AR100"] == pytest.approx(100 / 110, abs=1e-6)
    assert ours["AR10"] == pytest.approx(10 / 110, abs=1e-6)


def test_precision_and_recall_arrays_equal_pycocotools():
    predictions, targets = make_data(seed=5, num_images=150, num_classes=4, crowded_images=True)
    reference = run_pycocotools(*to_coco(predictions, targets))
    out, precision, recall = _coco_arrays(predictions, targets)
    # pycocotools also lists labels that were only predicted (all -1 there)
    k_ref = [reference.params.catIds.index(label) for label in out.labels]
    np.testing.assert_allclose(precision, reference.eval["precision"][:, :, k_ref], atol=1e-12)
    np.testing.assert_allclose(recall, reference.eval["recall"][:, k_ref], atol=1e-12)


def test_to_coco_survives_json_round_trip():
    predictions, targets = make_data(seed=6, num_images=80, num_classes=4)
    gt, detections = to_coco(predictions, targets)
    gt2, detections2 = json.loads(json.dumps([gt, detections]))
    assert gt2 == gt and detections2 == detections
    assert [im["id"] for im in gt["images"]] == list(range(1, 81))
    assert min(a["id"] for a in gt["annotations"]) == 1
    # bbox is xywh: the first target box, converted
    x1, y1, x2, y2 = torch.cat([t["boxes"] for t in targets])[0].double().tolist()
    assert gt["annotations"][0]["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    reference = run_pycocotools(gt2, detections2)
    np.testing.assert_allclose(
        stats(coco_evaluate(predictions, targets)), reference.stats, rtol=0, atol=1e-6
    )


def test_numpy_and_float64_inputs_give_the_same_numbers():
    predictions, targets = make_data(seed=7, num_images=60, num_classes=3)
    as_numpy = [{k: v.numpy() for k, v in d.items()} for d in predictions]
    as_double = [
        {k: v.double() if v.is_floating_point() else v for k, v in d.items()} for d in targets
    ]
    a = coco_evaluate(predictions, targets)
    b = coco_evaluate(as_numpy, as_double)
    assert a == b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs():
    predictions, targets = make_data(seed=8, num_images=60, num_classes=3)
    on_gpu = [[{k: v.cuda() for k, v in d.items()} for d in ds] for ds in (predictions, targets)]
    assert coco_evaluate(*on_gpu) == coco_evaluate(predictions, targets)


# --------------------------------------------------------------------------
# cases small enough to work out on paper
# --------------------------------------------------------------------------


def test_one_perfect_detection():
    # One medium object (50 x 50 = 2500 px), found exactly: every AP and AR
    # that has an object is 1; small and large have none, so -1.
    result = coco_evaluate(
        [pred([box(10, 10, 60, 60)], [0], [0.9])], [target([box(10, 10, 60, 60)], [0])]
    )
    expected = dict(AP=1, AP50=1, AP75=1, APs=-1, APm=1, APl=-1)
    expected.update(AR1=1, AR10=1, AR100=1, ARs=-1, ARm=1, ARl=-1)
    assert {k: result[k] for k in KEYS} == pytest.approx(expected)
    assert result["per_class"] == pytest.approx({0: 1.0})


def test_a_duplicate_and_the_area_rule():
    # One large object [0, 0, 100, 100] (area 10000 > 96**2). Detection A
    # (score .9) covers its top 68 rows: IoU .68, area 6800 (medium);
    # detection B (score .8) is exact: IoU 1.
    # * thresholds .50 .55 .60 .65: A matches, B is a duplicate (FP after
    #   the TP): precision 1 at recall 1 -> AP_t = 1.
    # * thresholds .70 ... .95 (six): A misses, B matches at rank 2:
    #   precision 1/2 at recall 1 -> AP_t = .5.
    # AP = (4 * 1 + 6 * .5) / 10 = .7; AP50 = 1; AP75 = .5.
    # AR1 keeps only A: recall 1 at 4 thresholds, 0 at 6 -> .4.
    # "large": at t >= .70 the unmatched A (area 6800) lies outside the
    # range and is ignored, not a false positive -> APl = 1.
    result = coco_evaluate(
        [pred([box(0, 0, 100, 68), box(0, 0, 100, 100)], [3, 3], [0.9, 0.8])],
        [target([box(0, 0, 100, 100)], [3])],
    )
    expected = dict(AP=0.7, AP50=1, AP75=0.5, APs=-1, APm=-1, APl=1)
    expected.update(AR1=0.4, AR10=1, AR100=1, ARs=-1, ARm=-1, ARl=1)
    assert {k: result[k] for k in KEYS} == pytest.approx(expected)
    assert result["per_class"] == pytest.approx({3: 0.7})


def test_one_miss():
    # Two objects, one found exactly: recall .5 with precision 1. The 101
    # recall samples 0, .01, ..., .50 (51 of them) read precision 1, the
    # other 50 read 0: AP = 51 / 101 at every threshold; AR = .5.
    result = coco_evaluate(
        [pred([box(10, 10, 60, 60)], [0], [0.9])],
        [target([box(10, 10, 60, 60), box(100, 100, 150, 150)], [0, 0])],
    )
    assert result["AP"] == pytest.approx(51 / 101)
    assert result["APm"] == pytest.approx(51 / 101)
    assert result["AR100"] == pytest.approx(0.5)
    assert result["APs"] == result["APl"] == -1


def test_a_class_never_predicted_and_a_class_never_present():
    # Class 0 found exactly (AP 1); class 1 present but never predicted
    # (AP 0); class 2 predicted with a high score but absent from the
    # ground truth: COCO evaluates the ground truth's classes only, so it
    # changes nothing. AP = (1 + 0) / 2.
    result = coco_evaluate(
        [pred([box(10, 10, 60, 60), box(200, 200, 250, 250)], [0, 2], [0.5, 0.99])],
        [target([box(10, 10, 60, 60), box(100, 100, 150, 150)], [0, 1])],
    )
    assert result["per_class"] == pytest.approx({0: 1.0, 1: 0.0})
    assert result["AP"] == pytest.approx(0.5)
    assert result["AR100"] == pytest.approx(0.5)


def test_false_positive_in_an_image_without_objects():
    # Image 1 has no objects but a detection of class 0 scored .9; image 0's
    # object is found with score .5. Ranked: FP, TP -> precision 1/2 at
    # recall 1, so AP = .5, while recall is 1.
    result = coco_evaluate(
        [pred([box(0, 0, 50, 50)], [0], [0.5]), pred([box(0, 0, 50, 50)], [0], [0.9])],
        [target([box(0, 0, 50, 50)], [0]), target([], [])],
    )
    assert result["AP"] == pytest.approx(0.5)
    assert result["AR100"] == pytest.approx(1.0)


def test_crowd_boxes_absorb_detections():
    # Class 0: one object found exactly (score .9) and a crowd region with
    # two detections inside it (scores .95 and .8). IoU with a crowd box is
    # intersection / detection area = 1, so both match the crowd box, which
    # is ignored: they count neither as TP nor FP -> AP 1.
    # Class 1 has only a crowd box: nothing to find, so no AP (left out).
    result = coco_evaluate(
        [
            pred(
                [
                    box(0, 0, 50, 50),
                    box(110, 110, 150, 150),
                    box(200, 200, 260, 260),
                    box(5, 5, 9, 9),
                ],
                [0, 0, 0, 1],
                [0.9, 0.95, 0.8, 0.7],
            )
        ],
        [
            target(
                [box(0, 0, 50, 50), box(100, 100, 300, 300), box(0, 0, 10, 10)],
                [0, 0, 1],
                iscrowd=[0, 1, 1],
            )
        ],
    )
    assert result["AP"] == pytest.approx(1.0)
    assert result["per_class"] == pytest.approx({0: 1.0})


def test_empty_inputs():
    nothing = coco_evaluate([], [])
    assert all(nothing[k] == -1 for k in KEYS) and nothing["per_class"] == {}
    no_predictions = coco_evaluate(
        [pred([], [], [])], [target([box(10, 10, 60, 60)], [0])]
    )  # one medium object, nothing found: 0 where there are objects, -1 elsewhere
    assert no_predictions["AP"] == 0 and no_predictions["APm"] == 0 and no_predictions["APs"] == -1
    assert no_predictions["per_class"] == {0: 0.0}


# --------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------


def test_match_detections_by_hand():
    ious = np.array([[0.6, 0.7], [0.9, 0.0], [0.55, 0.0]])
    # d0 takes its best box g1; d1 takes g0; d2's only box above .5 is taken.
    assert match_detections(ious, 0.5).tolist() == [1, 0, -1]
    # g1 ignored: d0 prefers the regular g0 although g1 overlaps more.
    assert match_detections(ious, 0.5, gt_ignore=[False, True]).tolist() == [0, -1, -1]
    # a crowd box (also ignored) takes any number of detections
    ious = np.array([[0.6, 0.7], [0.0, 0.8], [0.0, 0.9]])
    crowd = [False, True]
    assert match_detections(ious, 0.5, crowd, crowd).tolist() == [0, 1, 1]
    # equal IoUs: the later box wins, as in pycocotools
    assert match_detections(np.array([[0.8, 0.8]]), 0.5).tolist() == [1]


def test_batched_matching_equals_the_loop():
    rng = np.random.default_rng(0)
    thresholds = np.array([0.3, 0.5, 0.75])
    groups = []
    for _ in range(40):
        d, g = int(rng.integers(1, 7)), int(rng.integers(1, 5))
        ious = np.round(rng.random((d, g)), 1)  # rounding makes ties
        ignore = rng.random((2, g)) < 0.3
        crowd = ignore[0] & (rng.random(g) < 0.5)
        ignore |= crowd
        groups.append((ious, ignore, crowd))
    groups.sort(key=lambda x: -len(x[0]))
    depth = max(len(x[0]) for x in groups)
    width = max(x[0].shape[1] for x in groups)
    padded = np.full((len(groups), depth, width), -np.inf)
    ignore_all = np.zeros((len(groups), 2, width), bool)
    crowd_all = np.zeros((len(groups), width), bool)
    for p, (ious, ignore, crowd) in enumerate(groups):
        padded[p, : ious.shape[0], : ious.shape[1]] = ious
        ignore_all[p, :, : ious.shape[1]] = ignore
        crowd_all[p, : ious.shape[1]] = crowd
    num_dets = np.array([len(x[0]) for x in groups])
    batched = _match_groups(padded, num_dets, ignore_all, crowd_all, thresholds)
    for p, (ious, ignore, crowd) in enumerate(groups):
        for t, thr in enumerate(thresholds):
            for a in range(2):
                loop = match_detections(ious, thr, ignore[a], crowd)
                assert batched[p, : len(ious), t, a].tolist() == loop.tolist()


# --------------------------------------------------------------------------
# precision/recall curves and AP flavours
# --------------------------------------------------------------------------

# Worked example: 4 objects; detections by score: TP, FP, TP, TP, FP.
#   TP count   1    1    2    3    3
#   recall    .25  .25  .50  .75  .75
#   precision  1   1/2  2/3  3/4  3/5
#   envelope   1   3/4  3/4  3/4  3/5   (best precision from here on)
WORKED_RECALL = np.array([0.25, 0.25, 0.5, 0.75, 0.75])
WORKED_PRECISION = np.array([1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])


def worked_example() -> tuple[list[dict], list[dict]]:
    """The worked example as one image: 4 medium objects, 5 detections."""
    objects = [box(0, 0, 40, 40), box(100, 0, 140, 40), box(200, 0, 240, 40), box(300, 0, 340, 40)]
    far = box(0, 300, 40, 340)
    detections = [objects[0], far, objects[1], objects[2], far]
    return [pred(detections, [0] * 5, [0.9, 0.8, 0.7, 0.6, 0.5])], [target(objects, [0] * 4)]


def test_average_precision_flavours_by_hand():
    # voc11: r = 0, .1, .2 -> 1; r = .3 ... .7 (five) -> 3/4; r = .8, .9, 1 -> 0
    assert average_precision(WORKED_RECALL, WORKED_PRECISION, "voc11") == pytest.approx(
        (3 * 1 + 5 * 0.75) / 11
    )
    # all points: recall steps of .25 at envelope 1, 3/4, 3/4 -> .625
    assert average_precision(WORKED_RECALL, WORKED_PRECISION, "all_points") == pytest.approx(0.625)
    # coco101: r = 0 ... .25 (26 samples) -> 1; r = .26 ... .75 (50) -> 3/4;
    # r = .76 ... 1 (25) -> 0
    assert average_precision(WORKED_RECALL, WORKED_PRECISION, "coco101") == pytest.approx(
        (26 + 50 * 0.75) / 101
    )
    assert average_precision(np.zeros(0), np.zeros(0), "all_points") == 0.0


def test_precision_recall_curve_and_coco101_equal_pycocotools():
    predictions, targets = worked_example()
    curve = precision_recall_curves(predictions, targets)[0]
    np.testing.assert_allclose(curve.recall, WORKED_RECALL)
    np.testing.assert_allclose(curve.precision, WORKED_PRECISION)
    np.testing.assert_allclose(curve.scores, [0.9, 0.8, 0.7, 0.6, 0.5], rtol=1e-6)
    reference = run_pycocotools(*to_coco(predictions, targets))
    assert average_precision(curve.recall, curve.precision, "coco101") == pytest.approx(
        reference.stats[1], abs=1e-12
    )  # AP50 of the one class


@pytest.mark.parametrize(
    "iou, area, max_dets", [(0.5, "all", 100), (0.75, "small", 100), (0.5, "large", 1)]
)
def test_curves_give_per_class_ap_of_pycocotools(iou, area, max_dets):
    predictions, targets = make_data(seed=9, num_images=100, num_classes=4, crowded_images=True)
    reference = run_pycocotools(*to_coco(predictions, targets))
    t = int(np.flatnonzero(iou == IOU_THRESHOLDS)[0])
    a, m = list(AREA_RANGES).index(area), MAX_DETS.index(max_dets)
    precision = reference.eval["precision"][t, :, :, a, m]  # [R, K]
    curves = precision_recall_curves(predictions, targets, iou, area, max_dets)
    expected_labels = [c for k, c in enumerate(reference.params.catIds) if precision[0, k] > -1]
    assert sorted(curves) == expected_labels
    for label, curve in curves.items():
        k = reference.params.catIds.index(label)
        ap = average_precision(curve.recall, curve.precision, "coco101")
        assert ap == pytest.approx(precision[:, k].mean(), abs=1e-9)


def test_curves_agree_with_the_vectorised_engine():
    """The readable curves (a loop of match_detections per image and class) and
    coco_evaluate's engine agree at every IoU threshold, area range and maxDets:
    the same labels, the same final recall, the same 101-point AP."""
    predictions, targets = make_data(seed=10, num_images=40, num_classes=3, crowded_images=True)
    out, precision, recall = _coco_arrays(predictions, targets)
    for t, iou in enumerate(IOU_THRESHOLDS):
        for a, area in enumerate(AREA_RANGES):
            for m, max_dets in enumerate(MAX_DETS):
                curves = precision_recall_curves(predictions, targets, iou, area, max_dets)
                has_curve = precision[t, 0, :, a, m] > -1
                assert sorted(curves) == out.labels[has_curve].tolist()
                for k in np.flatnonzero(has_curve):
                    curve = curves[int(out.labels[k])]
                    final = curve.recall[-1] if len(curve.recall) else 0.0
                    assert final == recall[t, k, a, m]
                    ap = average_precision(curve.recall, curve.precision, "coco101")
                    assert ap == pytest.approx(precision[t, :, k, a, m].mean(), abs=1e-12)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

GOOD_PRED = pred([box(0, 0, 10, 10)], [0], [0.5])
GOOD_TARGET = target([box(0, 0, 10, 10)], [0])


@pytest.mark.parametrize(
    "predictions, targets, message",
    [
        ([GOOD_PRED, GOOD_PRED], [GOOD_TARGET], "same length"),
        (GOOD_PRED, GOOD_TARGET, "list with one dict per image"),
        ([{"boxes": GOOD_PRED["boxes"], "labels": GOOD_PRED["labels"]}], [GOOD_TARGET], "'scores'"),
        ([GOOD_PRED], [{"boxes": GOOD_TARGET["boxes"]}], r"targets\[0\] is missing key"),
        ([{**GOOD_PRED, "boxes": torch.zeros(1, 3)}], [GOOD_TARGET], r"\[N, 4\]"),
        (
            [pred([box(10, 0, 0, 10)], [0], [0.5])],
            [GOOD_TARGET],
            r"predictions\[0\]\['boxes'\].*x2 >= x1",
        ),
        (
            [GOOD_PRED],
            [target([box(0, 0, np.nan, 10)], [0])],
            r"targets\[0\]\['boxes'\] must be finite",
        ),
        (
            [GOOD_PRED, pred([box(0, 0, 1, 1)], [0], [np.nan])],
            [GOOD_TARGET] * 2,
            r"predictions\[1\]\['scores'\] must be finite",
        ),
        ([{**GOOD_PRED, "labels": torch.tensor([0.0])}], [GOOD_TARGET], "integers"),
        ([{**GOOD_PRED, "scores": torch.tensor([0.5, 0.6])}], [GOOD_TARGET], r"shape \[1\]"),
        ([GOOD_PRED], [{**GOOD_TARGET, "iscrowd": torch.tensor([2])}], "0 or 1"),
        ([GOOD_PRED], [{**GOOD_TARGET, "area": torch.tensor([-1.0])}], ">= 0"),
        (["not a dict"], [GOOD_TARGET], "must be a dict"),
    ],
)
def test_bad_input_raises_value_error(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        coco_evaluate(predictions, targets)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="method"):
        average_precision(WORKED_RECALL, WORKED_PRECISION, "voc2012")
    with pytest.raises(ValueError, match="non-decreasing"):
        average_precision(WORKED_RECALL[::-1], WORKED_PRECISION)
    with pytest.raises(ValueError, match="one length"):
        average_precision(WORKED_RECALL, WORKED_PRECISION[:2])
    with pytest.raises(ValueError, match="area"):
        precision_recall_curves([GOOD_PRED], [GOOD_TARGET], area="tiny")
    with pytest.raises(ValueError, match="iou_threshold"):
        precision_recall_curves([GOOD_PRED], [GOOD_TARGET], iou_threshold=1.5)
    with pytest.raises(ValueError, match="max_dets"):
        precision_recall_curves([GOOD_PRED], [GOOD_TARGET], max_dets=0)
    with pytest.raises(ValueError, match=r"ious must have shape \[D, G\]"):
        match_detections(np.zeros(3))
    with pytest.raises(ValueError, match="gt_ignore"):
        match_detections(np.zeros((2, 2)), 0.5, gt_ignore=[True])
