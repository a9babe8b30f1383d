"""detlearn.losses against torch / torchvision: values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import as_boxes, assert_reads_whole, box_lists

from detlearn import losses as L

REDUCTIONS = ["none", "mean", "sum"]
BOX_LOSSES = {
    "generalized_box_iou_loss": (
        L.generalized_box_iou_loss,
        tvo.generalized_box_iou_loss,
    ),
    "distance_box_iou_loss": (L.distance_box_iou_loss, tvo.distance_box_iou_loss),
    "complete_box_iou_loss": (L.complete_box_iou_loss, tvo.complete_box_iou_loss),
}


def value_and_grads(fn, *tensors, **kwargs):
    """The loss and the gradients of its sum with respect to each input."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves, **kwargs)
    grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return out.detach(), grads


def assert_same_value_and_grads(ours, ref):
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=1e-12)
    for g_ours, g_ref in zip(ours[1], ref[1], strict=True):
        if g_ref is None:
            assert g_ours is None or not g_ours.any()
        else:
            torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


@st.composite
def tensor_pairs(draw, max_size: int = 12):
    shape = draw(st.sampled_from([(0,), (7,), (3, 4), (2, 3, 5)]))
    n = math.prod(shape)
    value = st.floats(-6, 6, allow_nan=False)
    a = draw(st.lists(value, min_size=n, max_size=n))
    b = draw(st.lists(value, min_size=n, max_size=n))
    a, b = (torch.tensor(x, dtype=torch.float64).reshape(shape) for x in (a, b))
    if draw(st.booleans()):  # some exact hits: z = 0 and z = beta
        b = torch.where(torch.arange(n).reshape(shape) % 3 == 0, a, b)
    return a, b


# --- smooth L1 and focal ------------------------------------------------------


@given(pair=tensor_pairs())
def test_smooth_l1_equals_torch(pair):
    a, b = pair
    for beta in (0.0, 0.5, 1.0, 2.0):
        for reduction in REDUCTIONS:
            kwargs = dict(beta=beta, reduction=reduction)
            ours = value_and_grads(L.smooth_l1_loss, a, b, **kwargs)
            if a.numel() == 0 and reduction == "mean":  # torch gives NaN; detlearn 0
                assert ours[0].item() == 0.0
                continue
            assert_same_value_and_grads(ours, value_and_grads(F.smooth_l1_loss, a, b, **kwargs))


def test_smooth_l1_at_beta_boundary():
    a = torch.tensor([0.0, 1.0, -1.0, 3.0], dtype=torch.float64)
    b = torch.zeros(4, dtype=torch.float64)
    ours = value_and_grads(L.smooth_l1_loss, a, b, beta=1.0, reduction="none")
    ref = value_and_grads(F.smooth_l1_loss, a, b, beta=1.0, reduction="none")
    assert_same_value_and_grads(ours, ref)
    assert ours[0].tolist() == [0.0, 0.5, 0.5, 2.5]


@settings(max_examples=60)
@given(
    pair=tensor_pairs(),
    soft=st.booleans(),
    alpha=st.sampled_from([0.25, 0.0, 1.0, -1]),
    gamma=st.sampled_from([0, 2, 1.5]),
)
def test_sigmoid_focal_loss_equals_torchvision(pair, soft, alpha, gamma):
    logits, b = pair
    targets = torch.sigmoid(b) if soft else (b > 0).to(b.dtype)
    for reduction in REDUCTIONS:
        kwargs = dict(alpha=alpha, gamma=gamma, reduction=reduction)
        ours = value_and_grads(L.sigmoid_focal_loss, logits, targets, **kwargs)
        if logits.numel() == 0 and reduction == "mean":  # torch's mean gives NaN
            assert ours[0].item() == 0.0
            continue
        ref = value_and_grads(tvo.sigmoid_focal_loss, logits, targets, **kwargs)
        assert_same_value_and_grads(ours, ref)


