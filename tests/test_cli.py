"""The command line: python -m detlearn train / evaluate."""

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

from detlearn.__main__ import COCO_KEYS, EVAL_SEED, main


def run(*argv):
    """``main(argv)`` in process: ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    """A detector trained for a few steps by the command line, evaluated with --coco-out."""
    root = tmp_path_factory.mktemp("cli")
    code, out, err = run(
        "train", "detect", "--steps", 40, "--num-images", 64, "--batch-size", 16,
        "--lr", 0.01, "--quiet", "--out", root / "run",
    )  # fmt: skip
    assert code == 0, err
    assert "saved" in out and (root / "run" / "checkpoint.pt").is_file()
    code, out, err = run("evaluate", root / "run", "--num-images", 20, "--coco-out", root / "coco")
    assert code == 0, err
    return root, out


def test_train_and_evaluate_detector(detect_run):
    _, out = detect_run
    lines = out.strip().splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    assert list(metrics) == list(COCO_KEYS)


def pycocotools_stats(coco_dir):
    """``(number of images, COCOeval stats)`` of the files ``evaluate --coco-out`` wrote."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_dir / "gt.json"))
        detections = gt.loadRes(str(coco_dir / "detections.json"))
        evaluator = COCOeval(gt, detections, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return len(gt.getImgIds()), evaluator.stats


def test_coco_files_give_the_printed_numbers(detect_run):
    root, out = detect_run
    metrics = json.loads(out)
    num_images, stats = pycocotools_stats(root / "coco")
    assert num_images == 20
    for key, value in zip(COCO_KEYS, stats, strict=True):
        assert metrics[key] == pytest.approx(value, abs=1e-5), key


def test_train_and_evaluate_the_two_stage_detector(tmp_path):
    code, out, err = run(
        "train", "detect", "--model", "two-stage", "--steps", 3, "--num-images", 16,
        "--batch-size", 8, "--quiet", "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["model"] == "TwoStageDetector"
    accept_every_score(tmp_path / "run")
    code, out, err = run(
        "evaluate", tmp_path / "run", "--num-images", 6, "--coco-out", tmp_path / "coco"
    )
    assert code == 0, err
    metrics = json.loads(out)
    num_images, stats = pycocotools_stats(tmp_path / "coco")
    assert num_images == 6
    for key, value in zip(COCO_KEYS, stats, strict=True):
        assert metrics[key] == pytest.approx(value, abs=1e-5), key


def test_evaluate_with_several_views(detect_run):
    root, _ = detect_run
    args = ("evaluate", root / "run", "--num-images", 20)
    code, out, err = run(*args, "--views", 2, "--coco-out", root / "coco2")
    assert code == 0, err
    metrics = json.loads(out)
    _, stats = pycocotools_stats(root / "coco2")
    for key, value in zip(COCO_KEYS, stats, strict=True):
        assert metrics[key] == pytest.approx(value, abs=1e-5), key
    code, out, err = run(*args, "--views", 9)
    assert code == 1 and out == "" and "views" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("task", "keys"), [("classify", {"accuracy"}), ("localize", {"accuracy", "mean_iou"})]
)
def test_train_and_evaluate_classifier_and_localizer(task, keys, tmp_path):
    code, _, err = run(
        "train", task, "--epochs", 1, "--num-images", 32, "--quiet", "--out", tmp_path
    )
    assert code == 0, err
    code, out, err = run("evaluate", tmp_path, "--num-images", 10, "--seed", 5)
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics) == keys and all(0 <= v <= 1 for v in metrics.values())
    code, _, err = run("evaluate", tmp_path, "--num-images", 10, "--views", 2)
    assert code == 1 and "--views is for detect" in err
    code, _, err = run("evaluate", tmp_path, "--num-images", 10, "--coco-out", tmp_path / "coco")
    assert code == 1 and "--coco-out writes detections" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "coco").exists()


