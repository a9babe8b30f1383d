"""detlearn.boxes against torchvision.ops, on random and hand-made boxes."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given
from hypothesis import strategies as st
from strategies import as_boxes, assert_reads_whole, box_lists

from detlearn import boxes as B
from detlearn._kernels import boxes as K

DTYPES = [torch.float32, torch.float64]
PAIRWISE = {
    "box_iou": (B.box_iou, tvo.box_iou),
    "box_iou_reference": (B.box_iou_reference, tvo.box_iou),
    "generalized_box_iou": (B.generalized_box_iou, tvo.generalized_box_iou),
    "distance_box_iou": (B.distance_box_iou, tvo.distance_box_iou),
    "complete_box_iou": (B.complete_box_iou, tvo.complete_box_iou),
}


# --- strategies ---------------------------------------------------------------


def assert_equal_where_defined(ours: torch.Tensor, ref: torch.Tensor, fill: torch.Tensor) -> None:
    """Equal to the reference wherever it is a number; ``fill`` where it is NaN."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert not torch.isnan(ours).any()
    nan = torch.isnan(ref)
    torch.testing.assert_close(ours[~nan], ref[~nan], rtol=0, atol=0)
    torch.testing.assert_close(ours[nan], fill[nan], rtol=0, atol=0)


