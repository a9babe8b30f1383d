"""detlearn.data's COCO folders (export_coco, CocoDataset), the VOC and YOLO converters
and the box-aware transforms; pycocotools and torchvision are the references."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO
from strategies import as_boxes, assert_reads_whole, box_lists
from torchvision import tv_tensors
from torchvision.transforms import v2

from detlearn.boxes import box_convert
from detlearn.data import (
    CocoDataset,
    ShapesDataset,
    coco_to_voc,
    coco_to_yolo,
    detection_transforms,
    export_coco,
    read_yolo_labels,
    voc_to_coco,
    write_yolo_labels,
    yolo_to_coco,
)

# --- helpers --------------------------------------------------------------------------


def save_image(path: Path, height: int, width: int, mode: str = "RGB", seed: int = 0) -> None:
    """A random image file of the given PIL mode ("RGB", "L", "RGBA")."""
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path)


def write_folder(tmp_path: Path, data: dict, sizes: dict[str, tuple[int, int, str]]) -> Path:
    """Images ``{file_name: (height, width, mode)}`` in tmp_path/images and the JSON file."""
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    for k, (name, (height, width, mode)) in enumerate(sizes.items()):
        save_image(tmp_path / "images" / name, height, width, mode, seed=k)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def small_file() -> tuple[dict, dict[str, tuple[int, int, str]]]:
    """Three images (RGB, grey, RGBA; one without annotations), a crowd box, ids 7/3/90."""
    sizes = {"a.png": (30, 20, "RGB"), "b.png": (24, 32, "L"), "c.png": (16, 16, "RGBA")}
    data = {
        "images": [
            {"id": 11, "file_name": "a.png", "width": 20, "height": 30},
            {"id": 5, "file_name": "b.png", "width": 32, "height": 24},
            {"id": 40, "file_name": "c.png", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 90, "bbox": [1, 2, 10, 20],
             "area": 150.5, "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [0.5, 0, 4.25, 3],
             "area": 12.75, "iscrowd": 1},
            {"id": 3, "image_id": 5, "category_id": 7, "bbox": [8, 4, 16, 10]},
        ],
        "categories": [
            {"id": 7, "name": "seven"},
            {"id": 3, "name": "three"},
            {"id": 90, "name": "ninety"},
        ],
    }  # fmt: skip
    return data, sizes


def extent(image: torch.Tensor, threshold: float = 0.5) -> list[float]:
    """Tight xyxy box, in pixel edges, of the pixels brighter than threshold (any channel)."""
    mask = image.amax(dim=0) > threshold
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return [cols[0].item(), rows[0].item(), cols[-1].item() + 1.0, rows[-1].item() + 1.0]


# --- export_coco and CocoDataset ------------------------------------------------------


def test_shapes_round_trip(tmp_path):
    shapes = ShapesDataset(6, image_size=40, seed=3, min_objects=0, max_objects=3)
    path = export_coco(shapes, tmp_path)
    assert path == tmp_path / "annotations.json"
    coco = CocoDataset(tmp_path / "images", path)
    assert len(coco) == len(shapes)
    assert coco.classes == shapes.classes and coco.category_ids == [0, 1, 2]
    counts = []
    for i in range(len(shapes)):
        (image, target), (image0, target0) = coco[i], shapes[i]
        assert image.dtype == torch.float32 and image.shape == image0.shape
        assert type(image) is torch.Tensor and type(target["boxes"]) is torch.Tensor
        assert (image - image0).abs().max() <= 0.5 / 255 + 1e-6  # 8 bits per channel
        assert set(target) == {"boxes", "labels", "image_id", "iscrowd", "area"}
        for key in ("boxes", "labels", "iscrowd", "area"):
            assert target[key].dtype == target0[key].dtype, key
            assert torch.equal(target[key], target0[key]), key
        assert target["image_id"].dtype == torch.int64 and int(target["image_id"]) == i + 1
        counts.append(len(target0["labels"]))
    assert 0 in counts and max(counts) > 1  # an empty scene and a crowded one


def test_export_of_a_coco_dataset_keeps_its_ids_and_names(tmp_path):
    data, sizes = small_file()
    path = write_folder(tmp_path / "one", data, sizes)
    first = CocoDataset(tmp_path / "one" / "images", path)
    path2 = export_coco(first, tmp_path / "two")
    second = CocoDataset(tmp_path / "two" / "images", path2)
    assert second.category_ids == first.category_ids == [3, 7, 90]
    assert second.classes == first.classes == ["three", "seven", "ninety"]
    assert second.image_ids == first.image_ids == [5, 11, 40]
    for i in range(len(first)):
        (image, target), (image2, target2) = first[i], second[i]
        assert torch.equal(image, image2)  # 8-bit pixels survive exactly
        for key in target:
            assert torch.equal(target[key], target2[key]), key
    # and the annotations written are the file's own
    written = json.loads(path2.read_text())
    ann = next(a for a in written["annotations"] if a["image_id"] == 11 and a["iscrowd"])
    assert ann["category_id"] == 3 and ann["bbox"] == [0.5, 0.0, 4.25, 3.0]


def test_pycocotools_reads_the_export(tmp_path, capsys):
    shapes = ShapesDataset(5, image_size=32, seed=4)
    coco = COCO(str(export_coco(shapes, tmp_path)))
    capsys.readouterr()
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5]
    assert [coco.cats[k]["name"] for k in sorted(coco.cats)] == shapes.classes
    for i in range(len(shapes)):
        _, target = shapes[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i + 1]))
        assert len(anns) == len(target["boxes"])
        xywh = box_convert(target["boxes"], "xyxy", "xywh")
        assert [a["bbox"] for a in anns] == xywh.tolist()
        assert [a["area"] for a in anns] == target["area"].tolist()
        assert [a["category_id"] for a in anns] == target["labels"].tolist()
        image = coco.imgs[i + 1]
        assert (image["height"], image["width"]) == (32, 32)
        assert Image.open(tmp_path / "images" / image["file_name"]).size == (32, 32)
    assert min(coco.anns) == 1  # pycocotools reads annotation id 0 as "no match"


def test_non_contiguous_ids_grey_rgba_empty_and_crowd(tmp_path, capsys):
    data, sizes = small_file()
    path = write_folder(tmp_path, data, sizes)
    ds = CocoDataset(tmp_path / "images", path)
    assert ds.category_ids == [3, 7, 90] and ds.classes == ["three", "seven", "ninety"]
    assert ds.num_classes == 3 and ds.image_ids == [5, 11, 40] and len(ds) == 3
    images = {int(ds[i][1]["image_id"]): ds[i] for i in range(len(ds))}

    image, target = images[11]  # RGB, 30 high and 20 wide; a crowd box
    assert image.shape == (3, 30, 20) and image.dtype == torch.float32
    assert target["labels"].tolist() == [2, 0]  # category ids 90 and 3
    assert [ds.category_ids[k] for k in target["labels"]] == [90, 3]
    assert target["boxes"].tolist() == [[1, 2, 11, 22], [0.5, 0, 4.75, 3]]
    assert target["iscrowd"].tolist() == [0, 1] and target["area"].tolist() == [150.5, 12.75]
    pixels = np.asarray(Image.open(tmp_path / "images" / "a.png"))
    assert torch.equal(image, torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255)

    image, target = images[5]  # grey; an annotation without 'area' and 'iscrowd'
    assert image.shape == (3, 24, 32)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    assert target["labels"].tolist() == [1]
    assert target["iscrowd"].tolist() == [0] and target["area"].tolist() == [160.0]

    image, target = images[40]  # RGBA, no annotations
    assert image.shape == (3, 16, 16) and image.min() >= 0 and image.max() <= 1
    rgba = np.asarray(Image.open(tmp_path / "images" / "c.png"))
    assert torch.equal(image, torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    for key in ("labels", "iscrowd", "area"):
        assert target[key].shape == (0,)
    assert target["labels"].dtype == target["iscrowd"].dtype == torch.int64

    # pycocotools reads the same file and agrees on what is in it
    reference = COCO(str(path))
    capsys.readouterr()
    assert sorted(reference.getCatIds()) == ds.category_ids
    for image_id, (_, target) in images.items():
        assert len(reference.getAnnIds(imgIds=[image_id])) == len(target["labels"])


def test_indexing_repr_and_pickling(tmp_path):
    data, sizes = small_file()
    ds = CocoDataset(tmp_path / "images", write_folder(tmp_path, data, sizes))
    assert torch.equal(ds[-1][0], ds[2][0])
    with pytest.raises(IndexError):
        ds[3]
    assert "3 images" in repr(ds)
    copy = pickle.loads(pickle.dumps(ds))  # DataLoader workers pickle the dataset
    assert torch.equal(copy[1][1]["boxes"], ds[1][1]["boxes"])


# --- bad input ------------------------------------------------------------------------


def drop_image_file(data, tmp_path):
    (tmp_path / "images" / "b.png").unlink()


BAD_FILES = [
    # (what to change, error type, record named, words in the message)
    (lambda d, p: d["annotations"][1].update(image_id=99), ValueError,
     "annotations[1] (id 2)", "image_id 99"),
    (lambda d, p: d["annotations"][2].update(category_id=4), ValueError,
     "annotations[2] (id 3)", "category_id 4"),
    (lambda d, p: d["annotations"][0].update(bbox=[1, 2, -3, 4]), ValueError,
     "annotations[0] (id 1)", "negative width"),
    (lambda d, p: d["annotations"][0].update(bbox=[1, 2, 3]), ValueError,
     "annotations[0] (id 1)", "bbox"),
    (lambda d, p: d["annotations"][0].update(iscrowd=2), ValueError,
     "annotations[0] (id 1)", "iscrowd"),
    (lambda d, p: d["annotations"][2].update(id=1), ValueError,
     "annotations[2] (id 1)", "not unique"),
    (lambda d, p: d["images"][1].update(width=-32), ValueError,
     "images[1] (id 5)", "width"),
    (lambda d, p: d["images"][2].update(id=11), ValueError,
     "images[2] (id 11)", "not unique"),
    (lambda d, p: d["images"][0].pop("file_name"), ValueError,
     "images[0] (id 11)", "file_name"),
    (lambda d, p: d["categories"][0].pop("id"), ValueError,
     "categories[0]", "'id'"),
    (drop_image_file, FileNotFoundError, "images[1] (id 5)", "b.png"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "error", "record", "words"), BAD_FILES)
def test_bad_file_names_the_file_and_the_record(tmp_path, change, error, record, words):
    data, sizes = small_file()
    path = write_folder(tmp_path, data, sizes)
    change(data, tmp_path)
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(error) as info:
        CocoDataset(tmp_path / "images", path)
    message = str(info.value)
    assert str(path) in message and record in message and words in message, message


def test_unreadable_and_missing_files(tmp_path):
    data, sizes = small_file()
    path = write_folder(tmp_path, data, sizes)
    path.write_text(json.dumps(data)[:-20], encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}: not a readable JSON")):
        CocoDataset(tmp_path / "images", path)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object"):
        CocoDataset(tmp_path / "images", path)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        CocoDataset(tmp_path / "images", tmp_path / "nothing.json")
    with pytest.raises(FileNotFoundError, match="no_images"):
        CocoDataset(tmp_path / "no_images", path)


def test_image_files_that_do_not_match_their_record(tmp_path):
    data, sizes = small_file()
    path = write_folder(tmp_path, data, sizes)
    ds = CocoDataset(tmp_path / "images", path)
    save_image(tmp_path / "images" / "a.png", 20, 30)  # width and height swapped
    with pytest.raises(
        ValueError, match=r"images\[0\] \(id 11\).*width 30 and height 20.* 20 and 30"
    ):
        ds[1]
    (tmp_path / "images" / "b.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"images\[1\] \(id 5\): cannot read image file"):
        ds[0]
    (tmp_path / "images" / "c.png").unlink()  # deleted after the check
    with pytest.raises(FileNotFoundError, match=r"images\[2\] \(id 40\).*c.png"):
        ds[2]


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ((torch.full((3, 8, 8), 1.5), {"boxes": torch.zeros(0, 4)}), "image must lie"),
        ((torch.zeros(8, 8), {"boxes": torch.zeros(0, 4)}), r"\[3, H, W\]"),
        ((torch.zeros(3, 8, 8), {"labels": torch.tensor([0])}), "'boxes' and 'labels'"),
        ((torch.zeros(3, 8, 8), {"boxes": torch.tensor([[4.0, 0, 2, 2]]),
                                 "labels": torch.tensor([0])}), "inverted"),
        ((torch.zeros(3, 8, 8), {"boxes": torch.tensor([[0.0, 0, 2, 2]]),
                                 "labels": torch.tensor([3])}), "len.dataset.classes."),
    ],
)  # fmt: skip
def test_export_rejects_bad_items(tmp_path, item, words):
    class One(list):
        classes = ["a", "b", "c"]

    item[1].setdefault("labels", torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"dataset\[0\]"):
        export_coco(One([item]), tmp_path)
    with pytest.raises(ValueError, match=words):
        export_coco(One([item]), tmp_path)


def test_export_without_classes_and_with_repeated_ids(tmp_path):
    target = {"boxes": torch.tensor([[1.0, 1, 3, 4]]), "labels": torch.tensor([2])}
    path = export_coco([(torch.zeros(3, 6, 5), target)], tmp_path)
    written = json.loads(path.read_text())
    assert [c["name"] for c in written["categories"]] == ["0", "1", "2"]
    assert written["annotations"][0]["bbox"] == [1.0, 1.0, 2.0, 3.0]
    assert written["images"] == [{"id": 1, "file_name": "000001.png", "width": 5, "height": 6}]
    twice = [(torch.zeros(3, 6, 5), {**target, "image_id": torch.tensor(4)})] * 2
    with pytest.raises(ValueError, match=r"dataset\[1\].*image_id.* 4 is not unique"):
        export_coco(twice, tmp_path)


# --- converters -----------------------------------------------------------------------


def test_converters_read_whole():
    for fn in (coco_to_voc, voc_to_coco, coco_to_yolo, yolo_to_coco, detection_transforms):
        assert_reads_whole(fn)


def test_voc_by_hand():
    # a box over the 10 pixels of columns 0..9 and the row 4 (0-based)
    coco = torch.tensor([[0.0, 4.0, 10.0, 1.0]])
    voc = coco_to_voc(coco)
    assert voc.tolist() == [[1.0, 5.0, 10.0, 5.0]]  # 1-based, last pixel included
    width = voc[:, 2] - voc[:, 0] + 1  # how the VOC devkit measures a box
    assert width.tolist() == [10.0]
    assert torch.equal(voc_to_coco(voc), coco)
    with pytest.raises(ValueError, match="xmax >= xmin - 1"):
        voc_to_coco(torch.tensor([[5.0, 5, 3, 8]]))
    with pytest.raises(ValueError, match="boxes"):
        coco_to_voc(torch.tensor([[0.0, 0, -1, 1]]))


def test_yolo_by_hand():
    coco = torch.tensor([[50.0, 25.0, 100.0, 50.0]])  # in an image 100 high, 200 wide
    yolo = coco_to_yolo(coco, (100, 200))
    assert yolo.tolist() == [[0.5, 0.5, 0.5, 0.5]]
    assert coco_to_yolo(coco, (200, 100)).tolist() == [[1.0, 0.25, 1.0, 0.25]]
    assert torch.equal(yolo_to_coco(yolo, (100, 200)), coco)
    with pytest.raises(ValueError, match="image_size"):
        coco_to_yolo(coco, (0, 200))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(rows=box_lists(), size=st.tuples(st.integers(1, 900), st.integers(1, 900)))
def test_converters_round_trip(dtype, rows, size):
    coco = box_convert(as_boxes(rows, dtype), "xyxy", "xywh")
    voc = coco_to_voc(coco)
    assert voc.dtype == dtype
    assert torch.allclose(voc_to_coco(voc), coco, atol=1e-3 if dtype == torch.float32 else 1e-9)
    integer = (coco == coco.round()).all(dim=1)
    assert torch.equal(voc_to_coco(voc)[integer], coco[integer])  # whole pixels: exact
    back = yolo_to_coco(coco_to_yolo(coco, size), size)
    assert back.dtype == dtype
    assert torch.allclose(back, coco, atol=1e-3 if dtype == torch.float32 else 1e-9)


@settings(max_examples=30)
@given(rows=box_lists(max_size=6), labels=st.lists(st.integers(0, 79), min_size=6, max_size=6))
def test_yolo_files_round_trip(tmp_path_factory, rows, labels):
    size = (121, 517)  # (height, width); boxes inside it
    boxes = as_boxes(rows, torch.float64).clamp(min=0)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(max=size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(max=size[0])
    target = {
        "boxes": boxes.float(),
        "labels": torch.tensor(labels[: len(boxes)], dtype=torch.int64),
    }
    path = tmp_path_factory.mktemp("yolo") / "image.txt"
    write_yolo_labels(path, target, size)
    lines = path.read_text().splitlines()
    assert len(lines) == len(boxes)
    assert all(re.fullmatch(r"\d+( [01]\.\d{6}){4}", line) for line in lines)
    back = read_yolo_labels(path, size)
    assert torch.equal(back["labels"], target["labels"])
    assert back["boxes"].dtype == torch.float32
    assert torch.allclose(back["boxes"], target["boxes"], atol=1e-3)  # 6 decimals


def test_yolo_files_by_hand_and_bad_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("3 0.5 0.5 0.5 0.5\n\n0 0.1 0.2 0.2 0.4\n")
    target = read_yolo_labels(path, (100, 200))
    assert target["labels"].tolist() == [3, 0]
    assert target["boxes"].tolist() == [[50, 25, 150, 75], [0, 0, 40, 40]]
    path.write_text("")
    empty = read_yolo_labels(path, (100, 200))
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    for bad in ("0 12 30 40 20", "0 0.5 0.5 0.5", "a 0.5 0.5 0.5 0.5", "-1 0.5 0.5 0.1 0.1",
                "0 0.5 nan 0.1 0.1", "1.0 0.5 0.5 0.1 0.1"):  # fmt: skip
        path.write_text(f"0 0.5 0.5 0.1 0.1\n{bad}\n")
        with pytest.raises(ValueError, match=re.escape(f"{path}, line 2")):
            read_yolo_labels(path, (100, 200))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_yolo_labels(tmp_path / "missing.txt", (100, 200))
    outside = {"boxes": torch.tensor([[150.0, 0, 210, 10]]), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match="inside the image"):
        write_yolo_labels(path, outside, (100, 200))


# --- augmentation ---------------------------------------------------------------------


def rectangle(height: int, width: int, box: list[int]) -> tuple[tv_tensors.Image, dict]:
    """A black uint8 image with one filled white rectangle and its tight box."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[:, box[1] : box[3], box[0] : box[2]] = 255
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([box], dtype=torch.float32), format="XYXY", canvas_size=(height, width)
    )
    return tv_tensors.Image(image), {"boxes": boxes, "labels": torch.tensor([0])}