def test_default_evaluation_seed_is_held_out(tmp_path):
    code, _, err = run(
        "train", "classify", "--steps", 1, "--num-images", 8, "--seed", EVAL_SEED,
        "--quiet", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    from detlearn.train import read_checkpoint

    assert read_checkpoint(tmp_path)["extra"]["train_seed"] == EVAL_SEED
    code, out, err = run("evaluate", tmp_path, "--num-images", 4)
    assert code == 0 and err == ""  # no warning: it picked another seed
    code, out, err = run("evaluate", tmp_path, "--num-images", 4, "--seed", EVAL_SEED)
    assert code == 0 and "training seed" in err


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["evaluate", "/no/such/dir"], 1, "no checkpoint"),
        (["train", "segment"], 2, "invalid choice"),
        (["train", "detect", "--epochs", "-3"], 2, "--epochs"),
        (["train", "detect", "--epochs", "two"], 2, "--epochs"),
        (["train", "detect", "--seconds", "nan"], 2, "--seconds"),
        (["train", "detect", "--epochs", "1", "--seconds", "5"], 2, "not allowed"),
        (["evaluate", ".", "--num-images", "0"], 2, "--num-images"),
        (["train", "detect", "--seed", "-1"], 2, "--seed"),
        (["train", "detect", "--model", "three-stage"], 2, "--model"),
        (["train", "classify", "--model", "two-stage"], 2, "detect task"),
        ([], 2, "required"),
    ],
)
def test_errors_are_one_line(argv, code, words):
    got, out, err = run(*argv)
    assert got == code
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and words in err
    assert "Traceback" not in err


def test_help_explains_every_option():
    code, out, _ = run("train", "--help")
    assert code == 0
    for option in ("--epochs", "--steps", "--seconds", "--seed", "--out", "--num-images",
                   "--batch-size", "--lr", "--device", "--quiet"):  # fmt: skip
        assert option in out
    code, out, _ = run("evaluate", "--help")
    for option in ("--num-images", "--seed", "--coco-out", "--batch-size", "--views", "--device"):
        assert option in out


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "detlearn", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "train" in result.stdout and "evaluate" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "detlearn", "evaluate", "/no/such/dir"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train", "detect", "--steps", "0"], "--steps"),
        (["train", "detect", "--steps", "2.5"], "--steps"),
        (["train", "detect", "--batch-size", "0"], "--batch-size"),
        (["train", "detect", "--batch-size", "-16"], "--batch-size"),
        (["train", "detect", "--steps", "3", "--epochs", "1"], "not allowed"),
        (["train", "detect", "--precision", "float16"], "--precision"),
        (["train", "detect", "--backend", "mpi"], "--backend"),
    ],
)
def test_steps_batch_size_precision_and_backend_are_checked(argv, words):
    code, out, err = run(*argv)
    assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1


def test_help_explains_the_distributed_options():
    code, out, _ = run("train", "--help")
    assert code == 0
    for words in ("--precision", "bfloat16", "float64", "--backend", "gloo", "nccl",
                  "global batch", "sqrt", "LOCAL_RANK"):  # fmt: skip
        assert words in " ".join(out.split()), words