def iou_fill(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Where torchvision's IoU is 0/0 detlearn defines it as 0."""
    return torch.zeros(len(boxes1), len(boxes2), dtype=boxes1.dtype)


# --- against torchvision on random boxes --------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@given(rows1=box_lists(), rows2=box_lists())
def test_box_iou_equals_torchvision(dtype, rows1, rows2):
    b1, b2 = as_boxes(rows1, dtype), as_boxes(rows2, dtype)
    ours = B.box_iou(b1, b2)
    assert_equal_where_defined(ours, tvo.box_iou(b1, b2), iou_fill(b1, b2))
    assert ((ours >= 0) & (ours <= 1)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@given(rows1=box_lists(), rows2=box_lists())
def test_generalized_box_iou_equals_torchvision(dtype, rows1, rows2):
    b1, b2 = as_boxes(rows1, dtype), as_boxes(rows2, dtype)
    ours = B.generalized_box_iou(b1, b2)
    # torchvision is NaN where IoU is 0/0 (both boxes have zero area). GIoU is
    # then 0 - (C - U) / C = -1 when the enclosing area C > 0, and 0 when C = 0.
    enclosing = torch.max(b1[:, None, 2:], b2[:, 2:]) - torch.min(b1[:, None, :2], b2[:, :2])
    fill = torch.where(enclosing.prod(-1) > 0, -1.0, 0.0).to(dtype)
    assert_equal_where_defined(ours, tvo.generalized_box_iou(b1, b2), fill)
    assert ((ours >= -1) & (ours <= 1)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@given(rows1=box_lists(), rows2=box_lists())
def test_distance_box_iou_equals_torchvision(dtype, rows1, rows2):
    b1, b2 = as_boxes(rows1, dtype), as_boxes(rows2, dtype)
    ours = B.distance_box_iou(b1, b2)
    ref = tvo.distance_box_iou(b1, b2)
    assert ours.shape == ref.shape and not torch.isnan(ours).any()
    nan = torch.isnan(ref)  # where IoU is 0/0 (two zero-area boxes)
    torch.testing.assert_close(ours[~nan], ref[~nan], rtol=0, atol=0)
    # There detlearn defines IoU as 0, so DIoU is minus the distance term,
    # written out here from its definition.
    torch.testing.assert_close(ours[nan], -diou_distance_term(b1, b2)[nan])


def diou_distance_term(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7):
    """DIoU's penalty: squared centre distance over the squared diagonal of the
    enclosing box."""
    centres1 = (boxes1[:, None, :2] + boxes1[:, None, 2:]) / 2
    centres2 = (boxes2[None, :, :2] + boxes2[None, :, 2:]) / 2
    top_left = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    diagonal = ((bottom_right - top_left) ** 2).sum(-1) + eps
    return ((centres1 - centres2) ** 2).sum(-1) / diagonal


@pytest.mark.parametrize("dtype", DTYPES)
@given(rows1=box_lists(), rows2=box_lists())
def test_complete_box_iou_equals_torchvision(dtype, rows1, rows2):
    b1, b2 = as_boxes(rows1, dtype), as_boxes(rows2, dtype)
    ours = B.complete_box_iou(b1, b2)
    ref = tvo.complete_box_iou(b1, b2)
    assert not torch.isnan(ours).any()
    # torchvision is NaN where a box has zero height and width or IoU is 0/0;
    # everywhere else the numbers are the same.
    defined = ~torch.isnan(ref)
    torch.testing.assert_close(ours[defined], ref[defined], rtol=0, atol=0)


@given(rows1=box_lists(integer=False), rows2=box_lists(integer=False))
def test_complete_box_iou_zero_height_is_the_limit(rows1, rows2):
    """Boxes of zero height have angle pi/2; nudging the height up approaches that."""
    b1, b2 = as_boxes(rows1, torch.float64), as_boxes(rows2, torch.float64)
    flat1 = b1.clone()
    flat1[:, 3] = flat1[:, 1]
    nudged = flat1.clone()
    nudged[:, 3] += 1e-12 * (nudged[:, 2] - nudged[:, 0])  # h / w = 1e-12
    ours = B.complete_box_iou(flat1, b2)
    assert not torch.isnan(ours).any()
    # where b2 is at least 0.01 high the nudge moves IoU by < 1e-12 * 300 / 0.01
    ok = (flat1[:, 2] > flat1[:, 0])[:, None] & (b2[:, 3] - b2[:, 1] >= 0.01)[None, :]
    torch.testing.assert_close(ours[ok], B.complete_box_iou(nudged, b2)[ok], atol=1e-6, rtol=0)


FORMATS = ["xyxy", "xywh", "cxcywh"]


@given(rows=box_lists())
def test_box_convert_equals_torchvision(rows):
    xyxy = as_boxes(rows, torch.float64)
    for in_fmt in FORMATS:
        boxes = tvo.box_convert(xyxy, "xyxy", in_fmt)  # valid input in in_fmt
        for out_fmt in FORMATS:
            ours = B.box_convert(boxes, in_fmt, out_fmt)
            ref = tvo.box_convert(boxes, in_fmt, out_fmt)
            torch.testing.assert_close(ours, ref, rtol=0, atol=0)
            back = B.box_convert(ours, out_fmt, in_fmt)
            torch.testing.assert_close(back, boxes, rtol=1e-12, atol=1e-9)


def test_box_convert_same_format_is_a_copy():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = B.box_convert(boxes, "xywh", "xywh")
    assert torch.equal(out, boxes) and out.data_ptr() != boxes.data_ptr()


@pytest.mark.parametrize("dtype", DTYPES)
@given(rows=box_lists(), size=st.tuples(st.integers(0, 80), st.integers(0, 80)))
def test_area_clip_remove_small_equal_torchvision(dtype, rows, size):
    boxes = as_boxes(rows, dtype)
    torch.testing.assert_close(B.box_area(boxes), tvo.box_area(boxes), rtol=0, atol=0)
    clipped = B.clip_boxes_to_image(boxes, size)
    torch.testing.assert_close(clipped, tvo.clip_boxes_to_image(boxes, size), rtol=0, atol=0)
    for min_size in (0.0, 1.0, 10.0, 20.5):
        ours = B.remove_small_boxes(boxes, min_size)
        assert ours.dtype == torch.int64
        assert torch.equal(ours, tvo.remove_small_boxes(boxes, min_size))


# --- hand-made cases ----------------------------------------------------------


def t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hand_made_pairs(dtype):
    a = t([[0, 0, 10, 10]], dtype)
    cases = {  # box: (IoU, GIoU)
        "identical": ([0, 0, 10, 10], 1.0, 1.0),
        "nested": ([2, 2, 7, 7], 0.25, 0.25),
        "half": ([0, 0, 10, 5], 0.5, 0.5),
        "touching": ([10, 0, 20, 10], 0.0, 0.0),
        "disjoint": ([20, 0, 30, 10], 0.0, -(300 - 200) / 300),
        "zero width inside": ([5, 0, 5, 10], 0.0, 0.0),
        "point outside": ([20, 20, 20, 20], 0.0, -(400 - 100) / 400),
    }
    for name, (row, iou, giou) in cases.items():
        b = t([row], dtype)
        assert B.box_iou(a, b).item() == pytest.approx(iou), name
        assert B.box_iou(b, a).item() == pytest.approx(iou), name
        assert B.generalized_box_iou(a, b).item() == pytest.approx(giou), name
        # DIoU and CIoU never exceed IoU and equal it for concentric same-shape boxes
        assert B.distance_box_iou(a, b).item() <= iou + 1e-7, name
        assert B.complete_box_iou(a, b).item() <= iou + 1e-7, name
    assert B.distance_box_iou(a, a).item() == pytest.approx(1.0)
    assert B.complete_box_iou(a, a).item() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_area_pairs_are_defined_not_nan(dtype):
    point = t([[3, 3, 3, 3]], dtype)
    line = t([[3, 0, 3, 10]], dtype)
    for fn in (
        B.box_iou,
        B.generalized_box_iou,
        B.distance_box_iou,
        B.complete_box_iou,
    ):
        for b1, b2 in ((point, point), (line, line), (point, line)):
            value = fn(b1, b2)
            assert not torch.isnan(value).any(), fn.__name__
    assert B.box_iou(point, point).item() == 0.0
    assert B.generalized_box_iou(point, point).item() == 0.0
    assert B.generalized_box_iou(line, line).item() == 0.0
    assert B.complete_box_iou(point, point).item() == 0.0


def test_huge_coordinates():
    offset = 1e6
    rows = [[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 400, 900]]
    small = t(rows, torch.float64)
    big = small + offset
    for fn in (
        B.box_iou,
        B.generalized_box_iou,
        B.distance_box_iou,
        B.complete_box_iou,
    ):
        torch.testing.assert_close(fn(big, big), fn(small, small), rtol=1e-9, atol=1e-9)
    big32 = big.float()
    torch.testing.assert_close(B.box_iou(big32, big32), tvo.box_iou(big32, big32), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [v[0] for v in PAIRWISE.values()], ids=list(PAIRWISE))
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_and_single(fn, dtype):
    empty = torch.zeros(0, 4, dtype=dtype)
    one = t([[1, 2, 3, 5]], dtype)
    assert fn(empty, one).shape == (0, 1) and fn(empty, one).dtype == dtype
    assert fn(one, empty).shape == (1, 0)
    assert fn(empty, empty).shape == (0, 0)
    assert fn(one, one).shape == (1, 1)
    assert fn(one, one).item() == pytest.approx(1.0)


def test_empty_single_box_functions():
    empty = torch.zeros(0, 4)
    assert B.box_area(empty).shape == (0,)
    assert B.box_convert(empty, "xyxy", "cxcywh").shape == (0, 4)
    assert B.clip_boxes_to_image(empty, (10, 10)).shape == (0, 4)
    assert B.remove_small_boxes(empty, 1.0).shape == (0,)
    assert B.remove_small_boxes(empty, 1.0).dtype == torch.int64


def test_integer_boxes_are_promoted_to_float32():
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15]])
    iou = B.box_iou(boxes, boxes)
    assert iou.dtype == torch.float32
    assert iou[0, 1].item() == pytest.approx(25 / 175)
    assert B.box_area(boxes).tolist() == [100.0, 100.0]