def test_focal_loss_down_weights_easy_examples():
    logits = torch.tensor([4.0, 0.0])  # an easy positive, an uncertain one
    targets = torch.ones(2)
    fl = L.sigmoid_focal_loss(logits, targets, alpha=-1, gamma=2)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    ratio = fl / ce
    assert ratio[0] < 1e-3 and ratio[1] == pytest.approx(0.25)


# --- box losses ---------------------------------------------------------------


@st.composite
def paired_boxes(draw, positive: bool = True):
    """Equal-length box lists; with ``positive`` every box has w, h > 0 (torchvision is
    NaN-free there)."""
    rows1 = draw(box_lists(max_size=12))
    rows2 = draw(box_lists(max_size=len(rows1)))
    rows2 = (rows2 + rows1)[: len(rows1)]  # pad with copies (identical pairs)
    b1, b2 = as_boxes(rows1, torch.float64), as_boxes(rows2, torch.float64)
    if positive:
        b1[:, 2:] += 0.5
        b2[:, 2:] += 0.25
    return b1, b2


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@given(pair=paired_boxes())
def test_box_losses_equal_torchvision(name, pair):
    ours_fn, ref_fn = BOX_LOSSES[name]
    b1, b2 = pair
    for reduction in REDUCTIONS:
        ours = value_and_grads(ours_fn, b1, b2, reduction=reduction)
        ref = value_and_grads(ref_fn, b1, b2, reduction=reduction)
        assert_same_value_and_grads(ours, ref)


@pytest.mark.parametrize("name", list(BOX_LOSSES))
def test_box_losses_on_hand_made_pairs(name):
    """Identical, touching, disjoint, nested pairs and a single box [4];
    gradients too."""
    ours_fn, ref_fn = BOX_LOSSES[name]
    b1 = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 3, 9]],
        dtype=torch.float64,
    )
    b2 = torch.tensor(
        [
            [0, 0, 10, 10],
            [10, 0, 20, 10],
            [30, 40, 35, 45],
            [2, 2, 5, 5],
            [0, 0, 10, 10],
        ],
        dtype=torch.float64,
    )
    ours = value_and_grads(ours_fn, b1, b2)
    assert_same_value_and_grads(ours, value_and_grads(ref_fn, b1, b2))
    assert ours[0][0].item() == pytest.approx(0.0, abs=1e-6)  # identical boxes
    assert (ours[0][1:] > 0).all()
    single = value_and_grads(ours_fn, b1[4], b2[4])
    assert_same_value_and_grads(single, value_and_grads(ref_fn, b1[4], b2[4]))


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_losses_empty(name, dtype):
    ours_fn, ref_fn = BOX_LOSSES[name]
    empty = torch.zeros(0, 4, dtype=dtype, requires_grad=True)
    assert ours_fn(empty, empty).shape == (0,)
    for reduction in ("mean", "sum"):
        out = ours_fn(empty, empty, reduction=reduction)
        assert out.shape == () and out.item() == 0.0 and out.dtype == dtype
        assert out.item() == ref_fn(empty, empty, reduction=reduction).item()
        out.backward()  # the graph is kept


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@given(pair=paired_boxes(positive=False))
def test_box_losses_zero_area_never_nan(name, pair):
    ours_fn, ref_fn = BOX_LOSSES[name]
    b1, b2 = pair
    loss, grads = value_and_grads(ours_fn, b1, b2)
    assert not torch.isnan(loss).any() and not any(torch.isnan(g).any() for g in grads)
    ref = ref_fn(b1, b2)
    defined = ~torch.isnan(ref)  # torchvision's CIoU is NaN for point boxes
    torch.testing.assert_close(loss[defined], ref[defined], rtol=1e-12, atol=1e-12)


