"""detlearn.anchors: the grid from its definition, BoxCoder and Matcher from
torchvision, and the batched Matcher kernel from the readable Matcher."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import assert_reads_whole
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection._utils import Matcher as TvMatcher

from detlearn._kernels import matching
from detlearn.anchors import Matcher, decode_boxes, encode_boxes, make_anchors

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 0.5, 3.0, 1.5)]


# --- make_anchors -------------------------------------------------------------


def test_make_anchors_worked_example():
    """2 x 3 map, stride 8, one 16-pixel square per cell: worked out by hand."""
    anchors = make_anchors((2, 3), 8, [16], [1.0])
    expected = [
        [-4, -4, 12, 12], [4, -4, 20, 12], [12, -4, 28, 12],  # row 0: x = 4, 12, 20
        [-4, 4, 12, 20], [4, 4, 20, 20], [12, 4, 28, 20],  # row 1: centre y = 12
    ]  # fmt: skip
    assert anchors.dtype == torch.float32
    assert anchors.tolist() == expected


def test_make_anchors_ratios_outer_sizes_inner():
    """One cell at (2, 2) with stride (4, 4): ratio 4 means h = 2 s, w = s / 2."""
    anchors = make_anchors((1, 1), (4, 4), [8, 16], [0.25, 4.0])
    expected = [
        [2 - 8, 2 - 2, 2 + 8, 2 + 2],  # r = 0.25, s = 8: w = 16, h = 4
        [2 - 16, 2 - 4, 2 + 16, 2 + 4],  # r = 0.25, s = 16: w = 32, h = 8
        [2 - 2, 2 - 8, 2 + 2, 2 + 8],  # r = 4, s = 8: w = 4, h = 16
        [2 - 4, 2 - 16, 2 + 4, 2 + 16],  # r = 4, s = 16: w = 8, h = 32
    ]
    assert anchors.tolist() == expected


def anchors_by_definition(feature_size, stride, sizes, ratios):
    """The contract, in nested Python loops."""
    (h, w), (sy, sx) = feature_size, stride
    out = []
    for i in range(h):
        for j in range(w):
            cx, cy = (j + 0.5) * sx, (i + 0.5) * sy
            for r in ratios:
                for s in sizes:
                    aw, ah = s / math.sqrt(r), s * math.sqrt(r)
                    out.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return torch.tensor(out, dtype=torch.float64).reshape(-1, 4)


@given(
    feature_size=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    stride=st.tuples(st.integers(1, 32), st.integers(1, 32)),
    sizes=st.lists(st.floats(1, 256), min_size=1, max_size=3),
    ratios=st.lists(st.floats(0.2, 5), min_size=1, max_size=3),
)
def test_make_anchors_matches_definition(feature_size, stride, sizes, ratios):
    ours = make_anchors(feature_size, stride, sizes, ratios, dtype=torch.float64)
    expected = anchors_by_definition(feature_size, stride, sizes, ratios)
    assert ours.shape == (
        feature_size[0] * feature_size[1] * len(sizes) * len(ratios),
        4,
    )
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-9)
    areas = (ours[:, 2] - ours[:, 0]) * (ours[:, 3] - ours[:, 1])
    expected_areas = torch.tensor([s * s for _ in ratios for s in sizes], dtype=torch.float64)
    n_loc = feature_size[0] * feature_size[1]
    torch.testing.assert_close(areas, expected_areas.repeat(n_loc), rtol=1e-9, atol=1e-9)


def test_make_anchors_dtype_device_and_int_stride():
    a = make_anchors((2, 2), 16, [32], [0.5, 1.0, 2.0], dtype=torch.float64, device="cpu")
    assert a.dtype == torch.float64 and a.device.type == "cpu" and a.shape == (12, 4)
    torch.testing.assert_close(a, make_anchors((2, 2), (16, 16), [32], [0.5, 1, 2]).double())
    assert make_anchors((0, 4), 8, [16], [1.0]).shape == (0, 4)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(feature_size=(2,)), "feature_size"),
        (dict(feature_size=(2, -1)), "feature_size"),
        (dict(feature_size=(2.5, 2)), "feature_size"),
        (dict(stride=0), "stride"),
        (dict(stride=(8, 8, 8)), "stride"),
        (dict(sizes=[]), "sizes"),
        (dict(sizes=[16, -2]), "sizes"),
        (dict(aspect_ratios=[0.0]), "aspect_ratios"),
        (dict(aspect_ratios=[math.nan]), "aspect_ratios"),
    ],
)
def test_make_anchors_rejects_bad_arguments(kwargs, name):
    args = dict(feature_size=(2, 2), stride=8, sizes=[16], aspect_ratios=[1.0]) | kwargs
    with pytest.raises(ValueError, match=name):
        make_anchors(**args)


# --- encode / decode ----------------------------------------------------------


@st.composite
def positive_boxes(draw, n: int):
    rows = []
    for _ in range(n):
        x, y = draw(st.floats(-50, 300)), draw(st.floats(-50, 300))
        w, h = draw(st.floats(0.5, 200)), draw(st.floats(0.5, 200))
        rows.append([x, y, x + w, y + h])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


@st.composite
def box_pairs(draw):
    n = draw(st.integers(0, 10))
    return draw(positive_boxes(n)), draw(positive_boxes(n))


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(pair=box_pairs())
def test_encode_decode_equal_box_coder(weights, dtype, pair):
    gt, anchors = (b.to(dtype) for b in pair)
    coder = BoxCoder(weights)
    deltas = encode_boxes(gt, anchors, weights)
    assert deltas.dtype == dtype and deltas.shape == gt.shape
    torch.testing.assert_close(deltas, coder.encode_single(gt, anchors), rtol=0, atol=0)
    decoded = decode_boxes(deltas, anchors, weights)
    torch.testing.assert_close(decoded, coder.decode_single(deltas, anchors), rtol=0, atol=0)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    # decode(encode(x)) == x, once the default cap on growth (62.5x) is lifted
    torch.testing.assert_close(decode_boxes(deltas, anchors, weights, clip=math.inf), gt, **tol)


@given(pair=box_pairs(), scale=st.floats(1, 50), clip=st.sampled_from([1.0, 4.0, math.inf]))
def test_decode_clip_equals_box_coder(pair, scale, clip):
    _, anchors = pair
    g = torch.Generator().manual_seed(len(anchors))
    deltas = torch.randn(len(anchors), 4, generator=g, dtype=torch.float64) * scale
    ours = decode_boxes(deltas, anchors, (10.0, 10.0, 5.0, 5.0), clip=clip)
    ref = BoxCoder((10.0, 10.0, 5.0, 5.0), bbox_xform_clip=clip).decode_single(deltas, anchors)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_default_clip_is_log_1000_over_16():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = decode_boxes(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchors)
    assert (out[0, 2] - out[0, 0]).item() == pytest.approx(10 * 1000 / 16, rel=1e-5)


def test_encode_worked_example():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), w 10, h 20
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), w 20, h 20
    deltas = encode_boxes(gt, anchor)
    torch.testing.assert_close(deltas, torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]]))
    deltas = encode_boxes(gt, anchor, (10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(deltas, torch.tensor([[7.0, 2.0, 5 * math.log(2.0), 0.0]]))


def test_encode_decode_empty():
    empty = torch.zeros(0, 4)
    assert encode_boxes(empty, empty).shape == (0, 4)
    assert decode_boxes(empty, empty).shape == (0, 4)


GOOD = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]])


@pytest.mark.parametrize(
    "bad, what",
    [
        (torch.zeros(2, 5), "shape"),
        (torch.zeros(4), "shape"),
        (torch.tensor([[0.0, 0, 4, 4], [3, 1, 2, 5]]), "x2 >= x1"),
        (torch.tensor([[0.0, 0, 4, 4], [1, 1, 1, 5]]), "width > 0"),
        (torch.tensor([[0.0, 0, 4, 4], [1, 1, math.nan, 5]]), "finite"),
        (torch.tensor([[0.0, 0, 4, 4]]), "same length"),
    ],
)
def test_encode_rejects_bad_boxes(bad, what):
    with pytest.raises(ValueError, match=f"gt_boxes.*{what}|{what}"):
        encode_boxes(bad, GOOD)
    with pytest.raises(ValueError, match="anchors"):
        encode_boxes(GOOD, bad)


def test_decode_rejects_bad_input():
    with pytest.raises(ValueError, match="deltas"):
        decode_boxes(torch.zeros(2, 3), GOOD)
    with pytest.raises(ValueError, match="deltas"):
        decode_boxes(torch.tensor([[0.0, 0, 0, math.inf], [0, 0, 0, 0]]), GOOD)
    with pytest.raises(ValueError, match="anchors"):
        decode_boxes(torch.zeros(2, 4), torch.tensor([[0.0, 0, 4, 4], [3, 1, 2, 5]]))
    with pytest.raises(ValueError, match="same length"):
        decode_boxes(torch.zeros(3, 4), GOOD)
    with pytest.raises(ValueError, match="weights"):
        decode_boxes(torch.zeros(2, 4), GOOD, weights=(1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="weights"):
        encode_boxes(GOOD, GOOD, weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="clip"):
        decode_boxes(torch.zeros(2, 4), GOOD, clip=math.nan)


# --- Matcher ------------------------------------------------------------------

# coarse values: ties and values exactly at the thresholds
LEVELS = [0.0, 0.1, 0.3, 0.4, 0.5, 0.7, 0.9, 1.0]


@st.composite
def iou_matrices(draw):
    g, a = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    values = draw(st.lists(st.sampled_from(LEVELS), min_size=g * a, max_size=g * a))
    return torch.tensor(values).reshape(g, a)


@given(
    iou=iou_matrices(),
    thresholds=st.sampled_from([(0.5, 0.4), (0.7, 0.3), (0.5, 0.5), (1.0, 0.0), (0.4, 0.1)]),
    low_quality=st.booleans(),
)
def test_matcher_equals_torchvision(iou, thresholds, low_quality):
    high, low = thresholds
    ours = Matcher(high, low, allow_low_quality_matches=low_quality)(iou)
    ref = TvMatcher(high, low, allow_low_quality_matches=low_quality)(iou)
    assert ours.dtype == torch.int64
    assert torch.equal(ours, ref)


@given(iou=iou_matrices(), low_quality=st.booleans())
def test_matcher_equals_torchvision_on_continuous_values(iou, low_quality):
    noisy = iou + torch.rand(iou.shape, generator=torch.Generator().manual_seed(0)) * 0.05
    ours = Matcher(0.5, 0.4, low_quality)(noisy)
    assert torch.equal(ours, TvMatcher(0.5, 0.4, low_quality)(noisy))


@given(
    sizes=st.lists(st.integers(0, 5), min_size=1, max_size=5),
    num_anchors=st.integers(1, 12),
    low_quality=st.booleans(),
    seed=st.integers(0, 999),
)
def test_match_batch_equals_torchvision_image_by_image(sizes, num_anchors, low_quality, seed):
    """Images with different numbers of objects (none included) matched in one go."""
    g = torch.Generator().manual_seed(seed)
    matrices = [torch.randint(0, 8, (n, num_anchors), generator=g) / 8 for n in sizes]
    batch = Matcher(0.5, 0.4, low_quality).match_batch(matrices)
    assert batch.shape == (len(sizes), num_anchors) and batch.dtype == torch.int64
    for row, iou in zip(batch, matrices, strict=True):
        if len(iou) == 0:
            assert row.tolist() == [-1] * num_anchors  # all background
        else:
            assert torch.equal(row, TvMatcher(0.5, 0.4, low_quality)(iou))


CASES = [(0.5, 0.4), (0.7, 0.3), (0.5, 0.5), (1.0, 0.0), (0.4, 0.1), (0.0, 0.0)]


def random_batch(g: torch.Generator, num_anchors: int) -> list[torch.Tensor]:
    """0 to 5 images of 0 to 5 objects; coarse values (ties), fine ones, negatives."""
    matrices = []
    for _ in range(int(torch.randint(0, 6, (1,), generator=g))):
        shape = (int(torch.randint(0, 6, (1,), generator=g)), num_anchors)
        kind = int(torch.randint(0, 3, (1,), generator=g))
        if kind == 0:  # tenths: ties everywhere, values exactly at the thresholds
            matrices.append(torch.randint(0, 11, shape, generator=g) / 10)
        elif kind == 1:
            matrices.append(torch.rand(shape, generator=g))
        else:  # any finite number is legal: a quality score need not be an IoU
            matrices.append(torch.randint(-4, 8, shape, generator=g) / 4)
    return matrices


def test_match_batch_equals_call_image_by_image():
    """The fast batched kernel gives exactly what the readable ``__call__`` gives."""
    g = torch.Generator().manual_seed(0)
    settings = list(itertools.product(CASES, [False, True], [torch.float32, torch.float64]))
    checked = 0
    for trial in range(240):
        (high, low), low_quality, dtype = settings[trial % len(settings)]
        num_anchors = trial % 13  # A = 0 included
        matrices = [m.to(dtype) for m in random_batch(g, num_anchors)]
        matcher = Matcher(high, low, low_quality)
        batch = matcher.match_batch(matrices)
        assert batch.dtype == torch.int64
        assert batch.shape == ((len(matrices), num_anchors) if matrices else (0, 0))
        for row, iou in zip(batch, matrices, strict=True):
            assert torch.equal(row, matcher(iou))
        checked += len(matrices)
    assert checked > 400


def test_match_batch_mixed_dtypes_equal_call():
    """A float32 IoU is compared with a threshold in float32: 0.7f >= 0.7 holds."""
    matrices = [
        torch.tensor([[0.1, 0.9]], dtype=torch.float64),
        torch.tensor([[0.7, 0.2]]),
    ]
    m = Matcher(0.7, 0.3)
    assert m(matrices[1]).tolist() == [0, -1]
    assert m.match_batch(matrices).tolist() == [[-1, 0], [0, -1]]


def test_kernel_codes_are_the_matchers():
    assert matching.BELOW_LOW_THRESHOLD == Matcher.BELOW_LOW_THRESHOLD
    assert matching.BETWEEN_THRESHOLDS == Matcher.BETWEEN_THRESHOLDS


@pytest.mark.parametrize("obj", [make_anchors, Matcher.__call__, encode_boxes, decode_boxes])
def test_shown_code_reads_whole(obj):
    """The chapters show these: a screenful, no hidden helper but the checks."""
    assert_reads_whole(obj)


def test_match_batch_empty_and_rejects_bad_input():
    m = Matcher(0.5, 0.4, True)
    assert m.match_batch([]).shape == (0, 0)
    assert m.match_batch([torch.zeros(0, 3), torch.zeros(0, 3)]).tolist() == [[-1] * 3] * 2
    assert m.match_batch([torch.zeros(2, 0)]).shape == (1, 0)
    with pytest.raises(ValueError, match="same number of columns"):
        m.match_batch([torch.zeros(1, 3), torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="match_quality_matrices"):
        m.match_batch([torch.tensor([[0.5, math.nan]])])


def test_matcher_worked_example():
    iou = torch.tensor(
        [
            [0.9, 0.45, 0.1, 0.0, 0.3],  # gt 0
            [0.2, 0.5, 0.35, 0.0, 0.3],  # gt 1
        ]
    )
    m = Matcher(0.5, 0.4)
    assert m(iou).tolist() == [0, 1, -1, -1, -1]  # anchor 1: best 0.5 (gt 1) >= high
    assert Matcher(0.6, 0.4)(iou).tolist() == [0, -2, -1, -1, -1]  # 0.5 in between
    # low quality: anchor 1 is gt 1's best (0.5): it keeps gt 1
    assert Matcher(0.6, 0.4, True)(iou).tolist() == [0, 1, -1, -1, -1]
    # both anchors tied for gt 1's best are matched back
    tied = torch.tensor([[0.9, 0.0, 0.0], [0.1, 0.3, 0.3]])
    assert Matcher(0.5, 0.4, True)(tied).tolist() == [0, 1, 1]
    assert Matcher(0.5, 0.4, False)(tied).tolist() == [0, -1, -1]


def test_matcher_values_exactly_at_thresholds():
    iou = torch.tensor([[0.4, 0.5, 0.39999, 0.49999]])
    assert Matcher(0.5, 0.4)(iou).tolist() == [-2, 0, -1, -2]


def test_matcher_empty_inputs():
    no_gt = Matcher(0.5, 0.4)(torch.zeros(0, 7))
    assert no_gt.tolist() == [-1] * 7 and no_gt.dtype == torch.int64
    no_anchors = Matcher(0.5, 0.4, True)(torch.zeros(3, 0))
    assert no_anchors.shape == (0,) and no_anchors.dtype == torch.int64
    assert Matcher(0.5, 0.4)(torch.zeros(0, 0)).shape == (0,)
    with pytest.raises(ValueError):  # torchvision raises; detlearn defines the result
        TvMatcher(0.5, 0.4)(torch.zeros(0, 7))


def test_matcher_rejects_bad_input():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.4, 0.5)
    with pytest.raises(ValueError, match="high_threshold"):
        Matcher(math.nan, 0.5)
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.5, -0.1)
    m = Matcher(0.5, 0.4)
    for bad in (torch.zeros(3), torch.zeros(2, 3, 4), torch.tensor([[0.5, math.nan]])):
        with pytest.raises(ValueError, match="match_quality_matrix"):
            m(bad)


# --- CUDA ---------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    def test_anchors_and_matching_on_cuda(self):
        a_cpu = make_anchors((4, 5), 8, [16, 32], [0.5, 1, 2])
        a_gpu = make_anchors((4, 5), 8, [16, 32], [0.5, 1, 2], device="cuda")
        assert a_gpu.device.type == "cuda"
        torch.testing.assert_close(a_gpu.cpu(), a_cpu)
        gt = a_cpu[::7] + 1.5
        anchors = a_cpu[: len(gt)]
        d_cpu = encode_boxes(gt, anchors, (10, 10, 5, 5))
        d_gpu = encode_boxes(gt.cuda(), anchors.cuda(), (10, 10, 5, 5))
        torch.testing.assert_close(d_gpu.cpu(), d_cpu)
        torch.testing.assert_close(
            decode_boxes(d_gpu, anchors.cuda(), (10, 10, 5, 5)).cpu(),
            decode_boxes(d_cpu, anchors, (10, 10, 5, 5)),
        )
        iou = torch.rand(5, 40, generator=torch.Generator().manual_seed(0))
        m = Matcher(0.5, 0.4, True)
        assert torch.equal(m(iou.cuda()).cpu(), m(iou))