def test_gradients_flow_through_pairwise_functions():
    b1 = t([[0, 0, 10, 10], [2, 3, 9, 7]], torch.float64).requires_grad_()
    b2 = t([[1, 1, 8, 12], [20, 0, 30, 4], [0, 0, 10, 10.5]], torch.float64).requires_grad_()
    for fn in (B.box_iou, B.generalized_box_iou, B.distance_box_iou):
        assert torch.autograd.gradcheck(fn, (b1, b2))
    # CIoU treats alpha as a constant, so compare with torchvision instead of gradcheck
    g_ours = torch.autograd.grad(B.complete_box_iou(b1, b2).sum(), (b1, b2))
    g_ref = torch.autograd.grad(tvo.complete_box_iou(b1, b2).sum(), (b1, b2))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b)


# --- bad input ----------------------------------------------------------------

GOOD = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 4.0, 5.0]])
BAD_BOXES = {
    "rank 1": (torch.zeros(4), "shape"),
    "rank 3": (torch.zeros(2, 2, 4), "shape"),
    "last dim 5": (torch.zeros(3, 5), "shape"),
    "x2 < x1": (torch.tensor([[5.0, 0.0, 1.0, 1.0]]), "x2 >= x1"),
    "y2 < y1": (torch.tensor([[0.0, 5.0, 1.0, 1.0]]), "x2 >= x1"),
    "nan": (torch.tensor([[0.0, float("nan"), 1.0, 1.0]]), "finite"),
    "inf": (torch.tensor([[0.0, 0.0, math.inf, 1.0]]), "finite"),
    "list": ([[0.0, 0.0, 1.0, 1.0]], "torch.Tensor"),
}


@pytest.mark.parametrize("case", list(BAD_BOXES))
@pytest.mark.parametrize("name", list(PAIRWISE))
def test_pairwise_reject_bad_boxes(name, case):
    fn = PAIRWISE[name][0]
    bad, what = BAD_BOXES[case]
    with pytest.raises(ValueError, match=f"boxes1 .*{what}|boxes1 must"):
        fn(bad, GOOD)
    with pytest.raises(ValueError, match="boxes2"):
        fn(GOOD, bad)


