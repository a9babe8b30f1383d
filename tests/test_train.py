"""detlearn.train: fit, evaluation helpers, checkpoints."""

import dataclasses
import json
import math

import pytest
import torch

from detlearn.data import ShapesDataset
from detlearn.models import (
    Classifier,
    Localizer,
    TinyDetector,
    TwoStageDetector,
    detect_views,
    dihedral,
)
from detlearn.train import (
    DETECTORS,
    History,
    _training_set,
    build_model,
    evaluate_model,
    fit,
    load_checkpoint,
    lr_at,
    predict,
    read_checkpoint,
    save_checkpoint,
    seed_everything,
    train_step,
    transformed,
)

SIZE = 64
COCO_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}


def shapes(task, n, seed=0):
    return ShapesDataset(n, task=task, image_size=SIZE, seed=seed)


def test_fit_steps_history():
    seed_everything(0)
    model = Classifier(3)
    history = fit(model, shapes("classify", 40), steps=6, batch_size=8, progress=False)
    assert isinstance(history, History)
    assert history.steps == 6 and len(history.losses) == 6
    assert set(history.losses[0]) == {"loss_cls", "loss", "lr"}
    assert history.loss("loss_cls") == [step["loss_cls"] for step in history.losses]
    assert history.seconds > 0
    assert not model.training  # fit leaves the model ready to predict


