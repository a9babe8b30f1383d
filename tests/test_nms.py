"""detlearn.nms: exactly torchvision's keeps, the kernels' tuning, and soft-NMS
by its definition."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import as_boxes, assert_reads_whole, box_lists

from detlearn import nms as N
from detlearn._kernels import nms as K

THRESHOLDS = st.one_of(
    st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 1.0]), st.floats(0, 1, allow_nan=False)
)


def clustered(n: int, seed: int, dtype=torch.float32, centres: int = 50):
    """Boxes jittered around a few centres (many overlaps) and distinct scores."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(centres, 2, generator=g) * 300
    wh = 10 + torch.rand(centres, 2, generator=g) * 60
    pick = torch.randint(0, centres, (n,), generator=g)
    cxy = c[pick] + torch.randn(n, 2, generator=g) * 0.15 * wh[pick]
    size = wh[pick] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.2)
    boxes = torch.cat((cxy - size / 2, cxy + size / 2), 1).to(dtype)
    scores = torch.randperm(n, generator=g).to(dtype) / n
    return boxes, scores


@st.composite
def detections(draw, max_size: int = 30, ties: bool = False):
    rows = draw(box_lists(max_size=max_size))
    n = len(rows)
    if ties:
        scores = draw(st.lists(st.sampled_from([0.2, 0.5, 0.9]), min_size=n, max_size=n))
    else:
        scores = [p / max(n, 1) for p in draw(st.permutations(range(n)))]
    return rows, scores


# --- nms ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(data=detections(), iou_threshold=THRESHOLDS, tile=st.sampled_from([1, 3, 8, 256]))
def test_nms_equals_torchvision(dtype, data, iou_threshold, tile):
    rows, scores = data
    boxes, scores = as_boxes(rows, dtype), torch.tensor(scores, dtype=dtype)
    ref = tvo.nms(boxes, scores, iou_threshold)
    ours = N.nms(boxes, scores, iou_threshold)
    assert ours.dtype == torch.int64
    assert torch.equal(ours, ref)
    assert torch.equal(K.nms(boxes, scores, iou_threshold, tile=tile, block=7), ref)
    assert torch.equal(N.nms_reference(boxes, scores, iou_threshold), ref)


@given(data=detections(ties=True), iou_threshold=THRESHOLDS, tile=st.sampled_from([2, 256]))
def test_nms_with_tied_scores_visits_by_index(data, iou_threshold, tile):
    """torchvision's CPU kernel sorts stably too, so even ties give the same keep."""
    rows, scores = data
    boxes, scores = as_boxes(rows, torch.float32), torch.tensor(scores)
    ref = tvo.nms(boxes, scores, iou_threshold)
    assert torch.equal(N.nms(boxes, scores, iou_threshold), ref)
    assert torch.equal(K.nms(boxes, scores, iou_threshold, tile=tile), ref)
    assert torch.equal(
        N.nms_reference(boxes, scores, iou_threshold),
        tvo.nms(boxes, scores, iou_threshold),
    )


@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_many_clustered_boxes(iou_threshold, dtype):
    boxes, scores = clustered(2000, seed=int(iou_threshold * 10), dtype=dtype)
    ref = tvo.nms(boxes, scores, iou_threshold)
    assert torch.equal(N.nms(boxes, scores, iou_threshold), ref)
    assert torch.equal(K.nms(boxes, scores, iou_threshold, tile=100, block=30_000), ref)


def test_nms_reference_on_many_boxes():
    boxes, scores = clustered(600, seed=3)
    assert torch.equal(N.nms_reference(boxes, scores, 0.5), tvo.nms(boxes, scores, 0.5))


def test_iou_equal_to_threshold_is_kept():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    for fn in (N.nms, N.nms_reference, tvo.nms):
        assert fn(boxes, scores, 0.5).tolist() == [0, 1]
        assert fn(boxes, scores, 0.4999).tolist() == [0]


def test_threshold_compared_in_double_like_torchvision():
    """float32 IoU 1/10 is 0.10000000149..., just above the double 0.1: suppressed."""
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 10.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert tvo.nms(boxes, scores, 0.1).tolist() == [0]
    assert N.nms(boxes, scores, 0.1).tolist() == [0]
    assert N.nms_reference(boxes, scores, 0.1).tolist() == [0]
    idxs = torch.tensor([0, 0])
    assert N.batched_nms(boxes, scores, idxs, 0.1).tolist() == [0]


