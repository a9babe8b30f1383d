"""detlearn.roi: roi_align and roi_pool equal torchvision's, by hand and over
hypothesis' shapes, scales, sampling ratios and box forms; gradients; bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given
from hypothesis import strategies as st
from strategies import assert_reads_whole

from detlearn.roi import bin_edges, roi_align, roi_pool, sampling_weights


@st.composite
def roi_problems(draw):
    """Features, [K, 5] RoIs (some outside the map, some of zero size) and settings."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 1 / 3, 2.0, 0.37]))
    seed = draw(st.integers(0, 2**16))
    k = draw(st.integers(0, 6))
    rows = []
    for _ in range(k):
        b = draw(st.integers(0, n - 1))
        coord = st.one_of(
            st.integers(-4, 30).map(float), st.floats(-8, 40, allow_nan=False, width=32)
        )
        x1, y1 = draw(coord), draw(coord)
        bw, bh = draw(st.floats(0, 30, width=32)), draw(st.floats(0, 30, width=32))
        rows.append([float(b), x1, y1, x1 + bw, y1 + bh])
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, c, h, w, generator=g)
    rois = torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)
    output_size = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    return features, rois, output_size, scale


@given(
    problem=roi_problems(),
    sampling_ratio=st.sampled_from([-1, 0, 1, 2, 3]),
    aligned=st.booleans(),
)
def test_roi_align_equals_torchvision(problem, sampling_ratio, aligned):
    features, rois, size, scale = problem
    ref = tvo.roi_align(features, rois, size, scale, sampling_ratio, aligned)
    ours = roi_align(features, rois, size, scale, sampling_ratio, aligned)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@given(problem=roi_problems())
def test_roi_pool_equals_torchvision(problem):
    features, rois, size, scale = problem
    ref = tvo.roi_pool(features, rois, size, scale)
    assert torch.equal(roi_pool(features, rois, size, scale), ref)


@pytest.mark.parametrize("fn", [roi_align, roi_pool])
def test_list_of_boxes_equals_k5_form(fn):
    features = torch.randn(3, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    per_image = [
        torch.tensor([[1.0, 1.5, 6.0, 7.0], [0.0, 0.0, 9.0, 9.0]]),
        torch.zeros(0, 4),
        torch.tensor([[2.2, 3.1, 4.9, 8.4]]),
    ]
    rois = torch.tensor([[0, 1.0, 1.5, 6.0, 7.0], [0, 0.0, 0.0, 9.0, 9.0], [2, 2.2, 3.1, 4.9, 8.4]])
    ours = fn(features, per_image, 3)
    assert torch.equal(ours, fn(features, rois, 3))
    reference = tvo.roi_align if fn is roi_align else tvo.roi_pool
    torch.testing.assert_close(ours, reference(features, per_image, 3))


def test_roi_align_worked_example():
    """A 4x4 map whose value is 10 * row + column: bilinear sampling is exact on it.

    With ``aligned=True`` the box (1, 1)-(3, 3) in pixels covers cell centres 0.5 to
    2.5, so its 1x1 bin averages the sample at (y, x) = (1.5, 1.5): 15 + 1.5.
    """
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    features = (10 * rows + cols)[None, None]
    box = [torch.tensor([[1.0, 1.0, 3.0, 3.0]])]
    assert roi_align(features, box, 1, aligned=True).item() == pytest.approx(16.5)
    # 2x2 bins of the same box, one sample each at 1.0 and 2.0 along each axis
    out = roi_align(features, box, 2, sampling_ratio=1, aligned=True)[0, 0]
    assert out.tolist() == [[11.0, 12.0], [21.0, 22.0]]
    # RoIPool rounds the box to cells 1..3, three cells split into [1, 3) and [2, 4)
    assert roi_pool(features, box, 2)[0, 0].tolist() == [[22.0, 23.0], [32.0, 33.0]]


def test_sampling_weights_by_hand():
    """One bin from 0.5 to 2.5 with two samples (at 1.0 and 2.0): half on each cell."""
    weights = sampling_weights(torch.tensor([0.5]), torch.tensor([2.5]), 1, 4, 2)
    assert weights.tolist() == [[[0.0, 0.5, 0.5, 0.0]]]
    # samples at -2.0 (beyond a cell outside: weighs nothing) and -1.0 (the edge)
    outside = sampling_weights(torch.tensor([-2.5]), torch.tensor([-0.5]), 2, 4, 1)
    assert outside.tolist() == [[[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]]


def test_bin_edges_by_hand():
    # cells 1..3 (three cells) in two bins: floor(0 * 1.5) = 0, ceil(1.5) = 2, ...
    assert bin_edges(1, 3, 2, 4) == [(1, 3), (2, 4)]
    assert bin_edges(-2, 9, 3, 5) == [(0, 2), (2, 5), (5, 5)]  # clipped: last is empty


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_gradcheck(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 1.2, 4.7, 5.1], [1, -1.5, 2.0, 3.0, 9.0], [1, 2.0, 2.0, 2.5, 2.2]],
        dtype=torch.float64,
    )

    def fn(x):
        return roi_align(x, rois, (3, 2), 0.8, sampling_ratio, aligned)

    assert torch.autograd.gradcheck(fn, (features,))
    # and the gradient is torchvision's
    ours = torch.autograd.grad(fn(features).square().sum(), features)[0]
    ref_out = tvo.roi_align(features, rois, (3, 2), 0.8, sampling_ratio, aligned)
    ref = torch.autograd.grad(ref_out.square().sum(), features)[0]
    torch.testing.assert_close(ours, ref)