def test_flips_keep_the_box_tight():
    image, target = rectangle(40, 60, [7, 5, 31, 22])
    for flip in (v2.RandomHorizontalFlip(p=1.0), v2.RandomVerticalFlip(p=1.0)):
        out, out_target = flip(image, target)
        assert out_target["boxes"].tolist() == [extent(out.float() / 255)]


@pytest.mark.parametrize("seed", range(12))
def test_training_transforms_keep_the_box_tight(seed):
    torch.manual_seed(seed)
    image, target = rectangle(40, 60, [7, 5, 31, 22])
    transform = detection_transforms(train=True, size=(48, 64))
    out, out_target = transform(image, target)
    assert out.dtype == torch.float32 and out.shape == (3, 48, 64)
    boxes = out_target["boxes"]
    assert len(boxes) == len(out_target["labels"]) <= 1
    if len(boxes):  # a crop may leave the rectangle out
        # resizing blurs the edges: the half-bright pixels lie within a pixel of the box
        assert torch.allclose(boxes[0], torch.tensor(extent(out)), atol=1.0)


def test_eval_transforms_only_resize():
    image, target = rectangle(40, 60, [8, 4, 32, 24])
    out, out_target = detection_transforms(train=False, size=(20, 30))(image, target)
    assert out.shape == (3, 20, 30) and out.dtype == torch.float32
    assert out_target["boxes"].tolist() == [[4, 2, 16, 12]]
    assert out_target["boxes"].tolist() == [extent(out)]
    with pytest.raises(ValueError, match="zoom_out"):
        detection_transforms(train=True, zoom_out=0.5)


