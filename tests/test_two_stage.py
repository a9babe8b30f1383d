"""detlearn.models.TwoStageDetector: the second stage's targets by hand, training
and eval outputs, empty images, overfitting one batch, checkpoints."""

from __future__ import annotations

import pytest
import torch
from strategies import assert_reads_whole

from detlearn.anchors import encode_boxes
from detlearn.data import ShapesDataset, collate
from detlearn.models import TinyDetector, TwoStageConfig, TwoStageDetector
from detlearn.models.two_stage import roi_targets
from detlearn.train import load_checkpoint, save_checkpoint

LOSSES = {
    "loss_proposal_cls",
    "loss_proposal_box",
    "loss_roi_cls",
    "loss_roi_box",
    "loss_roi_iou",
}


def batch(n: int = 4, seed: int = 0):
    images, targets = collate([ShapesDataset(n, seed=seed)[i] for i in range(n)])
    return torch.stack(images), targets


def small_model(seed: int = 0, **settings) -> TwoStageDetector:
    torch.manual_seed(seed)
    return TwoStageDetector(3, **settings)


def test_roi_targets_on_hand_made_proposals():
    """One object [10, 10, 30, 30] of label 2; proposals shifted right by 0, 2, 6, 10.

    IoUs: 1, 18/22 = 0.82, 14/26 = 0.54 and 10/30 = 0.33; with thresholds 0.6 and
    0.4 the first two are the object, the third is left out, the fourth background.
    """
    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    shifts = torch.tensor([0.0, 2.0, 6.0, 10.0])
    proposals = gt + torch.stack([shifts, 0 * shifts, shifts, 0 * shifts], 1)
    labels, boxes = roi_targets(proposals, gt, torch.tensor([2]), 3, 0.6, 0.4)
    assert labels.tolist() == [2, 2, -1, 3]
    assert torch.equal(boxes, gt.expand(4, 4))
    # the box target of the second: the object's centre 2 px left of the proposal's,
    # in units of its width 20, times the weight 20: dx = -2; same size: dw = 0
    deltas = encode_boxes(boxes[1:2], proposals[1:2], (20.0, 20.0, 10.0, 10.0))
    torch.testing.assert_close(deltas, torch.tensor([[-2.0, 0.0, 0.0, 0.0]]))
    # no objects: every proposal is background and is its own box target
    labels, boxes = roi_targets(proposals, torch.zeros(0, 4), torch.zeros(0).long(), 3)
    assert labels.tolist() == [3, 3, 3, 3] and torch.equal(boxes, proposals)


def test_sample_rois_keeps_the_budget_and_the_fraction():
    model = small_model(roi_per_image=8, roi_positive_fraction=0.5)
    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 80.0, 70.0]])
    near = gt.repeat(10, 1) + torch.rand(20, 4)  # IoU > 0.5: foreground
    far = torch.rand(30, 2).mul(5).repeat(1, 2) + torch.tensor([0.0, 0.0, 3.0, 3.0])
    proposals = [torch.cat([near, far]), far[:2]]
    targets = [{"boxes": gt, "labels": torch.tensor([0, 1])}] + [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    ]
    rois, labels, boxes = model.sample_rois(proposals, targets)
    assert [len(r) for r in rois] == [8, 2]
    assert (labels[:8] < 3).sum() == 4 and (labels[8:] == 3).all()
    assert len(boxes) == len(labels) == 10


def test_training_returns_the_named_losses():
    images, targets = batch()
    losses = small_model().train()(images, targets)
    assert set(losses) == LOSSES
    for value in losses.values():
        assert value.dim() == 0 and torch.isfinite(value)
    sum(losses.values()).backward()


def test_eval_returns_detections_in_the_image():
    images, _ = batch(3)
    model = small_model(roi_score_thresh=0.0).eval()
    with torch.no_grad():
        out = model(list(images))
    assert len(out) == 3
    for det in out:
        assert set(det) == {"boxes", "labels", "scores"}
        n = len(det["boxes"])
        assert det["boxes"].shape == (n, 4) and det["boxes"].dtype == torch.float32
        assert det["labels"].dtype == torch.int64 and det["scores"].shape == (n,)
        assert ((det["labels"] >= 0) & (det["labels"] < 3)).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= 96).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert n <= model.roi_detections_per_img