def test_nms_thresholds_zero_and_one():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [9, 9, 20, 20], [30, 30, 40, 40]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.1])
    assert N.nms(boxes, scores, 0.0).tolist() == [1, 3]  # any overlap suppresses
    assert N.nms(boxes, scores, 1.0).tolist() == [1, 0, 2, 3]  # even duplicates survive


def test_nms_empty_and_one_box():
    empty = N.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    assert N.nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert N.nms(torch.tensor([[1.0, 1, 2, 2]]), torch.tensor([0.3]), 0.5).tolist() == [0]
    b = N.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert b.shape == (0,) and b.dtype == torch.int64


# --- batched_nms --------------------------------------------------------------


@given(
    data=detections(max_size=40),
    iou_threshold=THRESHOLDS,
    classes=st.integers(1, 4),
    tile=st.sampled_from([1, 5, 256]),
    seed=st.integers(0, 2**16),
)
def test_batched_nms_equals_torchvision(data, iou_threshold, classes, tile, seed):
    rows, scores = data
    boxes, scores = (
        as_boxes(rows, torch.float64),
        torch.tensor(scores, dtype=torch.float64),
    )
    g = torch.Generator().manual_seed(seed)
    idxs = torch.randint(0, classes, (len(rows),), generator=g) * 3  # sparse class ids
    # For this few boxes torchvision uses its coordinate-offset trick; in
    # float64 with these coordinates the offsets round nothing away.
    ref = tvo.batched_nms(boxes, scores, idxs, iou_threshold)
    assert torch.equal(N.batched_nms(boxes, scores, idxs, iou_threshold), ref)
    keep = K.batched_nms(boxes, scores, idxs, iou_threshold, tile=tile, block=5)
    assert sorted(keep.tolist()) == sorted(ref.tolist())


@pytest.mark.parametrize("iou_threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("classes", [1, 7, 80])
def test_batched_nms_many_boxes_equals_torchvision(iou_threshold, classes):
    """More than 1,000 boxes: torchvision runs nms per class, as detlearn always
    does."""
    boxes, scores = clustered(1500, seed=classes)
    idxs = torch.randint(0, classes, (1500,), generator=torch.Generator().manual_seed(1))
    ref = tvo.batched_nms(boxes, scores, idxs, iou_threshold)
    assert torch.equal(N.batched_nms(boxes, scores, idxs, iou_threshold), ref)
    keep = K.batched_nms(boxes, scores, idxs, iou_threshold, tile=100, block=5000)
    assert sorted(keep.tolist()) == sorted(ref.tolist())


@pytest.mark.parametrize(
    ("small_group", "group_table"),
    [(K.SMALL_GROUP, K.GROUP_TABLE), (50, 20_000), (0, 1)],
)
def test_batched_nms_with_classes_of_very_different_sizes(small_group, group_table):
    """One class of 2,000 boxes, a few of hundreds, many of a handful: tiled one by one,
    batched together and batched alone all give torchvision's per-class answer."""
    sizes = [2000, 400, 150, 60] + [3] * 40 + [1] * 10
    boxes, scores = clustered(sum(sizes), seed=4)
    idxs = torch.repeat_interleave(torch.arange(len(sizes)) * 7, torch.tensor(sizes))
    idxs = idxs[torch.randperm(len(idxs), generator=torch.Generator().manual_seed(3))]
    ref = tvo.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(N.batched_nms(boxes, scores, idxs, 0.5), ref)
    keep = K.batched_nms(boxes, scores, idxs, 0.5, small_group=small_group, group_table=group_table)
    assert sorted(keep.tolist()) == sorted(ref.tolist())


def test_batched_nms_is_nms_per_class():
    boxes, scores = clustered(500, seed=9)
    idxs = torch.randint(0, 5, (500,), generator=torch.Generator().manual_seed(2))
    keep = N.batched_nms(boxes, scores, idxs, 0.5)
    expected = []
    for c in range(5):
        members = torch.where(idxs == c)[0]
        expected += members[N.nms_reference(boxes[members], scores[members], 0.5)].tolist()
    expected.sort(key=lambda i: -scores[i].item())
    assert keep.tolist() == expected


def test_batched_nms_ties_by_index():
    boxes = torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 1, 1], [10, 10, 11, 11]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.7])
    idxs = torch.tensor([1, 0, 0, 1])
    assert N.batched_nms(boxes, scores, idxs, 0.5).tolist() == [3, 0, 1, 2]