def test_coco_dataset_transforms_move_count_and_rescale(tmp_path):
    shapes = ShapesDataset(3, image_size=32, seed=5, max_objects=3)
    path = export_coco(shapes, tmp_path)
    plain = CocoDataset(tmp_path / "images", path)
    doubled = CocoDataset(tmp_path / "images", path, transforms=v2.Resize((64, 64)))
    for i in range(len(shapes)):
        (_, target), (image2, target2) = plain[i], doubled[i]
        assert image2.shape == (3, 64, 64) and image2.dtype == torch.float32
        assert type(image2) is torch.Tensor and type(target2["boxes"]) is torch.Tensor
        assert torch.equal(target2["boxes"], 2 * target["boxes"])
        assert torch.equal(target2["area"], 4 * target["area"])
        assert torch.equal(target2["labels"], target["labels"])
    assert doubled.removed_boxes == 0
    # a 4-pixel crop at the top-left corner keeps only boxes that reach into it
    cropped = CocoDataset(tmp_path / "images", path, transforms=v2.CenterCrop(4))
    expected = 0
    for i in range(len(shapes)):
        _, target = plain[i]
        centre = (target["boxes"][:, :2] < 18) & (target["boxes"][:, 2:] > 14)
        inside = centre.all(dim=1)
        _, target2 = cropped[i]
        assert torch.equal(target2["labels"], target["labels"][inside])
        assert torch.equal(target2["iscrowd"], target["iscrowd"][inside])
        assert len(target2["area"]) == len(target2["boxes"]) == int(inside.sum())
        expected += int((~inside).sum())
    assert expected > 0 and cropped.removed_boxes == expected