def test_box_losses_keep_float32():
    b1 = torch.tensor([[0.0, 0, 4, 4]])
    b2 = torch.tensor([[1.0, 1, 5, 6]])
    for name, (ours_fn, ref_fn) in BOX_LOSSES.items():
        out = ours_fn(b1, b2)
        assert out.dtype == torch.float32, name
        torch.testing.assert_close(out, ref_fn(b1, b2), rtol=0, atol=0)


# --- multitask ----------------------------------------------------------------


def test_multitask_loss():
    cls, box = (
        torch.tensor(0.7, requires_grad=True),
        torch.tensor(0.2, requires_grad=True),
    )
    total = L.multitask_loss(cls, box, lam=2.5)
    assert total.item() == pytest.approx(0.7 + 2.5 * 0.2)
    total.backward()
    assert cls.grad.item() == 1.0 and box.grad.item() == 2.5
    assert L.multitask_loss(cls, box).item() == pytest.approx(0.9)
    with pytest.raises(ValueError, match="lam"):
        L.multitask_loss(cls, box, lam=-1.0)
    with pytest.raises(ValueError, match="cls_loss"):
        L.multitask_loss(0.5, box)
    with pytest.raises(ValueError, match="box_loss"):
        L.multitask_loss(cls, torch.tensor(math.nan))


# --- bad input ----------------------------------------------------------------

X = torch.zeros(3, 2)
BOXES = torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2]])


@pytest.mark.parametrize("fn", [L.smooth_l1_loss, L.sigmoid_focal_loss])
def test_elementwise_losses_reject_bad_input(fn):
    names = fn.__code__.co_varnames[:2]
    with pytest.raises(ValueError, match="reduction"):
        fn(X, X, reduction="avg")
    with pytest.raises(ValueError, match="same shape"):
        fn(X, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=names[0]):
        fn(torch.full((3, 2), math.nan), X)
    with pytest.raises(ValueError, match=names[1]):
        fn(X, torch.full((3, 2), math.inf))
    with pytest.raises(ValueError, match=names[0]):
        fn(torch.zeros(3, 2, dtype=torch.int64), X)


def test_loss_parameters_are_checked():
    with pytest.raises(ValueError, match="beta"):
        L.smooth_l1_loss(X, X, beta=-1.0)
    for alpha in (1.5, -0.5, math.nan):
        with pytest.raises(ValueError, match="alpha"):
            L.sigmoid_focal_loss(X, X, alpha=alpha)
    with pytest.raises(ValueError, match="gamma"):
        L.sigmoid_focal_loss(X, X, gamma=-1.0)


@pytest.mark.parametrize("name", list(BOX_LOSSES))
@pytest.mark.parametrize(
    "bad, what",
    [
        (torch.zeros(2, 5), "shape"),
        (torch.zeros(1, 2, 4), "shape"),
        (torch.tensor([[0.0, 0, 1, 1], [3, 0, 2, 2]]), "x2 >= x1"),
        (torch.tensor([[0.0, 0, 1, 1], [0, 0, math.nan, 2]]), "finite"),
        (torch.tensor([[0.0, 0, 1, 1]]), "same shape"),
    ],
    ids=["last dim", "rank 3", "x2 < x1", "nan", "length"],
)
def test_box_losses_reject_bad_input(name, bad, what):
    fn = BOX_LOSSES[name][0]
    with pytest.raises(ValueError, match=f"boxes1.*{what}|{what}.*boxes1|boxes1 and boxes2"):
        fn(bad, BOXES)
    with pytest.raises(ValueError, match="boxes2"):
        fn(BOXES, bad)
    with pytest.raises(ValueError, match="reduction"):
        fn(BOXES, BOXES, reduction="max")
    with pytest.raises(ValueError, match="eps"):
        fn(BOXES, BOXES, eps=0.0)