# --- soft-NMS -----------------------------------------------------------------


def _iou(a, b):
    """IoU of two xyxy boxes as Python floats; 0 when both have zero area."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def soft_nms_by_definition(boxes, scores, sigma, score_threshold):
    """Gaussian soft-NMS in plain Python, straight from the definition."""
    current = {i: s for i, s in enumerate(scores) if s >= score_threshold}
    keep, kept_scores = [], []
    while current:
        best = max(current, key=lambda i: (current[i], -i))
        keep.append(best)
        kept_scores.append(current.pop(best))
        for i in list(current):
            current[i] *= math.exp(-(_iou(boxes[best], boxes[i]) ** 2) / sigma)
            if current[i] < score_threshold:
                del current[i]
    return keep, kept_scores


@given(
    data=detections(max_size=25),
    sigma=st.sampled_from([0.05, 0.5, 2.0]),
    score_threshold=st.sampled_from([0.0, 0.001, 0.1, 0.3]),
)
def test_soft_nms_matches_its_definition(data, sigma, score_threshold):
    rows, scores = data
    boxes = as_boxes(rows, torch.float64)
    scores_t = torch.tensor(scores, dtype=torch.float64)
    keep, new_scores = N.soft_nms(boxes, scores_t, sigma, score_threshold)
    ref_keep, ref_scores = soft_nms_by_definition(rows, scores, sigma, score_threshold)
    assert keep.dtype == torch.int64 and new_scores.dtype == torch.float64
    assert keep.tolist() == ref_keep
    torch.testing.assert_close(
        new_scores, torch.tensor(ref_scores, dtype=torch.float64).reshape(-1)
    )
    assert (new_scores[:-1] >= new_scores[1:]).all()  # by decreasing new score


@settings(max_examples=50)
@given(data=detections(max_size=25))
def test_soft_nms_limits(data):
    rows, scores = data
    # integer corners: any overlap has IoU >= 1 / (2 * 60**2),
    # so exp(-iou**2 / 1e-12) = 0
    boxes = as_boxes(rows, torch.float64).round()
    scores = torch.tensor(scores, dtype=torch.float64) + 0.01
    keep, new_scores = N.soft_nms(boxes, scores, sigma=1e-12)
    assert torch.equal(keep, tvo.nms(boxes, scores, 0.0))  # tiny sigma: hard NMS at 0
    torch.testing.assert_close(new_scores, scores[keep])
    keep, new_scores = N.soft_nms(boxes, scores, sigma=1e12)  # huge sigma: nothing changes
    assert torch.equal(keep, torch.sort(scores, descending=True, stable=True).indices)
    torch.testing.assert_close(new_scores, scores[keep])


def test_soft_nms_hand_made():
    boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 6, 6]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, new_scores = N.soft_nms(boxes, scores, sigma=0.5)
    # box 1 has IoU 0.5 with box 0: 0.8 * exp(-0.25 / 0.5)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new_scores, torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.5)]))
    keep, _ = N.soft_nms(boxes, scores, sigma=0.5, score_threshold=0.75)
    assert keep.tolist() == [0]  # 0.7 starts below, 0.485 falls below
    keep, new_scores = N.soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == (0,) and keep.dtype == torch.int64 and new_scores.shape == (0,)


# --- bad input ----------------------------------------------------------------

BOXES = torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2]])
SCORES = torch.tensor([0.9, 0.8])
IDXS = torch.tensor([0, 1])


def _calls():
    return {
        "nms": lambda b=BOXES, s=SCORES, t=0.5: N.nms(b, s, t),
        "nms_reference": lambda b=BOXES, s=SCORES, t=0.5: N.nms_reference(b, s, t),
        "batched_nms": lambda b=BOXES, s=SCORES, t=0.5: N.batched_nms(b, s, IDXS, t),
        "soft_nms": lambda b=BOXES, s=SCORES, t=0.5: N.soft_nms(b, s, sigma=t + 0.1),
    }


@pytest.mark.parametrize("name", list(_calls()))
@pytest.mark.parametrize(
    "bad_boxes",
    [
        torch.zeros(4),
        torch.zeros(2, 5),
        torch.tensor([[0.0, 0, 1, 1], [3, 0, 2, 2]]),
        torch.tensor([[0.0, 0, 1, 1], [0, 0, math.nan, 2]]),
        torch.tensor([[0.0, 0, 1, 1], [0, 0, math.inf, 2]]),
    ],
    ids=["rank 1", "last dim 5", "x2 < x1", "nan", "inf"],
)
def test_rejects_bad_boxes(name, bad_boxes):
    with pytest.raises(ValueError, match="boxes"):
        _calls()[name](b=bad_boxes)


@pytest.mark.parametrize("name", list(_calls()))
@pytest.mark.parametrize(
    "bad_scores",
    [torch.tensor([0.9]), torch.tensor([[0.9, 0.8]]), torch.tensor([0.9, math.nan])],
    ids=["length", "rank", "nan"],
)
def test_rejects_bad_scores(name, bad_scores):
    with pytest.raises(ValueError, match="scores"):
        _calls()[name](s=bad_scores)


@pytest.mark.parametrize("name", ["nms", "nms_reference", "batched_nms"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, "0.5"])
def test_rejects_bad_threshold(name, bad):
    with pytest.raises(ValueError, match="iou_threshold"):
        _calls()[name](t=bad)


def test_rejects_bad_idxs_and_soft_parameters():
    for bad in (torch.tensor([0]), torch.tensor([0.0, 1.0]), torch.tensor([[0, 1]])):
        with pytest.raises(ValueError, match="idxs"):
            N.batched_nms(BOXES, SCORES, bad, 0.5)
    for sigma in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="sigma"):
            N.soft_nms(BOXES, SCORES, sigma=sigma)
    with pytest.raises(ValueError, match="score_threshold"):
        N.soft_nms(BOXES, SCORES, score_threshold=-0.1)


# --- box voting ---------------------------------------------------------------


def voting_by_definition(boxes, scores, keep, iou_threshold, idxs=None):
    """Box voting written out one kept box at a time, with torchvision's IoU."""
    iou = tvo.box_iou(boxes, boxes).double().nan_to_num(0.0)  # 0 / 0 counts as IoU 0
    refined = []
    for k in keep.tolist():
        weight_sum, box_sum = 0.0, torch.zeros(4, dtype=torch.float64)
        for j in range(len(boxes)):
            same_class = idxs is None or idxs[j] == idxs[k]
            if j == k or (same_class and iou[k, j] >= iou_threshold):
                weight_sum += float(scores[j])
                box_sum += float(scores[j]) * boxes[j].double()
        refined.append(box_sum / weight_sum if weight_sum > 0 else boxes[k].double())
    return torch.stack(refined) if refined else torch.zeros(0, 4, dtype=torch.float64)