def test_records_stay_aligned_through_a_users_sanitize(tmp_path):
    """A pipeline that removes boxes itself: labels, iscrowd and area follow its boxes."""
    data, sizes = small_file()
    path = write_folder(tmp_path, data, sizes)
    crop = v2.Compose([v2.CenterCrop((10, 20)), v2.SanitizeBoundingBoxes()])
    ds = CocoDataset(tmp_path / "images", path, transforms=crop)
    image, target = ds[1]  # image id 11, 30 high: the crop keeps rows 10 to 20
    assert image.shape == (3, 10, 20)
    assert target["boxes"].tolist() == [[1, 0, 11, 10]]  # the crowd box at the top is gone
    assert target["labels"].tolist() == [2] and target["iscrowd"].tolist() == [0]
    assert target["area"].tolist() == [150.5 / 2]  # the box kept half of its area
    assert int(target["image_id"]) == 11 and ds.removed_boxes == 1


def test_coco_dataset_with_training_transforms(tmp_path):
    shapes = ShapesDataset(8, image_size=32, seed=6, max_objects=4)
    path = export_coco(shapes, tmp_path)
    torch.manual_seed(0)
    ds = CocoDataset(tmp_path / "images", path, detection_transforms(True, (32, 32)))
    kept = 0
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
        n = len(target["boxes"])
        assert all(len(target[k]) == n for k in ("labels", "iscrowd", "area"))
        sides = target["boxes"][:, 2:] - target["boxes"][:, :2]
        assert (sides >= 1).all()
        kept += n
    total = sum(len(shapes[i][1]["labels"]) for i in range(len(shapes)))
    assert ds.removed_boxes == total - kept > 0