def test_another_batch_size_scales_the_learning_rate(tmp_path):
    from detlearn.train import RECIPES, read_checkpoint

    recipe = RECIPES["classify"]
    args = ("train", "classify", "--steps", 1, "--num-images", 8, "--quiet")
    code, _, err = run(*args, "--batch-size", recipe.batch_size // 4, "--out", tmp_path / "a")
    assert code == 0, err
    extra = read_checkpoint(tmp_path / "a")["extra"]
    assert extra["lr"] == pytest.approx(recipe.lr / 2) and extra["batch_size"] == 4
    assert extra["processes"] == 1
    code, _, err = run(*args, "--batch-size", 4, "--lr", 0.1, "--out", tmp_path / "b")
    assert code == 0, err
    assert read_checkpoint(tmp_path / "b")["extra"]["lr"] == 0.1  # an explicit --lr wins


def test_train_with_mixed_precision(tmp_path):
    code, out, err = run("train", "localize", "--steps", 2, "--num-images", 8, "--batch-size", 4,
                         "--precision", "bfloat16", "--quiet", "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    assert "saved" in out
    from detlearn.train import load_checkpoint

    model = load_checkpoint(tmp_path)
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in model.parameters())


# --- COCO folders: export-shapes, train --data, evaluate --data ------------------------

# the exported folder's category ids 0, 1, 2 are renumbered to ids a user's file may have
NEW_IDS = {0: 7, 1: 3, 2: 90}


def coco_stats(annotation_file, detections_file):
    """pycocotools' twelve numbers for a detections file against an annotation file."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        evaluator = COCOeval(gt, gt.loadRes(str(detections_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def assert_printed_numbers_are_pycocotools(out, annotation_file, detections_file):
    metrics = json.loads(out)
    assert list(metrics) == list(COCO_KEYS)
    stats = coco_stats(annotation_file, detections_file)
    for key, value in zip(COCO_KEYS, stats, strict=True):
        assert metrics[key] == pytest.approx(value, abs=1e-5), key
    return metrics


def user_folder(exported, out, keep_ids=None, pad_every=0):
    """A copy of an exported folder as a user's: other image and category ids (in
    another order than the labels), one crowd box, areas that are not w * h, and
    optionally only some categories (``keep_ids``) or every ``pad_every``-th image
    padded to 96 x 120 pixels (its boxes unchanged)."""
    from PIL import Image

    data = json.loads((exported / "annotations.json").read_text())
    (out / "pics").mkdir(parents=True)
    image_id = {image["id"]: 1000 + 37 * image["id"] for image in data["images"]}
    for k, image in enumerate(data["images"]):
        picture = Image.open(exported / "images" / image["file_name"])
        if pad_every and k % pad_every == 0:
            wide = Image.new("RGB", (120, 96))
            wide.paste(picture, (0, 0))
            picture, image["width"] = wide, 120
        image["file_name"] = f"pic_{k}.png"
        picture.save(out / "pics" / image["file_name"])
        image["id"] = image_id[image["id"]]
    for n, ann in enumerate(data["annotations"]):
        ann["image_id"] = image_id[ann["image_id"]]
        ann["category_id"] = NEW_IDS[ann["category_id"]]
        ann["area"] *= 0.7 if n % 3 == 0 else 1.0  # like a mask's area, smaller
        ann["iscrowd"] = int(n == 4)
        ann["id"] = 500 + n
    for category in data["categories"]:
        category["id"] = NEW_IDS[category["id"]]
    data["categories"].reverse()  # file order is not id order
    if keep_ids is not None:
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] in keep_ids]
        data["categories"] = [c for c in data["categories"] if c["id"] in keep_ids]
    (out / "ann.json").write_text(json.dumps(data))
    return out / "ann.json", out / "pics"


def accept_every_score(run_dir):
    """Let a barely trained detector return its best 100 boxes per image (score_thresh
    0), so that the evaluation has many detections to match, of every class."""
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["config"]["score_thresh"] = 0.0
    torch.save(checkpoint, run_dir / "checkpoint.pt")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """export-shapes, then a user's copy of it, a detector trained on it for 2 steps."""
    root = tmp_path_factory.mktemp("folder")
    code, out, err = run("export-shapes", root / "shapes", "--num-images", 12, "--seed", 3)
    assert code == 0, err
    assert out.strip() == str(root / "shapes" / "annotations.json")
    annotations, images = user_folder(root / "shapes", root / "user")
    code, out, err = run(
        "train", "detect", "--data", annotations, "--images", images, "--steps", 2,
        "--batch-size", 4, "--quiet", "--out", root / "run",
        "--val-data", annotations, "--val-images", images,
    )  # fmt: skip
    assert code == 0, err
    accept_every_score(root / "run")
    return root, annotations, images, out