@given(
    data=detections(),
    iou_threshold=THRESHOLDS,
    classes=st.integers(1, 3),
    seed=st.integers(0, 99),
)
def test_box_voting_matches_its_definition(data, iou_threshold, classes, seed):
    rows, scores = data
    boxes, scores = (
        as_boxes(rows, torch.float64),
        torch.tensor(scores, dtype=torch.float64),
    )
    idxs = torch.randint(0, classes, (len(boxes),), generator=torch.Generator().manual_seed(seed))
    keep = N.batched_nms(boxes, scores, idxs, 0.5)
    refined = N.box_voting(boxes, scores, keep, iou_threshold, idxs)
    assert refined.shape == (len(keep), 4) and refined.dtype == boxes.dtype
    torch.testing.assert_close(
        refined, voting_by_definition(boxes, scores, keep, iou_threshold, idxs)
    )
    if classes == 1:  # no idxs is the same as a single class
        torch.testing.assert_close(N.box_voting(boxes, scores, keep, iou_threshold), refined)


def test_box_voting_on_clustered_detections():
    boxes, scores = clustered(400, seed=5)
    idxs = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(1))
    keep = N.batched_nms(boxes, scores, idxs, 0.5)
    refined = N.box_voting(boxes, scores, keep, 0.7, idxs)
    expected = voting_by_definition(boxes, scores, keep, 0.7, idxs).float()
    torch.testing.assert_close(refined, expected, rtol=1e-5, atol=1e-4)
    assert not torch.equal(refined, boxes[keep])  # the clusters do move the boxes