@pytest.mark.parametrize("case", list(BAD_BOXES))
def test_single_set_functions_reject_bad_boxes(case):
    bad, _ = BAD_BOXES[case]
    for call in (
        lambda b: B.box_area(b),
        lambda b: B.box_convert(b, "xyxy", "xywh"),
        lambda b: B.clip_boxes_to_image(b, (10, 10)),
        lambda b: B.remove_small_boxes(b, 1.0),
    ):
        with pytest.raises(ValueError, match="boxes"):
            call(bad)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="in_fmt"):
        B.box_convert(GOOD, "xyxyxy", "xyxy")
    with pytest.raises(ValueError, match="out_fmt"):
        B.box_convert(GOOD, "xyxy", "XYWH")
    with pytest.raises(ValueError, match="boxes .*width >= 0"):
        B.box_convert(torch.tensor([[0.0, 0.0, -1.0, 2.0]]), "xywh", "xyxy")
    for size in ((10,), (10, 10, 3), (-1, 10), (10, float("nan")), "10x10"):
        with pytest.raises(ValueError, match="size"):
            B.clip_boxes_to_image(GOOD, size)
    for min_size in (-1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="min_size"):
            B.remove_small_boxes(GOOD, min_size)
    for fn in (B.distance_box_iou, B.complete_box_iou):
        with pytest.raises(ValueError, match="eps"):
            fn(GOOD, GOOD, eps=-1.0)


# --- readable in front, fast behind -------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@given(rows1=box_lists(), rows2=box_lists(), block=st.sampled_from([1, 3, 7, 64]))
def test_box_iou_kernel_equals_the_reference(dtype, rows1, rows2, block):
    """box_iou's blocked kernel gives box_iou_reference's bits, whatever the block."""
    b1, b2 = as_boxes(rows1, dtype), as_boxes(rows2, dtype)
    ref = B.box_iou_reference(b1, b2)
    assert torch.equal(B.box_iou(b1, b2), ref)
    assert torch.equal(K.box_iou(b1, b2, block=block), ref)


def test_box_iou_kernel_on_many_boxes():
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(700, 2, generator=g) * 500
    b = torch.cat((xy, xy + torch.rand(700, 2, generator=g) * 80), 1)
    b[::7, 3] = b[::7, 1]  # some zero heights
    ref = B.box_iou_reference(b, b[:300])
    for block in (K.BLOCK, 1, 299, 300, 301, 10**6):
        assert torch.equal(K.box_iou(b, b[:300], block=block), ref), block
    assert torch.equal(B.box_iou(b, b[:300]), ref)


SHOWN = [
    B.box_convert,
    B.box_area,
    B.box_iou_reference,
    B.generalized_box_iou,
    B.distance_box_iou,
    B.box_aspect_angle,
    B.complete_box_iou,
    B.clip_boxes_to_image,
    B.remove_small_boxes,
]


@pytest.mark.parametrize("obj", SHOWN, ids=lambda f: f.__name__)
def test_shown_code_reads_whole(obj):
    """Chapter 3 shows these: a screenful, no hidden helper but the checks."""
    assert_reads_whole(obj)


# --- CUDA ---------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    def test_pairwise_match_cpu(self):
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(300, 2, generator=g) * 100
        b = torch.cat((xy, xy + torch.rand(300, 2, generator=g) * 50), 1)
        b[:5, 2] = b[:5, 0]  # some zero widths
        for dtype in DTYPES:
            cpu = b.to(dtype)
            gpu = cpu.cuda()
            for name, (fn, _) in PAIRWISE.items():
                out = fn(gpu, gpu[:40])
                assert out.device.type == "cuda" and out.dtype == dtype, name
                torch.testing.assert_close(out.cpu(), fn(cpu, cpu[:40]), msg=name)
            for fmt in ("xywh", "cxcywh"):
                torch.testing.assert_close(
                    B.box_convert(gpu, "xyxy", fmt).cpu(),
                    B.box_convert(cpu, "xyxy", fmt),
                )
            torch.testing.assert_close(
                B.clip_boxes_to_image(gpu, (50, 60)).cpu(),
                B.clip_boxes_to_image(cpu, (50, 60)),
            )
            assert torch.equal(B.remove_small_boxes(gpu, 5).cpu(), B.remove_small_boxes(cpu, 5))