def test_export_shapes_writes_a_folder_pycocotools_loads(folder_run):
    from pycocotools.coco import COCO

    from detlearn.data import ShapesDataset

    root = folder_run[0]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(root / "shapes" / "annotations.json"))
    scenes = ShapesDataset(12, task="detect", seed=3)
    assert len(coco.getImgIds()) == 12
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == scenes.classes
    assert len(coco.getAnnIds()) == sum(len(scenes[i][1]["labels"]) for i in range(12))
    for image in coco.loadImgs(coco.getImgIds()):
        assert (root / "shapes" / "images" / image["file_name"]).is_file()
        assert (image["width"], image["height"]) == (96, 96)


def test_train_on_a_folder_keeps_its_categories(folder_run):
    from detlearn.train import read_checkpoint

    root, annotations, _, out = folder_run
    extra = read_checkpoint(root / "run")["extra"]
    names = {c["id"]: c["name"] for c in json.loads(annotations.read_text())["categories"]}
    assert extra["data"]["category_ids"] == [3, 7, 90]  # label k -> the file's id
    assert extra["data"]["classes"] == [names[3], names[7], names[90]]
    assert extra["num_images"] == 12 and extra["steps"] == 2
    # --val-data: one line of validation numbers (the 2 steps end the epoch), then "saved"
    first, last = out.strip().splitlines()
    assert list(json.loads(first)) == ["epoch", "step", *COCO_KEYS] and "saved" in last
    assert extra["validation"] == [json.loads(first)]


def test_evaluate_on_a_folder_writes_its_own_ids(folder_run):
    root, annotations, images, _ = folder_run
    coco_out = root / "coco"
    code, out, err = run(
        "evaluate", root / "run", "--data", annotations, "--images", images,
        "--coco-out", coco_out,
    )  # fmt: skip
    assert code == 0, err
    assert "training set" in err  # a warning, on one line
    assert sorted(p.name for p in coco_out.iterdir()) == ["detections.json"]
    detections = json.loads((coco_out / "detections.json").read_text())
    file = json.loads(annotations.read_text())
    assert {d["image_id"] for d in detections} == {image["id"] for image in file["images"]}
    assert {d["category_id"] for d in detections} == {7, 3, 90}
    metrics = assert_printed_numbers_are_pycocotools(out, annotations, coco_out / "detections.json")
    assert metrics["AP50"] > 0  # the comparison has matches to count


def test_evaluate_on_a_folder_with_fewer_categories_and_sizes(folder_run, tmp_path):
    """Another file with categories 3 and 90 only: the model's label for 90 (2) is the
    file's label 1. Its images have two sizes: evaluation and training take them."""
    root = folder_run[0]
    annotations, images = user_folder(root / "shapes", tmp_path, keep_ids={3, 90}, pad_every=3)
    args = ("--data", annotations, "--images", images)
    code, out, err = run("evaluate", root / "run", *args, "--coco-out", tmp_path / "coco")
    assert code == 0 and err == "", err
    detections = json.loads((tmp_path / "coco" / "detections.json").read_text())
    assert {d["category_id"] for d in detections} == {3, 90}
    metrics = assert_printed_numbers_are_pycocotools(
        out, annotations, tmp_path / "coco" / "detections.json"
    )
    assert metrics["AP50"] > 0
    code, out, err = run("train", "detect", *args, "--steps", 1, "--quiet", "--out", tmp_path)
    assert code == 0, err  # the images are padded to the largest, 96 x 120


def test_a_checkpoint_and_a_file_must_agree_on_categories(folder_run, tmp_path):
    root, annotations, images, _ = folder_run
    file = json.loads(annotations.read_text())
    for category in file["categories"]:
        category["name"] = category["name"].upper()
    (tmp_path / "renamed.json").write_text(json.dumps(file))
    code, _, err = run("evaluate", root / "run", "--data", tmp_path / "renamed.json",
                       "--images", images)  # fmt: skip
    assert code == 1 and "category id" in err and len(err.strip().splitlines()) == 1
    # a checkpoint trained on synthetic scenes knows ids 0 .. K-1: it meets the
    # exported folder, not the renumbered one
    code, _, err = run("train", "detect", "--steps", 1, "--num-images", 4, "--quiet",
                       "--out", tmp_path / "synthetic")  # fmt: skip
    assert code == 0, err
    code, out, err = run("evaluate", tmp_path / "synthetic", "--data", annotations,
                         "--images", images)  # fmt: skip
    assert code == 1 and "shares no category id" in err
    exported = root / "shapes"
    folder = ("--data", exported / "annotations.json", "--images", exported / "images")
    code, out, err = run("evaluate", tmp_path / "synthetic", *folder)
    assert code == 0 and list(json.loads(out)) == list(COCO_KEYS), err
    # training and validation sets need the same categories
    code, _, err = run("train", "detect", "--steps", 1, "--num-images", 4, "--quiet",
                       "--out", tmp_path / "v", "--val-data", annotations,
                       "--val-images", images)  # fmt: skip
    assert code == 1 and "other categories" in err and len(err.strip().splitlines()) == 1


