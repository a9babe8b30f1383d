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