def test_box_voting_hand_made():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [2.0, 0.0, 12.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [50, 50, 50, 60],
        ]
    )
    scores = torch.tensor([0.6, 0.2, 0.9, 0.4])
    labels = torch.tensor([0, 0, 1, 0])
    keep = torch.tensor([2, 0, 3])
    # box 0 and box 1 overlap with IoU 8/12; box 2 has another class; box 3 has no area
    refined = N.box_voting(boxes, scores, keep, 0.6, labels)
    expected = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.5, 0.0, 10.5, 10.0], [50, 50, 50, 60]])
    torch.testing.assert_close(refined, expected)
    # 8/12 < 0.7: every kept box votes alone and comes back bit for bit
    assert torch.equal(N.box_voting(boxes, scores, keep, 0.7, labels), boxes[keep])
    # without classes, box 2 (identical to box 0) votes too:
    # (0.6 b0 + 0.2 b1 + 0.9 b2) / 1.7
    no_classes = N.box_voting(boxes, scores, keep[1:2], 0.6)
    torch.testing.assert_close(no_classes, torch.tensor([[0.4 / 1.7, 0.0, 10 + 0.4 / 1.7, 10.0]]))
    # zero scores: the kept box stays where it is
    zero = N.box_voting(boxes, torch.zeros(4), keep, 0.0)
    assert torch.equal(zero, boxes[keep])