def test_a_folder_checkpoint_needs_a_folder_to_evaluate(folder_run):
    root = folder_run[0]
    code, out, err = run("evaluate", root / "run", "--num-images", 4)
    assert code == 1 and out == "" and "--data" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["train", "detect", "--data", "a.json"], 2, "--data needs --images"),
        (["train", "detect", "--images", "."], 2, "--images needs --data"),
        (["train", "detect", "--val-data", "a.json"], 2, "--val-data needs --val-images"),
        (["train", "classify", "--data", "a.json", "--images", "."], 2, "detect"),
        (["train", "detect", "--data", "a.json", "--images", ".", "--num-images", "5"], 2,
         "--num-images"),
        (["evaluate", "run", "--data", "a.json"], 2, "--data needs --images"),
        (["evaluate", "run", "--data", "a.json", "--images", ".", "--seed", "3"], 2, "--seed"),
        (["evaluate", "run", "--data", "a.json", "--images", ".", "--num-images", "3"], 2,
         "--num-images"),
        (["export-shapes"], 2, "required"),
        (["export-shapes", "out", "--num-images", "0"], 2, "--num-images"),
        (["export-shapes", "out", "--image-size", "x"], 2, "--image-size"),
    ],
)  # fmt: skip
def test_folder_options_are_checked(argv, code, words):
    got, out, err = run(*argv)
    assert got == code and out == "" and words in err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"detlearn {argv[0]}: error")


def test_bad_folders_give_one_line_errors(folder_run, tmp_path):
    root, annotations, images, _ = folder_run
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "a_file").write_text("")
    train = ("train", "detect", "--steps", 1, "--quiet", "--out", tmp_path / "run")
    evaluate = ("evaluate", root / "run")
    cases = [
        (train, tmp_path / "none.json", images, "does not exist"),
        (train, annotations, tmp_path / "no_images", "not a directory"),
        (train, tmp_path / "broken.json", images, "not a readable JSON"),
        (evaluate, tmp_path / "none.json", images, "does not exist"),
        (evaluate, annotations, tmp_path, "does not exist"),  # no image files there
    ]
    for command, data, folder, words in cases:
        code, out, err = run(*command, "--data", data, "--images", folder)
        assert code == 1 and out == "", err
        assert err.startswith(f"detlearn {command[0]}: error: ") and words in err, err
        assert len(err.strip().splitlines()) == 1
    code, out, err = run("export-shapes", tmp_path / "a_file", "--num-images", 1)
    assert code == 1 and err.startswith("detlearn export-shapes: error: ")
    assert len(err.strip().splitlines()) == 1


def test_help_documents_the_folder_options():
    for argv, words in [
        (["train", "--help"], ["--data", "--images", "--val-data", "--val-images",
                               "--no-augment", "iscrowd", "differ in size", "category ids"]),
        (["evaluate", "--help"], ["--data", "--images", "--coco-out", "own image and "
                                  "category ids", "crowd"]),
        (["export-shapes", "--help"], ["OUT", "--num-images", "--seed", "--image-size",
                                       "annotations.json"]),
        (["--help"], ["export-shapes", "COCO folder"]),
    ]:  # fmt: skip
        code, out, _ = run(*argv)
        assert code == 0
        for word in words:
            assert word in " ".join(out.split()), (argv, word)
