"""detlearn.models: configs, shapes and dtypes, losses, training vs eval, empty
images, overfitting, and what a head that predicts the truth gives back."""

import dataclasses

import pytest
import torch

from detlearn.anchors import Matcher, encode_boxes
from detlearn.boxes import box_iou
from detlearn.data import ShapesDataset
from detlearn.models import (
    Backbone,
    Classifier,
    ClassifierConfig,
    DetectorConfig,
    Localizer,
    LocalizerConfig,
    TinyDetector,
)

SIZE = 64  # small images keep the tests fast


def batch(task, n=4, seed=0, **kwargs):
    dataset = ShapesDataset(n, task=task, image_size=SIZE, seed=seed, **kwargs)
    return dataset.materialize()


def empty_target():
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def overfit(model, images, targets, steps, lr=1e-2):
    """Train on one batch; returns the first and last total loss."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], min(losses[-5:])


# -- backbone --------------------------------------------------------------------------


def test_backbone_returns_maps_at_the_requested_strides():
    backbone = Backbone((8, 16, 24, 32, 40), out_strides=(8, 16))  # stage k has stride 2**k
    features = backbone(torch.rand(2, 3, 64, 40))
    assert [f.shape for f in features] == [(2, 32, 8, 5), (2, 40, 4, 2)]
    assert backbone.out_channels == (32, 40)
    assert Backbone.feature_size((64, 40), 16) == (4, 2)


@pytest.mark.parametrize("strides", [(3,), (16, 8), ()])
def test_backbone_rejects_bad_strides(strides):
    with pytest.raises(ValueError, match="out_strides"):
        Backbone((8, 16, 24, 32, 40), out_strides=strides)


# -- classifier ------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_classifier_outputs(pool):
    torch.manual_seed(0)
    model = Classifier(3, pool=pool)
    images, targets = batch("classify")
    assert model.logits(images).shape == (4, 3)
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_cls"} and losses["loss_cls"].dim() == 0
    outputs = model.eval()(list(images))
    assert len(outputs) == 4
    for out in outputs:
        assert out["labels"].shape == (1,) and out["labels"].dtype == torch.int64
        assert out["scores"].shape == (1,) and out["scores"].dtype == torch.float32
        assert 0 < out["scores"].item() <= 1


def test_classifier_overfits_one_batch():
    torch.manual_seed(0)
    images, targets = batch("classify", n=8)
    first, last = overfit(Classifier(3), images, targets, steps=40)
    assert last < first / 10


def test_unknown_pool_raises():
    with pytest.raises(ValueError, match="pool"):
        Classifier(3, pool="median")


# -- localizer -------------------------------------------------------------------------


@pytest.mark.parametrize("box_loss", ["l2", "smooth_l1", "giou"])
def test_localizer_outputs(box_loss):
    torch.manual_seed(0)
    model = Localizer(3, image_size=SIZE, box_loss=box_loss, lam=2.0)
    images, targets = batch("localize")
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_cls", "loss_box"}
    loss_cls, loss_box = model.compute_loss(*model.predict_raw(images), targets)
    assert torch.allclose(losses["loss_box"], 2.0 * loss_box)
    outputs = model.eval()(images)
    for out in outputs:
        assert out["boxes"].shape == (1, 4) and out["boxes"].dtype == torch.float32
        assert out["labels"].shape == (1,) and out["labels"].dtype == torch.int64
        assert out["scores"].shape == (1,) and out["scores"].dtype == torch.float32
        x1, y1, x2, y2 = out["boxes"][0]
        assert x2 >= x1 and y2 >= y1


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_localizer_overfits_one_batch(box_loss):
    torch.manual_seed(0)
    images, targets = batch("localize", n=8)
    model = Localizer(3, image_size=SIZE, box_loss=box_loss)
    first, last = overfit(model, images, targets, steps=200)
    assert last < first / 10


def test_localizer_rejects_other_image_sizes_and_losses():
    with pytest.raises(ValueError, match="64 x 64"):
        Localizer(3, image_size=SIZE).eval()(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="box_loss"):
        Localizer(3, box_loss="l1")


# -- detector --------------------------------------------------------------------------


def test_detector_anchors_match_the_heads():
    model = TinyDetector(3)
    anchors = model.anchors_for((SIZE, SIZE))
    logits, deltas = model.predict_raw(torch.rand(2, 3, SIZE, SIZE))
    for level_anchors, level_logits, level_deltas in zip(anchors, logits, deltas, strict=True):
        assert level_logits.shape == (2, len(level_anchors), 3)
        assert level_deltas.shape == (2, len(level_anchors), 4)
    # strides 4, 8 and 16: 16 x 16, 8 x 8 and 4 x 4 locations, 2 sizes each
    assert [len(a) for a in anchors] == [16 * 16 * 2, 8 * 8 * 2, 4 * 4 * 2]


def test_detector_assign():
    model = TinyDetector(3)
    anchors = torch.cat(model.anchors_for((SIZE, SIZE)))
    _, targets = batch("detect", n=3)
    matched = model.assign(anchors, [*targets, empty_target()])
    assert matched.shape == (4, len(anchors)) and matched.dtype == torch.int64
    for t, m in zip(targets, matched[:3], strict=True):
        assert m.min() >= Matcher.BETWEEN_THRESHOLDS and m.max() < len(t["boxes"])
        assert set(m[m >= 0].tolist()) == set(range(len(t["boxes"])))  # every object is matched
    assert (matched[3] == Matcher.BELOW_LOW_THRESHOLD).all()


@pytest.mark.parametrize(
    ("cls_loss", "box_loss"),
    [("focal", "giou"), ("ce", "smooth_l1"), ("hard_negatives", "smooth_l1")],
)
def test_detector_train_and_eval_outputs(cls_loss, box_loss):
    torch.manual_seed(0)
    model = TinyDetector(3, cls_loss=cls_loss, box_loss=box_loss, score_thresh=0.0)
    images, targets = batch("detect")
    losses = model.train()(list(images), targets)
    assert set(losses) == {"loss_cls", "loss_box"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    outputs = model.eval()(images)
    assert len(outputs) == 4
    for out in outputs:
        n = len(out["boxes"])
        assert 0 < n <= model.detections_per_img
        assert out["boxes"].shape == (n, 4) and out["boxes"].dtype == torch.float32
        assert out["labels"].shape == (n,) and out["labels"].dtype == torch.int64
        assert out["scores"].shape == (n,) and out["scores"].dtype == torch.float32
        assert (out["boxes"] >= 0).all() and (out["boxes"] <= SIZE).all()
        assert (out["scores"][:-1] >= out["scores"][1:]).all()
        assert out["labels"].min() >= 0 and out["labels"].max() < 3


def test_detector_list_and_tensor_inputs_agree():
    model = TinyDetector(3, score_thresh=0.0).eval()
    images, _ = batch("detect", n=2)
    for a, b in zip(model(images), model(list(images)), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("boxes", "labels", "scores"))


def test_detector_trains_on_images_without_objects():
    torch.manual_seed(0)
    model = TinyDetector(3).train()
    images, targets = batch("detect", n=2)
    losses = model(images, [empty_target(), targets[1]])
    sum(losses.values()).backward()
    all_empty = model(images, [empty_target(), empty_target()])
    assert all_empty["loss_box"] == 0 and torch.isfinite(all_empty["loss_cls"])
    sum(all_empty.values()).backward()  # gradients reach the class head only
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_detector_overfits_one_batch():
    torch.manual_seed(0)
    images, targets = batch("detect", n=4)
    first, last = overfit(TinyDetector(3), images, targets, steps=200, lr=3e-3)
    assert last < first / 10


def test_detector_overfits_one_batch_with_hard_negative_mining():
    torch.manual_seed(0)
    images, targets = batch("detect", n=2)
    model = TinyDetector(3, cls_loss="hard_negatives")
    first, last = overfit(model, images, targets, steps=40, lr=3e-3)
    assert torch.isfinite(torch.tensor([first, last])).all()
    assert last < first / 10


def hand_built_batch(extra_background=0):
    """One image, two objects and anchors whose roles are known by hand.

    Anchors 0-3 are foreground (IoU 1, 0.818, 1 and 0.588 with an object), anchor 4
    is ignored (IoU 0.455), anchor 5 and the ``extra_background`` ones are
    background (IoU 0). The extra anchors get logits of -100: no class loss.
    """
    boxes = torch.tensor([[0.0, 0, 20, 20], [30, 30, 50, 50]])
    target = {"boxes": boxes, "labels": torch.tensor([2, 0])}
    anchors = torch.tensor(
        [[0.0, 0, 20, 20], [2, 0, 22, 20], [30, 30, 50, 50], [0, 0, 20, 34]]
        + [[0, 0, 20, 44], [60, 60, 80, 80]]
        + [[60.0 + i, 60, 80 + i, 80] for i in range(extra_background)]
    )
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, 3, generator=g)
    logits = torch.cat([logits, torch.full((1, extra_background, 3), -100.0)], dim=1)
    deltas = torch.randn(1, 6, 4, generator=g)
    deltas = torch.cat([deltas, torch.ones(1, extra_background, 4)], dim=1)
    return logits, deltas, anchors, [target]


def test_detector_loss_is_a_sum_over_foreground_divided_by_its_count():
    model = TinyDetector(3)
    logits, deltas, anchors, targets = hand_built_batch()
    losses = model.compute_loss(logits, deltas, anchors, targets)

    # by hand: anchors 0, 1, 3 predict object 0 (class 2), anchor 2 object 1 (class 0)
    matched_box = torch.tensor([0, 0, 1, 0])
    y = torch.zeros(6, 3)
    y[[0, 1, 3], 2] = 1.0
    y[2, 0] = 1.0
    counted = [0, 1, 2, 3, 5]  # all but the ignored anchor 4
    p = torch.sigmoid(logits[0, counted])
    y = y[counted]
    ce = -(y * p.log() + (1 - y) * (1 - p).log())
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = 0.25 * y + 0.75 * (1 - y)
    focal = (alpha_t * (1 - p_t) ** 2 * ce).sum()

    encoded = encode_boxes(targets[0]["boxes"][matched_box], anchors[:4], model.box_weights)
    diff, beta = (deltas[0, :4] - encoded).abs(), 1.0 / 9.0
    smooth_l1 = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta).sum()

    assert torch.allclose(losses["loss_cls"], focal / 4, rtol=1e-5, atol=1e-7)
    assert torch.allclose(losses["loss_box"], smooth_l1 / 4, rtol=1e-5, atol=1e-7)

    # background-only anchors change neither loss (a division by the anchors would)
    more = model.compute_loss(*hand_built_batch(extra_background=1000))
    assert torch.allclose(more["loss_cls"], losses["loss_cls"], rtol=1e-6, atol=0)
    assert torch.allclose(more["loss_box"], losses["loss_box"], rtol=1e-6, atol=0)


def test_detector_hard_negative_loss_equals_its_definition():
    torch.manual_seed(0)
    model = TinyDetector(3, cls_loss="hard_negatives")
    anchors = torch.cat(model.anchors_for((SIZE, SIZE)))
    _, targets = batch("detect", n=2)
    targets = [*targets, empty_target()]  # an image without objects keeps no anchor
    logits = torch.randn(3, len(anchors), 3)
    deltas = torch.randn(3, len(anchors), 4)
    loss = model.compute_loss(logits, deltas, anchors, targets)["loss_cls"]

    matched = Matcher(0.5, 0.4, True).match_batch([box_iou(t["boxes"], anchors) for t in targets])
    total, positives = torch.tensor(0.0), 0
    for b in range(3):
        y = torch.zeros(len(anchors), 3)
        fg = matched[b] >= 0
        y[fg, targets[b]["labels"][matched[b][fg]]] = 1.0
        p = torch.sigmoid(logits[b])
        per_anchor = -(y * p.log() + (1 - y) * (1 - p).log()).sum(dim=1)
        background = per_anchor[matched[b] == Matcher.BELOW_LOW_THRESHOLD]
        hardest = background.sort(descending=True).values[: 3 * int(fg.sum())]
        total = total + per_anchor[fg].sum() + hardest.sum()
        positives += int(fg.sum())
    assert positives > 0
    assert torch.allclose(loss, total / positives, rtol=1e-5)
    # fewer negatives than the plain cross-entropy, which keeps every background anchor
    ce = TinyDetector(3, cls_loss="ce").compute_loss(logits, deltas, anchors, targets)
    assert loss < ce["loss_cls"]


def test_detector_detections_per_img_and_score_thresh():
    model = TinyDetector(3, score_thresh=0.0, detections_per_img=5).eval()
    assert all(len(out["boxes"]) == 5 for out in model(torch.rand(2, 3, SIZE, SIZE)))
    model = TinyDetector(3, score_thresh=0.999).eval()
    assert all(len(out["boxes"]) == 0 for out in model(torch.rand(2, 3, SIZE, SIZE)))


def test_detector_box_voting_moves_only_the_boxes():
    torch.manual_seed(0)
    plain = TinyDetector(3, score_thresh=0.0).eval()
    voting = TinyDetector(3, score_thresh=0.0, voting_thresh=0.5).eval()
    voting.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, SIZE, SIZE)
    moved = 0
    for a, b in zip(plain(images), voting(images), strict=True):
        assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["labels"], b["labels"])
        moved += int((a["boxes"] != b["boxes"]).any(dim=1).sum())
    assert moved > 0


@pytest.mark.parametrize("model", [Classifier(3), Localizer(3, image_size=SIZE), TinyDetector(3)])
def test_training_mode_needs_targets(model):
    with pytest.raises(ValueError, match="targets"):
        model.train()(torch.rand(2, 3, SIZE, SIZE))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(3, SIZE, SIZE), r"images must be \[B, 3, H, W\]"),
        ([torch.rand(3, SIZE, SIZE), torch.rand(1, SIZE, SIZE)], r"images\[1\] must be"),
        ([], "images must hold at least one image"),
    ],
)
def test_bad_images_raise(images, message):
    with pytest.raises(ValueError, match=message):
        TinyDetector(3).eval()(images)


def test_bad_detector_arguments_raise():
    with pytest.raises(ValueError, match="cls_loss"):
        TinyDetector(3, cls_loss="hinge")
    with pytest.raises(ValueError, match="box_loss"):
        TinyDetector(3, box_loss="l2")
    with pytest.raises(ValueError, match="sizes"):
        TinyDetector(3, sizes=((16.0,),))
    with pytest.raises(ValueError, match="voting_thresh"):
        TinyDetector(3, voting_thresh=1.5)
    with pytest.raises(ValueError, match="score_thresh"):
        TinyDetector(3, score_thresh=1.5)
    with pytest.raises(ValueError, match="nms_thresh"):
        TinyDetector(3, nms_thresh=-0.1)
    with pytest.raises(ValueError, match="bg_iou_thresh"):
        TinyDetector(3, fg_iou_thresh=0.4, bg_iou_thresh=0.5)
    with pytest.raises(ValueError, match="detections_per_img"):
        TinyDetector(3, detections_per_img=0)
    with pytest.raises(ValueError, match="num_classes"):
        TinyDetector(0)


# -- configs ---------------------------------------------------------------------------


def test_detector_settings_live_in_one_frozen_config():
    settings = {"strides": [8, 16], "sizes": [[10], [30]], "nms_thresh": 0.3}
    model = TinyDetector(3, **settings)
    config = DetectorConfig(3, **settings)
    assert model.config == config == TinyDetector(config=config).config
    # lists become tuples and numbers floats, so a config read back equals it
    assert model.strides == (8, 16) and model.sizes == ((10.0,), (30.0,))
    assert model.nms_thresh == 0.3 and model.num_classes == 3
    assert model.matcher.high_threshold == model.fg_iou_thresh == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.config.nms_thresh = 0.4  # type: ignore[misc]
    model.voting_thresh = 0.7  # replaces the config by a checked copy
    assert model.config == dataclasses.replace(config, voting_thresh=0.7)
    with pytest.raises(ValueError, match="voting_thresh"):
        model.voting_thresh = 2.0
    with pytest.raises(AttributeError, match="num_classes"):
        model.num_classes = 4  # the heads were built for 3
    with pytest.raises(ValueError, match="config"):
        TinyDetector(3, config=config)
    with pytest.raises(ValueError, match="DetectorConfig"):
        TinyDetector(config=ClassifierConfig(3))


def test_classifier_and_localizer_configs():
    assert Classifier(3, pool="avg").config == ClassifierConfig(3, pool="avg")
    localizer = Localizer(3, image_size=SIZE, box_loss="l2", lam=2)
    assert localizer.config == LocalizerConfig(3, image_size=SIZE, box_loss="l2", lam=2.0)
    assert localizer.image_size == SIZE and localizer.lam == 2.0
    localizer.lam = 0.5
    assert localizer.config.lam == 0.5
    with pytest.raises(ValueError, match="pool"):
        LocalizerConfig(3, pool="median")
    with pytest.raises(ValueError, match="image_size"):
        Localizer(3, image_size=0)


def test_detector_forward_checks_the_targets():
    model = TinyDetector(3).train()
    images = torch.rand(2, 3, SIZE, SIZE)
    inverted = {
        "boxes": torch.tensor([[20.0, 20, 10, 30]]),
        "labels": torch.tensor([0]),
    }
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\]"):
        model(images, [empty_target(), inverted])
    two_labels = {
        "boxes": torch.tensor([[0.0, 0, 10, 10]]),
        "labels": torch.tensor([0, 1]),
    }
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]"):
        model(images, [two_labels, empty_target()])
    with pytest.raises(ValueError, match=r"targets\[1\] needs \['boxes', 'labels'\]"):
        model(images, [empty_target(), {"boxes": torch.zeros(0, 4)}])
    with pytest.raises(ValueError, match=r"one dict per image \(2\), got 1"):
        model(images, [empty_target()])
    with pytest.raises(ValueError, match=r"targets\[0\] must be a dict"):
        model(images, [torch.zeros(0, 4), empty_target()])


# -- behaviour -------------------------------------------------------------------------

# two images, one box per class each; far apart, not aligned with any anchor
TRUTH = [
    {
        "boxes": torch.tensor(
            [[5.3, 6.1, 17.9, 19.2], [30.4, 8.2, 52.7, 31.5], [12.6, 36.0, 40.1, 58.8]]
        ),
        "labels": torch.tensor([0, 1, 2]),
    },
    {
        "boxes": torch.tensor(
            [[40.2, 40.7, 60.9, 61.3], [3.1, 2.4, 15.5, 13.8], [20.5, 20.2, 45.0, 35.6]]
        ),
        "labels": torch.tensor([2, 0, 1]),
    },
]


def test_detector_whose_head_predicts_the_truth_returns_it(monkeypatch):
    """On each object's best anchor the head predicts the deltas that encode the
    object and a high score for its class, and a low score everywhere else:
    decode, clip and NMS give back exactly the ground truth."""
    model = TinyDetector(3).eval()
    anchors = model.anchors_for((SIZE, SIZE))
    logits = [torch.full((2, len(a), 3), -10.0) for a in anchors]  # sigmoid 5e-5
    deltas = [torch.zeros(2, len(a), 4) for a in anchors]
    level_of = torch.cat([torch.full((len(a),), level) for level, a in enumerate(anchors)])
    first_row = torch.tensor([0] + [len(a) for a in anchors]).cumsum(0)
    for b, target in enumerate(TRUTH):
        best = box_iou(target["boxes"], torch.cat(anchors)).argmax(dim=1)
        assert len(set(best.tolist())) == 3  # one anchor per object
        for box, label, n in zip(target["boxes"], target["labels"], best, strict=True):
            level = int(level_of[n])
            row = int(n - first_row[level])
            anchor = anchors[level][row]
            logits[level][b, row, label] = 10.0
            deltas[level][b, row] = encode_boxes(box[None], anchor[None], model.box_weights)[0]
    monkeypatch.setattr(model, "predict_raw", lambda images: (logits, deltas))

    outputs = model(torch.zeros(2, 3, SIZE, SIZE))
    for out, target in zip(outputs, TRUTH, strict=True):
        assert len(out["boxes"]) == 3 and (out["scores"] > 0.99).all()
        order = out["labels"].argsort()
        expected = target["labels"].argsort()
        assert torch.equal(out["labels"][order], target["labels"][expected])
        torch.testing.assert_close(
            out["boxes"][order], target["boxes"][expected], atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_detector_box_loss_vanishes_when_the_head_predicts_the_truth(box_loss):
    """Every foreground anchor of every image predicts the deltas of its own object."""
    model = TinyDetector(3, box_loss=box_loss)
    anchors = torch.cat(model.anchors_for((SIZE, SIZE)))
    logits = torch.zeros(2, len(anchors), 3)
    deltas = torch.zeros(2, len(anchors), 4)
    matched = model.assign(anchors, TRUTH)
    for b, target in enumerate(TRUTH):
        fg = matched[b] >= 0
        gt = target["boxes"][matched[b][fg]]
        deltas[b, fg] = encode_boxes(gt, anchors[fg], model.box_weights)
    losses = model.compute_loss(logits, deltas, anchors, TRUTH)
    assert losses["loss_box"] < 1e-5
    deltas[1, matched[1] >= 0] += 0.1  # the second image's anchors now miss
    assert model.compute_loss(logits, deltas, anchors, TRUTH)["loss_box"] > 1e-3


def test_trusted_skips_value_checks_only_inside_the_block():
    from detlearn import _checks
    from detlearn.boxes import box_iou

    inverted = torch.tensor([[10.0, 10.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="inverted"):
        box_iou(inverted, inverted)
    with _checks.trusted():
        box_iou(inverted, inverted)  # no value check here
        with pytest.raises(ValueError, match="shape"):
            box_iou(inverted[0], inverted)  # shape checks still run
    with pytest.raises(RuntimeError), _checks.trusted():
        raise RuntimeError
    with pytest.raises(ValueError, match="inverted"):  # restored after an exception
        box_iou(inverted, inverted)


@pytest.mark.parametrize("training", [True, False])
def test_detector_reads_tensor_values_only_at_its_entry(training, monkeypatch):
    """forward checks its inputs, then its building blocks skip the value checks
    (each would wait for the device on a GPU): torch.isfinite runs only for the
    targets, once per image."""
    from detlearn import _checks

    calls = []
    real_isfinite = torch.isfinite
    monkeypatch.setattr(_checks.torch, "isfinite", lambda t: calls.append(1) or real_isfinite(t))
    torch.manual_seed(0)
    model = TinyDetector(3, score_thresh=0.0).train(training)
    images, targets = ShapesDataset(2, task="detect", image_size=64).materialize()
    if training:
        model(images, targets)
        assert len(calls) == len(targets)  # each image's boxes, checked once
    else:
        with torch.no_grad():
            model(images)
        assert calls == []


# -- images of different sizes -------------------------------------------------------


def test_detector_output_is_its_steps_output_when_nothing_is_resized_or_padded():
    """Without min_size/max_size, images whose sides are multiples of the largest
    stride go through unchanged: forward equals its steps called on the batch."""
    torch.manual_seed(0)
    model = TinyDetector(3, score_thresh=0.0).eval()
    images, targets = batch("detect", n=2)
    size = (SIZE, SIZE)
    with torch.no_grad():
        logits, deltas = model.predict_raw(images)
        expected = model.postprocess(logits, deltas, model.anchors_for(size), size)
        for inputs in (images, list(images)):
            for a, b in zip(model(inputs), expected, strict=True):
                assert all(torch.equal(a[k], b[k]) for k in ("boxes", "labels", "scores"))
    model.train()
    torch.manual_seed(1)
    losses = model(list(images), targets)
    torch.manual_seed(1)
    logits, deltas = model.predict_raw(images)
    cat = torch.cat
    expected = model.compute_loss(
        cat(logits, 1), cat(deltas, 1), cat(model.anchors_for(size)), targets
    )
    assert all(torch.equal(losses[k], expected[k]) for k in expected)


def test_detector_takes_images_of_different_sizes():
    torch.manual_seed(0)
    model = TinyDetector(3, score_thresh=0.0)
    (a, b), (ta, tb) = batch("detect", n=2)
    images = [a, b[:, :48, :40]]  # 64 x 64 and 48 x 40, padded to 64 x 64
    tb = {"boxes": torch.tensor([[5.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
    for min_size, max_size in [(None, None), (80, 100)]:
        model.min_size, model.max_size = min_size, max_size
        losses = model.train()(images, [ta, tb])
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        with torch.no_grad():
            outputs = model.eval()(images)
        for out, (h, w) in zip(outputs, [(64, 64), (48, 40)], strict=True):
            assert len(out["boxes"]) > 0
            assert (out["boxes"] >= 0).all()
            assert (out["boxes"][:, 0::2] <= w).all() and (out["boxes"][:, 1::2] <= h).all()


def test_detector_resizes_targets_with_their_images():
    """min_size resizes the images and moves the boxes with them: the losses equal
    those of the resized images and boxes given as they are."""
    from detlearn.models.transform import resize_image, resize_targets

    torch.manual_seed(0)
    images, targets = batch("detect", n=2)
    big = [resize_image(image, (96, 96)) for image in images]
    big_targets = resize_targets(targets, [(SIZE, SIZE)] * 2, [(96, 96)] * 2)
    model = TinyDetector(3, min_size=SIZE).train()
    torch.manual_seed(1)
    losses = model(big, big_targets)
    model.min_size = None
    small = torch.stack([resize_image(image, (SIZE, SIZE)) for image in big])
    torch.manual_seed(1)
    small_targets = resize_targets(big_targets, [(96, 96)] * 2, [(SIZE, SIZE)] * 2)
    expected = model(small, small_targets)
    for k in expected:
        torch.testing.assert_close(losses[k], expected[k])


def truthful_head(model, truth):
    """predict_raw for ``model``: on each object's best anchor of the batch it is
    given, the deltas that encode the object and a high score; low scores elsewhere.
    ``truth(batch)`` gives the boxes and labels per image, in the batch's pixels."""

    def predict_raw(images):
        anchors = model.anchors_for(tuple(images.shape[-2:]))
        logits = [torch.full((len(images), len(a), 3), -10.0) for a in anchors]
        deltas = [torch.zeros(len(images), len(a), 4) for a in anchors]
        first_row = torch.tensor([0] + [len(a) for a in anchors]).cumsum(0)
        for b, target in enumerate(truth(images)):
            best = box_iou(target["boxes"], torch.cat(anchors)).argmax(dim=1)
            for box, label, n in zip(target["boxes"], target["labels"], best, strict=True):
                level = int((n >= first_row[1:]).sum())
                row = int(n - first_row[level])
                logits[level][b, row, label] = 10.0
                deltas[level][b, row] = encode_boxes(
                    box[None], anchors[level][row][None], model.box_weights
                )[0]
        return logits, deltas

    return predict_raw