def test_box_voting_empty_and_rejects_bad_input():
    empty = N.box_voting(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert empty.shape == (0, 4)
    none_kept = N.box_voting(BOXES, SCORES, torch.zeros(0, dtype=torch.int64))
    assert none_kept.shape == (0, 4)
    with pytest.raises(ValueError, match="scores must be >= 0"):
        N.box_voting(BOXES, -SCORES, torch.tensor([0]))
    for bad in (
        torch.tensor([0.0]),
        torch.tensor([[0]]),
        torch.tensor([len(BOXES)]),
        torch.tensor([-1]),
    ):
        with pytest.raises(ValueError, match="keep"):
            N.box_voting(BOXES, SCORES, bad)
    with pytest.raises(ValueError, match="iou_threshold"):
        N.box_voting(BOXES, SCORES, torch.tensor([0]), 1.5)
    with pytest.raises(ValueError, match="idxs"):
        N.box_voting(BOXES, SCORES, torch.tensor([0]), 0.5, torch.tensor([0]))


# --- readable in front, fast behind -------------------------------------------


@pytest.mark.parametrize(
    "tuning",
    [
        {"tile": 1, "block": 1},
        {"tile": 7, "block": 50},
        {"tile": 20, "block": 400},
        {"tile": 2000, "block": 10**7},
    ],
)
def test_kernels_with_other_tuning_give_the_same_keep(tuning):
    """The tuning arguments change the speed of the kernels, never their result."""
    boxes, scores = clustered(900, seed=11, centres=45)  # ~20 boxes per object
    idxs = torch.randint(0, 6, (900,), generator=torch.Generator().manual_seed(4))
    keep = N.nms_reference(boxes, scores, 0.5)
    assert torch.equal(N.nms(boxes, scores, 0.5), keep)
    assert torch.equal(K.nms(boxes, scores, 0.5, **tuning), keep)
    per_class = N.batched_nms(boxes, scores, idxs, 0.5)
    groups = {"small_group": 40, "group_table": 5_000}
    for extra in ({}, groups, {"small_group": 0}):
        ours = K.batched_nms(boxes, scores, idxs, 0.5, **tuning, **extra)
        assert sorted(ours.tolist()) == sorted(per_class.tolist()), extra


@pytest.mark.parametrize(
    "obj", [N.nms_reference, N.soft_nms, N.box_voting], ids=lambda f: f.__name__
)
def test_shown_code_reads_whole(obj):
    """Chapter 10 shows these: a screenful, no hidden helper but the checks."""
    assert_reads_whole(obj)


# --- CUDA ---------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    def test_nms_family_matches_cpu(self):
        boxes, scores = clustered(2000, seed=4)
        idxs = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
        gpu = boxes.cuda(), scores.cuda()
        keep = N.nms(*gpu, 0.5)
        assert keep.device.type == "cuda"
        assert torch.equal(keep.cpu(), N.nms(boxes, scores, 0.5))
        assert torch.equal(N.nms_reference(*gpu, 0.5).cpu(), N.nms(boxes, scores, 0.5))
        batched = N.batched_nms(*gpu, idxs.cuda(), 0.5)
        assert torch.equal(batched.cpu(), N.batched_nms(boxes, scores, idxs, 0.5))
        k_gpu, s_gpu = N.soft_nms(gpu[0][:300], gpu[1][:300])
        k_cpu, s_cpu = N.soft_nms(boxes[:300], scores[:300])
        assert torch.equal(k_gpu.cpu(), k_cpu)
        torch.testing.assert_close(s_gpu.cpu(), s_cpu)
        keep = N.batched_nms(boxes, scores, idxs, 0.5)
        voted = N.box_voting(*gpu, keep.cuda(), 0.7, idxs.cuda())
        torch.testing.assert_close(voted.cpu(), N.box_voting(boxes, scores, keep, 0.7, idxs))


# --- the tensor-only path (what CUDA tensors take), forced on the CPU ----------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(data=detections(ties=True), iou_threshold=THRESHOLDS, tile=st.sampled_from([1, 3, 256]))
def test_tensor_only_path_gives_the_same_keep(dtype, data, iou_threshold, tile):
    rows, scores = data
    boxes, scores = as_boxes(rows, dtype), torch.tensor(scores, dtype=dtype)
    idxs = torch.arange(len(boxes)) % 3
    ref = tvo.nms(boxes, scores, iou_threshold)
    assert torch.equal(K.nms(boxes, scores, iou_threshold, tile=tile, tensor_only=True), ref)
    host = K.batched_nms(boxes, scores, idxs, iou_threshold, tensor_only=False)
    for extra in ({}, {"small_group": 2, "group_table": 20}, {"small_group": 0}):
        ours = K.batched_nms(boxes, scores, idxs, iou_threshold, tile=tile, tensor_only=True,
                             **extra)  # fmt: skip
        assert sorted(ours.tolist()) == sorted(host.tolist()), extra


def test_tensor_only_path_never_copies_a_table_to_the_host(monkeypatch):
    """The host path's table loops are never reached; the keep is the same."""
    boxes, scores = clustered(900, seed=11, centres=45)
    idxs = torch.randint(0, 6, (900,), generator=torch.Generator().manual_seed(4))
    keep, per_class = N.nms(boxes, scores, 0.5), N.batched_nms(boxes, scores, idxs, 0.5)

    def host_loop(*args):
        raise AssertionError("the tensor-only path copied a table to the host")

    monkeypatch.setattr(K, "_greedy_on_tile", host_loop)
    monkeypatch.setattr(K, "_greedy_on_groups", host_loop)
    assert torch.equal(K.nms(boxes, scores, 0.5, tile=64, tensor_only=True), keep)
    for extra in ({}, {"small_group": 40, "group_table": 5_000}, {"small_group": 0}):
        ours = K.batched_nms(boxes, scores, idxs, 0.5, tensor_only=True, **extra)
        assert sorted(ours.tolist()) == sorted(per_class.tolist()), extra
    with pytest.raises(AssertionError, match="host"):  # and the default on the CPU is the host's
        K.nms(boxes, scores, 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCudaTensorOnly:
    def test_cuda_tensors_take_the_tensor_only_path(self, monkeypatch):
        boxes, scores = clustered(2000, seed=4)
        idxs = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
        keep, per_class = N.nms(boxes, scores, 0.5), N.batched_nms(boxes, scores, idxs, 0.5)

        def host_loop(*args):
            raise AssertionError("a CUDA tensor went through the host path")

        monkeypatch.setattr(K, "_greedy_on_tile", host_loop)
        monkeypatch.setattr(K, "_greedy_on_groups", host_loop)
        assert torch.equal(N.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), keep)
        batched = N.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5)
        assert torch.equal(batched.cpu(), per_class)