# --- CUDA ---------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    def test_losses_match_cpu(self):
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(50, 2, generator=g) * 50
        b1 = torch.cat((xy, xy + 1 + torch.rand(50, 2, generator=g) * 20), 1)
        b2 = b1 + torch.randn(50, 4, generator=g)
        b2[:, 2:] = torch.maximum(b2[:, 2:], b2[:, :2] + 0.5)
        for name, (fn, _) in BOX_LOSSES.items():
            for reduction in REDUCTIONS:
                out = fn(b1.cuda(), b2.cuda(), reduction=reduction)
                assert out.device.type == "cuda"
                torch.testing.assert_close(out.cpu(), fn(b1, b2, reduction=reduction), msg=name)
        x, y = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
        torch.testing.assert_close(
            L.smooth_l1_loss(x.cuda(), y.cuda()).cpu(), L.smooth_l1_loss(x, y)
        )
        t = (y > 0).float()
        torch.testing.assert_close(
            L.sigmoid_focal_loss(x.cuda(), t.cuda()).cpu(), L.sigmoid_focal_loss(x, t)
        )


# --- hard negative mining -----------------------------------------------------


def hard_negatives_by_definition(loss, positive, negative, ratio):
    """The rule written out image by image: all positives, then the hardest
    negatives."""
    keep = positive.clone()
    for b in range(loss.shape[0]):
        wanted = ratio * int(positive[b].sum())
        candidates = [i for i in range(loss.shape[1]) if negative[b, i]]
        candidates.sort(key=lambda i: (-float(loss[b, i]), i))  # hardest first, ties in order
        for i in candidates[:wanted]:
            keep[b, i] = True
    return keep


@settings(deadline=None, max_examples=60)
@given(
    st.integers(1, 4),
    st.integers(0, 40),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_hard_negative_mask_equals_its_definition(batch, anchors, ratio, seed, with_ignored):
    generator = torch.Generator().manual_seed(seed)
    # few distinct values, so ties happen
    loss = torch.randint(0, 5, (batch, anchors), generator=generator).float()
    positive = torch.rand(batch, anchors, generator=generator) < 0.15
    negative = ~positive
    if with_ignored:
        negative &= torch.rand(batch, anchors, generator=generator) < 0.8
    ours = L.hard_negative_mask(loss, positive, negative, ratio)
    assert torch.equal(ours, hard_negatives_by_definition(loss, positive, negative, ratio))


def test_hard_negative_mask_by_hand():
    loss = torch.tensor([[0.1, 2.0, 0.5, 3.0, 0.2, 0.9], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    positive = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    keep = L.hard_negative_mask(loss, positive, ratio=3)
    # image 0: the positive and the three largest negative losses (3.0, 2.0, 0.9);
    # image 1 has no positive, so no negative either
    assert keep.tolist() == [[True, True, False, True, False, True], [False] * 6]
    assert L.hard_negative_mask(loss[:, :0], positive[:, :0]).shape == (2, 0)


def test_hard_negative_mask_rejects_bad_input():
    loss, positive = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="loss"):
        L.hard_negative_mask(torch.zeros(6), positive.flatten())
    with pytest.raises(ValueError, match="positive"):
        L.hard_negative_mask(loss, positive.int())
    with pytest.raises(ValueError, match="negative"):
        L.hard_negative_mask(loss, positive, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="ratio"):
        L.hard_negative_mask(loss, positive, ratio=0)


# --- readable code ------------------------------------------------------------

SHOWN = [
    L.smooth_l1_loss,
    L.sigmoid_focal_loss,
    L.reduce_loss,
    L.paired_box_iou,
    L.generalized_box_iou_loss,
    L.distance_box_iou_loss,
    L.complete_box_iou_loss,
    L.hard_negative_mask,
    L.multitask_loss,
]


@pytest.mark.parametrize("obj", SHOWN, ids=lambda f: f.__name__)
def test_shown_code_reads_whole(obj):
    """Chapters 4 and 8 show these: a screenful, no hidden helper but the checks."""
    assert_reads_whole(obj)