def test_roi_pool_gradcheck():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 1.0, 4.0, 5.0], [0, 2.0, 0.0, 5.0, 3.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: roi_pool(x, rois, 2), (features,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [roi_align, roi_pool])
def test_empty_boxes(fn, dtype):
    features = torch.randn(2, 3, 5, 5, dtype=dtype)
    for boxes in (torch.zeros(0, 5, dtype=dtype), [], [torch.zeros(0, 4)] * 2):
        out = fn(features, boxes, (4, 2))
        assert out.shape == (0, 3, 4, 2) and out.dtype == dtype


def test_keeps_dtype_and_accepts_integer_boxes():
    features = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    out = roi_align(features, torch.tensor([[0, 1, 1, 4, 4]]), 2)
    assert out.dtype == torch.float64
    ref = tvo.roi_align(features, torch.tensor([[0, 1.0, 1, 4, 4]], dtype=torch.float64), 2)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("fn", [roi_align, roi_pool])
def test_bad_input_raises(fn):
    features = torch.randn(2, 3, 5, 5)
    good = torch.tensor([[0, 1.0, 1.0, 3.0, 3.0]])
    with pytest.raises(ValueError, match="input"):
        fn(torch.randn(3, 5, 5), good, 2)
    with pytest.raises(ValueError, match="input"):
        fn(torch.zeros(2, 3, 5, 5, dtype=torch.int64), good, 2)
    with pytest.raises(ValueError, match=r"boxes.*\[K, 5\]"):
        fn(features, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        fn(features, [torch.zeros(3, 5)], 2)
    with pytest.raises(ValueError, match="boxes"):
        fn(features, "boxes", 2)
    with pytest.raises(ValueError, match="batch indices"):
        fn(features, torch.tensor([[2, 1.0, 1.0, 3.0, 3.0]]), 2)
    with pytest.raises(ValueError, match="batch indices"):
        fn(features, torch.tensor([[-1, 1.0, 1.0, 3.0, 3.0]]), 2)
    with pytest.raises(ValueError, match="batch indices"):
        fn(features, torch.tensor([[0.5, 1.0, 1.0, 3.0, 3.0]]), 2)
    with pytest.raises(ValueError, match="3 images"):
        fn(features, [torch.zeros(0, 4)] * 3, 2)
    with pytest.raises(ValueError, match="inverted"):
        fn(features, torch.tensor([[0, 3.0, 1.0, 1.0, 3.0]]), 2)
    with pytest.raises(ValueError, match="finite"):
        fn(features, torch.tensor([[0, 1.0, float("nan"), 3.0, 3.0]]), 2)
    for size in (0, -1, (2, 0), (2,), 2.5, (2, -3)):
        with pytest.raises(ValueError, match="output_size"):
            fn(features, good, size)
    for scale in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="spatial_scale"):
            fn(features, good, 2, scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_roi_align_on_cuda_equals_cpu():
    features = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 0.5, 1.0, 6.0, 7.0], [1, 2.0, 2.0, 5.5, 4.0]])
    cpu = roi_align(features, rois, 3, 0.5, -1, True)
    gpu = roi_align(features.cuda(), rois.cuda(), 3, 0.5, -1, True)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


@pytest.mark.parametrize("obj", [roi_align, roi_pool, sampling_weights, bin_edges])
def test_shown_code_reads_whole(obj):
    assert_reads_whole(obj)