def test_fit_epochs_and_validation_metrics():
    seed_everything(0)
    history = fit(
        Localizer(3, image_size=SIZE),
        shapes("localize", 20),
        epochs=2,
        batch_size=8,
        progress=False,
        val_dataset=shapes("localize", 10, seed=1),
    )
    assert history.steps == 2 * (20 // 8)
    assert [m["epoch"] for m in history.metrics] == [1, 2]
    assert {"accuracy", "mean_iou", "step"} <= set(history.metrics[0])


def test_fit_seconds_budget_stops():
    history = fit(Classifier(3), shapes("classify", 16), seconds=0.5, batch_size=8, progress=False)
    assert history.steps >= 1 and history.seconds < 5


def test_fit_is_reproducible():
    def run():
        seed_everything(0)
        model = TinyDetector(3)
        history = fit(model, shapes("detect", 16), steps=3, batch_size=4, progress=False)
        return history.loss()

    assert run() == run()


def test_fit_with_augmentation_is_reproducible_and_learns():
    def run():
        seed_everything(0)
        model = Localizer(3, image_size=SIZE)
        history = fit(model, shapes("localize", 32), steps=30, batch_size=8, augment=True,
                      progress=False)  # fmt: skip
        return history.loss()

    losses = run()
    assert losses == run()
    assert sum(losses[-5:]) < sum(losses[:5])


def box_masks(boxes, h, w):
    """``[N, H, W]`` masks that are 1 on the pixels inside each integer xyxy box."""
    ys, xs = torch.arange(h)[:, None] + 0.5, torch.arange(w)[None, :] + 0.5
    return torch.stack(
        [((xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)).float() for x1, y1, x2, y2 in boxes]
    )


def mask_extent(mask):
    """xyxy box of the pixels where ``mask [H, W]`` is non-zero."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


@pytest.mark.parametrize("k", range(8))
def test_dihedral_moves_boxes_with_the_pixels(k):
    """Each box, transformed, is the extent of its transformed pixel mask."""
    h = w = 12
    boxes = torch.tensor([[1.0, 2.0, 4.0, 9.0], [6.0, 0.0, 12.0, 3.0]])
    masks = box_masks(boxes, h, w)
    images = torch.stack([masks, masks, masks], dim=1)  # [2, 3, H, W]: one box per image
    targets = [{"boxes": boxes[i : i + 1], "labels": torch.tensor([i])} for i in range(2)]
    out_images, out_targets = dihedral(images, targets, k)
    for i in range(2):
        assert torch.equal(out_targets[i]["boxes"][0], mask_extent(out_images[i, 0]))
        assert torch.equal(out_targets[i]["labels"], targets[i]["labels"])
    assert torch.equal(targets[0]["boxes"], boxes[:1])  # the input targets are left alone


class ExtentDetector(torch.nn.Module):
    """A stand-in detector that sees perfectly: one box, the extent of channel 0's pixels.

    Its answer moves exactly with the image under every flip and transposition,
    so test-time augmentation must map each view's box back onto the same box.
    """

    nms_thresh, detections_per_img = 0.5, 100

    def forward(self, images):
        return [
            {
                "boxes": mask_extent(image[0])[None],
                "labels": torch.tensor([1]),
                "scores": torch.tensor([0.9]),
            }
            for image in images
        ]


@pytest.mark.parametrize("k", range(8))
def test_detect_views_maps_every_view_back(k):
    boxes = torch.tensor([[1.0, 2.0, 4.0, 9.0], [6.0, 0.0, 12.0, 3.0]])
    masks = box_masks(boxes, 12, 12)
    images, _ = dihedral(torch.stack([masks, masks, masks], dim=1), [], k)  # any view as input
    expected = [mask_extent(image[0]) for image in images]
    for views in (1, 4, 8):
        merged = detect_views(ExtentDetector(), images, views)
        for out, box in zip(merged, expected, strict=True):
            # every view saw exactly this box; only the vote's averaging rounds
            torch.testing.assert_close(out["boxes"], box[None], rtol=0, atol=1e-5)
            assert out["labels"].tolist() == [1] and out["scores"].tolist() == [pytest.approx(0.9)]


def test_detect_views_with_one_view_is_the_model():
    torch.manual_seed(0)
    model = TinyDetector(3, score_thresh=0.0, voting_thresh=0.7).eval()
    images = shapes("detect", 3)
    images = torch.stack([images[i][0] for i in range(3)])
    for a, b in zip(model(images), detect_views(model, images, 1), strict=True):
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "labels", "scores"))
    assert all(len(out["boxes"]) <= 100 for out in detect_views(model, images, 8))


def test_detect_views_rejects_bad_views():
    images = torch.rand(2, 3, 12, 12)
    for views in (0, 9, 2.0, True):
        with pytest.raises(ValueError, match="views"):
            detect_views(ExtentDetector(), images, views)
    with pytest.raises(ValueError, match="square"):
        detect_views(ExtentDetector(), torch.rand(2, 3, 12, 16), 5)
    assert len(detect_views(ExtentDetector(), torch.rand(2, 3, 12, 16) + 1, 4)) == 2
    with pytest.raises(ValueError, match="voting_thresh"):
        detect_views(ExtentDetector(), images, 2, voting_thresh=1.5)
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        detect_views(ExtentDetector(), images[0], 2)
    with pytest.raises(ValueError, match="detectors"):
        evaluate_model(Classifier(3), shapes("classify", 4), views=8)


@pytest.mark.parametrize("budget", [{}, {"epochs": 1, "steps": 1}, {"steps": 0}, {"seconds": -1.0}])
def test_fit_needs_exactly_one_positive_budget(budget):
    with pytest.raises(ValueError):
        fit(Classifier(3), shapes("classify", 4), progress=False, **budget)


def test_lr_schedule():
    assert lr_at(0.0, 1.0, warmup=0.1) < 0.1
    assert lr_at(0.1, 1.0, warmup=0.1) == pytest.approx(1.0)
    assert lr_at(0.55, 1.0, warmup=0.1) == pytest.approx(0.5)
    assert lr_at(1.0, 1.0, warmup=0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0.7, 1.0, "constant", warmup=0.1) == 1.0


def test_evaluate_model_metrics():
    torch.manual_seed(0)
    accuracy = evaluate_model(Classifier(3), shapes("classify", 10))
    assert set(accuracy) == {"accuracy"} and 0 <= accuracy["accuracy"] <= 1
    localize = evaluate_model(Localizer(3, image_size=SIZE), shapes("localize", 10))
    assert set(localize) == {"accuracy", "mean_iou"} and 0 <= localize["mean_iou"] <= 1
    detect = evaluate_model(TinyDetector(3, score_thresh=0.0), shapes("detect", 10), batch_size=4)
    assert set(detect) >= COCO_KEYS


class FixedLocalizer(Localizer):
    """A Localizer whose eval-mode outputs are fixed in advance, one per image."""

    def __init__(self, outputs):
        super().__init__(3, image_size=SIZE)
        self.outputs = outputs
        self.served = 0

    def forward(self, images):
        batch = self.outputs[self.served : self.served + len(images)]
        self.served += len(images)
        return batch


def test_evaluate_model_label_accuracy_and_mean_iou_by_hand():
    square = [10.0, 10.0, 30.0, 30.0]  # 20 x 20
    true_boxes = [square] * 4
    # IoU with the square: 1; half of it (200 / 400); disjoint (0); 10 x 10 inside (100 / 400)
    predicted_boxes = [square, [10.0, 10.0, 30.0, 20.0], [50.0, 50.0, 60.0, 60.0], [10, 10, 20, 20]]
    true_labels, predicted_labels = [0, 1, 2, 0], [0, 1, 0, 0]  # 3 of 4 right
    image = torch.zeros(3, SIZE, SIZE)
    dataset = [
        (image, {"labels": torch.tensor([y]), "boxes": torch.tensor([b])})
        for y, b in zip(true_labels, true_boxes, strict=True)
    ]
    outputs = [
        {"labels": torch.tensor([y]), "boxes": torch.tensor([b], dtype=torch.float32)}
        for y, b in zip(predicted_labels, predicted_boxes, strict=True)
    ]
    metrics = evaluate_model(FixedLocalizer(outputs), dataset, batch_size=3)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["mean_iou"] == pytest.approx((1 + 0.5 + 0 + 0.25) / 4)


def test_predict_returns_cpu_outputs_and_targets():
    predictions, targets = predict(TinyDetector(3), shapes("detect", 5), batch_size=2)
    assert len(predictions) == len(targets) == 5
    assert all(p["boxes"].device.type == "cpu" for p in predictions)


@pytest.mark.parametrize("task", ["classify", "localize", "detect"])
def test_checkpoint_round_trip_gives_identical_predictions(task, tmp_path):
    seed_everything(0)
    settings = {"score_thresh": 0.0} if task == "detect" else {}
    model = build_model(task, 3, SIZE, **settings)
    fit(model, shapes(task, 8), steps=2, batch_size=4, progress=False)  # BN statistics
    path = save_checkpoint(model, tmp_path / "run", task=task, note=[1, 2])
    assert path == tmp_path / "run" / "checkpoint.pt"
    loaded = load_checkpoint(tmp_path / "run")
    assert type(loaded) is type(model) and not loaded.training
    images, _ = shapes(task, 4, seed=1).materialize()
    model.eval()
    with torch.no_grad():
        for a, b in zip(model(images), loaded(images), strict=True):
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_checkpoint(path)["extra"] == {"task": task, "note": [1, 2]}


def test_checkpoint_to_a_file_and_missing_checkpoint(tmp_path):
    model = TinyDetector(3, strides=(8, 16), sizes=((10.0,), (30.0,)), nms_thresh=0.3)
    path = save_checkpoint(model, tmp_path / "model.pt")
    assert path.name == "model.pt"
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.nms_thresh == 0.3
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_checkpoint_stores_the_config_as_a_dict_and_loads_older_ones(tmp_path):
    torch.manual_seed(0)
    model = TinyDetector(3, strides=(8, 16), sizes=((10.0,), (30.0,)), nms_thresh=0.3)
    stored = read_checkpoint(save_checkpoint(model, tmp_path / "new.pt"))["config"]
    assert type(stored) is dict and stored == dataclasses.asdict(model.config)
    # checkpoints written before the config dataclasses hold the constructor's
    # keywords with lists for sequences
    old_config = json.loads(json.dumps(stored))
    assert old_config["sizes"] == [[10.0], [30.0]]
    old = {
        "format": "detlearn-checkpoint-1",
        "model": "TinyDetector",
        "config": old_config,
        "state_dict": model.state_dict(),
        "extra": {},
    }
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.config == model.config
    weights = model.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in loaded.state_dict().items())


def test_build_model():
    assert isinstance(build_model("classify", 3), Classifier)
    assert build_model("localize", 3, 64).image_size == 64
    assert type(build_model("detect", 3)) is TwoStageDetector  # the recipe's
    tiny = build_model("detect", 3, detector="tiny")
    assert type(tiny) is TinyDetector
    assert tiny.voting_thresh == DETECTORS["tiny"][1]["voting_thresh"] is not None
    assert build_model("detect", 3, detector="tiny", voting_thresh=None).voting_thresh is None
    assert type(build_model("detect", 3, detector="two-stage")) is TwoStageDetector
    with pytest.raises(ValueError, match="detector"):
        build_model("classify", 3, detector="tiny")
    with pytest.raises(ValueError, match="detector"):
        build_model("detect", 3, detector="three-stage")
    with pytest.raises(ValueError, match="task"):
        build_model("segment", 3)
    assert math.isclose(lr_at(0.5, 2.0, warmup=0.0), 1.0)


# --- precision, the training step, and CUDA ------------------------------------


def test_fit_in_mixed_precision_keeps_float32_weights():
    seed_everything(0)
    model = Localizer(3, image_size=SIZE)
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, shapes("localize", 16), steps=3, batch_size=8, progress=False,
                  precision="bfloat16")  # fmt: skip
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(math.isfinite(v) for v in history.loss())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_fit_in_float64_trains_a_float64_model():
    seed_everything(0)
    model = TinyDetector(3)
    history = fit(model, shapes("detect", 8), steps=2, batch_size=4, progress=False,
                  precision="float64")  # fmt: skip
    assert history.steps == 2 and all(p.dtype == torch.float64 for p in model.parameters())
    outputs = model(torch.rand(1, 3, SIZE, SIZE, dtype=torch.float64))
    assert outputs[0]["boxes"].dtype == torch.float64


def test_train_step_returns_the_losses_as_floats():
    torch.manual_seed(0)
    model = Classifier(3).train()
    images, targets = shapes("classify", 4).materialize()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing moves
    with torch.no_grad():
        expected = model(images, targets)["loss_cls"].item()
    record = train_step(model, optimizer, images, targets)
    assert set(record) == {"loss_cls", "loss"} and type(record["loss"]) is float
    assert record["loss_cls"] == record["loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    """Models and the training step on a GPU give what they give on the CPU."""

    @pytest.mark.parametrize("task", ["classify", "localize", "detect"])
    def test_model_outputs_and_losses_match_the_cpu(self, task):
        seed_everything(0)
        model = build_model(task, 3, SIZE).eval()
        images, targets = shapes(task, 4).materialize()
        gpu = build_model(task, 3, SIZE)
        gpu.load_state_dict(model.state_dict())
        gpu = gpu.cuda().eval()
        with torch.no_grad():
            for a, b in zip(model(images), gpu(images.cuda()), strict=True):
                assert all(v.device.type == "cuda" for v in b.values())
                if task == "detect":  # near ties may reorder detections: compare the best
                    k = min(5, len(a["scores"]), len(b["scores"]))
                    torch.testing.assert_close(b["scores"][:k].cpu(), a["scores"][:k],
                                               rtol=1e-3, atol=1e-4)  # fmt: skip
                else:
                    for key in a:
                        torch.testing.assert_close(b[key].cpu(), a[key], rtol=1e-3, atol=1e-4)
            model.train(), gpu.train()
            cpu_losses = model(images, targets)
            gpu_losses = gpu(images.cuda(), [{k: v.cuda() for k, v in t.items()} for t in targets])
            for name, value in cpu_losses.items():
                torch.testing.assert_close(gpu_losses[name].cpu(), value, rtol=1e-3, atol=1e-4)

    @pytest.mark.parametrize("precision", ["float32", "bfloat16"])
    def test_fit_on_cuda(self, precision):
        seed_everything(0)
        model = build_model("detect", 3, SIZE)
        history = fit(model, shapes("detect", 16), steps=3, batch_size=8, device="cuda",
                      progress=False, precision=precision)  # fmt: skip
        assert history.steps == 3 and all(math.isfinite(v) for v in history.loss())
        assert next(model.parameters()).device.type == "cuda"
        predictions, _ = predict(model, shapes("detect", 3, seed=1))
        assert all(p["boxes"].device.type == "cpu" for p in predictions)

    def test_train_step_on_cuda_matches_the_cpu(self):
        seed_everything(0)
        cpu = build_model("detect", 3, SIZE).train()
        gpu = build_model("detect", 3, SIZE)
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.cuda().train()
        images, targets = shapes("detect", 4).materialize()
        records = []
        for model, device in ((cpu, "cpu"), (gpu, "cuda")):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            moved = [{k: v.to(device) for k, v in t.items()} for t in targets]
            records.append(train_step(model, optimizer, images.to(device), moved))
        for name, value in records[0].items():
            assert records[1][name] == pytest.approx(value, rel=1e-3), name
        for name, value in cpu.state_dict().items():
            torch.testing.assert_close(gpu.state_dict()[name].cpu(), value, rtol=1e-3, atol=1e-4)


# -- images of different sizes and box-aware augmentation ------------------------------


def rectangle_image(size, box):
    """A black ``[3, H, W]`` image with a white filled rectangle at ``box`` (xyxy)."""
    image = torch.zeros(3, *size)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    return image


def test_fit_pads_images_of_different_sizes():
    small = rectangle_image((64, 80), (10, 20, 30, 40))
    large = rectangle_image((96, 96), (50, 40, 90, 70))
    dataset = [
        (small, {"boxes": torch.tensor([[10.0, 20, 30, 40]]), "labels": torch.tensor([1])}),
        (large, {"boxes": torch.tensor([[50.0, 40, 90, 70]]), "labels": torch.tensor([0])}),
    ]
    images, targets = _training_set(dataset, torch.device("cpu"))
    assert images.shape == (2, 3, 96, 96)
    assert torch.equal(images[0, :, :64, :80], small) and images[0, :, 64:].eq(0).all()
    assert torch.equal(images[1], large)
    assert torch.equal(targets[0]["boxes"], dataset[0][1]["boxes"])  # padding moves none
    history = fit(TinyDetector(2), dataset * 4, steps=2, batch_size=4, progress=False)
    assert history.steps == 2 and all(math.isfinite(v) for v in history.loss())


def test_transformed_moves_the_boxes_with_the_pixels():
    from torchvision.transforms import v2

    box = (10, 20, 30, 40)
    images = torch.stack([rectangle_image((48, 64), box)] * 2)
    targets = [{"boxes": torch.tensor([[10.0, 20, 30, 40]]), "labels": torch.tensor([2])}] * 2
    flipped, out = transformed(images, targets, v2.RandomHorizontalFlip(p=1.0))
    assert torch.equal(flipped, images.flip(-1))
    for target in out:  # the flipped rectangle, still tight: x from 64 - 30 to 64 - 10
        assert torch.equal(target["boxes"], torch.tensor([[34.0, 20, 54, 40]]))
        assert target["labels"].tolist() == [2]
    # a crop that keeps the rectangle's right part only, and one that misses it
    cropped, out = transformed(
        images[:1],
        targets[:1],
        lambda image, t: (
            v2.functional.crop(image, 0, 20, 48, 44),
            {**t, "boxes": v2.functional.crop(t["boxes"], 0, 20, 48, 44)},
        ),
    )
    assert cropped.shape == (1, 3, 48, 44)
    assert torch.equal(out[0]["boxes"], torch.tensor([[0.0, 20, 10, 40]]))
    gone, out = transformed(
        images[:1],
        targets[:1],
        lambda image, t: (
            v2.functional.crop(image, 0, 40, 48, 24),
            {**t, "boxes": v2.functional.crop(t["boxes"], 0, 40, 48, 24)},
        ),
    )
    assert out[0]["boxes"].shape == (0, 4) and out[0]["labels"].shape == (0,)


def test_fit_with_detection_transforms_trains():
    from detlearn.data import detection_transforms

    dataset = shapes("detect", 16)
    seed_everything(0)
    history = fit(
        TinyDetector(3), dataset, steps=3, batch_size=8, progress=False,
        transforms=detection_transforms(train=True),
    )  # fmt: skip
    assert history.steps == 3 and all(math.isfinite(v) for v in history.loss())