def test_detector_returns_boxes_in_each_original_image(monkeypatch):
    """A head that predicts the truth on the resized, padded batch: the detections
    come back in each original image's pixels (x 1.5 for an image upscaled by 1.5,
    which min_size brings back to 64 pixels, next to a wider image)."""
    model = TinyDetector(3, min_size=SIZE, max_size=200).eval()
    truth = TRUTH[0]
    images = [torch.zeros(3, 96, 96), torch.zeros(3, 96, 144)]  # -> 64x64, 64x96
    monkeypatch.setattr(model, "predict_raw", truthful_head(model, lambda batch: [truth, truth]))
    outputs = model(images)
    for out, scale in zip(outputs, [1.5, 1.5], strict=True):
        order, expected = out["labels"].argsort(), truth["labels"].argsort()
        assert torch.equal(out["labels"][order], truth["labels"][expected])
        torch.testing.assert_close(
            out["boxes"][order], truth["boxes"][expected] * scale, atol=1e-4, rtol=0
        )


def test_trained_detector_finds_the_same_boxes_on_an_upscaled_padded_scene():
    """A scene upscaled by 1.5 and padded next to a larger image: with min_size
    the detector finds the same objects, scaled by 1.5, to within a pixel."""
    from detlearn.models.transform import resize_image

    torch.manual_seed(0)
    images, targets = batch("detect", n=4, seed=3)
    model = TinyDetector(3, score_thresh=0.5)
    overfit(model, images, targets, steps=150)
    model.eval()
    with torch.no_grad():
        expected = model(images[:1])[0]
        model.min_size, model.max_size = SIZE, 4 * SIZE
        up = resize_image(images[0], (96, 96))
        out = model([up, torch.rand(3, 96, 160)])[0]
    assert len(out["boxes"]) == len(expected["boxes"]) == len(targets[0]["boxes"])
    iou = box_iou(out["boxes"] / 1.5, expected["boxes"])
    best = iou.max(0)
    assert (best.values > 0.9).all()
    assert ((out["boxes"][best.indices] / 1.5 - expected["boxes"]).abs() < 1.0).all()


def test_detector_rejects_bad_sizes():
    with pytest.raises(ValueError, match="min_size"):
        TinyDetector(3, min_size=0)
    with pytest.raises(ValueError, match="max_size must be >= min_size"):
        TinyDetector(3, min_size=100, max_size=50)