def test_images_without_objects_train():
    images, targets = batch(3)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    model = small_model().train()
    for batch_targets in ([empty] * 3, [targets[0], empty, empty]):
        losses = model(images, batch_targets)
        assert set(losses) == LOSSES
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()


def test_first_stage_is_a_tiny_detector():
    """With the second stage switched off, the model is the TinyDetector it contains."""
    images, _ = batch(2)
    model = small_model(score_thresh=0.0).eval()
    tiny = TinyDetector(3, score_thresh=0.0).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("roi_head")}
    tiny.load_state_dict(state)
    model.first_stage_only = True
    with torch.no_grad():
        ours, ref = model(images), tiny(images)
    for a, b in zip(ours, ref, strict=True):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(a[key], b[key])


def test_overfits_one_small_batch():
    images, targets = batch(4, seed=3)
    # a small jitter: the batch's training RoIs barely change from step to step
    model = small_model(seed=1, roi_jitter=(0.02,)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(120):
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < first / 10, (first, last)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    images, targets = batch(4)
    model = small_model(roi_per_image=16, roi_score_thresh=0.0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):  # move the batch-norm statistics off their start
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    path = save_checkpoint(model, tmp_path / "run")
    loaded = load_checkpoint(path)
    assert isinstance(loaded, TwoStageDetector) and loaded.config == model.config
    with torch.no_grad():
        before, after = model(images), loaded(images)
    for a, b in zip(before, after, strict=True):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(a[key], b[key])


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="roi_bg_iou_thresh"):
        TwoStageConfig(3, roi_fg_iou_thresh=0.4, roi_bg_iou_thresh=0.6)
    with pytest.raises(ValueError, match="roi_strides"):
        TwoStageConfig(3, roi_strides=(3,))
    with pytest.raises(ValueError, match="roi_enlarge"):
        TwoStageConfig(3, roi_enlarge=0.5)
    with pytest.raises(ValueError, match="roi_box_weights"):
        TwoStageConfig(3, roi_box_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"roi_jitter\[1\]"):
        TwoStageConfig(3, roi_jitter=(0.1, -0.1))
    with pytest.raises(ValueError, match="bg_iou_thresh"):  # the first stage's checks run
        TwoStageConfig(3, fg_iou_thresh=0.3, bg_iou_thresh=0.5)
    model = small_model()
    with pytest.raises(AttributeError, match="roi_size"):
        model.roi_size = 7
    model.roi_nms_thresh = 0.6  # an eval-time setting can change
    assert model.config.roi_nms_thresh == 0.6


def test_training_needs_targets():
    images, _ = batch(2)
    with pytest.raises(ValueError, match="targets"):
        small_model().train()(images)


@pytest.mark.parametrize("obj", [TwoStageDetector.roi_loss, roi_targets])
def test_shown_code_reads_whole(obj):
    assert_reads_whole(obj)


# -- images of different sizes (with the patch to TwoStageDetector.forward) ----------


def test_takes_images_of_different_sizes():
    (a, b), targets = batch(2)
    images = [a, b[:, :64, :80]]  # 96 x 96 and 64 x 80
    targets[1] = {"boxes": torch.tensor([[5.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
    for min_size, max_size in [(None, None), (64, 120)]:
        model = small_model(
            score_thresh=0.0, roi_score_thresh=0.0, min_size=min_size, max_size=max_size
        )
        losses = model.train()(images, targets)
        assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        model.eval()
        for first_stage_only in (True, False):
            model.first_stage_only = first_stage_only
            with torch.no_grad():
                outputs = model(images)
            for out, (h, w) in zip(outputs, [(96, 96), (64, 80)], strict=True):
                assert len(out["boxes"]) > 0 and (out["boxes"] >= 0).all()
                assert (out["boxes"][:, 0::2] <= w).all() and (out["boxes"][:, 1::2] <= h).all()


def test_same_size_images_give_what_the_batch_gives():
    images, _ = batch(2)
    model = small_model(roi_score_thresh=0.0).eval()
    with torch.no_grad():
        for a, b in zip(model(images), model(list(images)), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in ("boxes", "labels", "scores"))
