"""Datasets and joint transforms on the real shared samples and on synthetic images."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from torchvision import tv_tensors

from training.datasets.coco import CocoDetection
from training.datasets.imagenet import ImageNetFolder, ImageNetList
from training.datasets.segmentation import ADE20K, CamVid, SegmentationFolder
from training.transforms import SanitizeBoxes, collate, eval_transforms, train_transforms


@pytest.fixture(scope="module")
def coco(shared_data):
    root = shared_data / "coco128"
    return CocoDetection(root / "images", root / "annotations" / "instances.json")


def test_coco_targets_match_json(coco, shared_data):
    data = json.loads((shared_data / "coco128/annotations/instances.json").read_text())
    cat_ids = sorted(c["id"] for c in data["categories"])
    assert len(coco.classes) == 80 and coco.tasks == {"detection"}
    assert [coco.contiguous_to_cat_id[i] for i in range(80)] == cat_ids
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert coco.classes == [names[c] for c in cat_ids]

    images = {im["id"]: im for im in data["images"]}
    crowd_seen = empty_seen = 0
    for index, image_id in enumerate(coco.ids):
        image, target = coco[index]
        info = images[image_id]
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
        assert tuple(image.shape) == (3, info["height"], info["width"])
        assert target["image_id"] == image_id
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64

        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        crowd_seen += sum(a["iscrowd"] for a in anns)
        anns = [a for a in anns if not a["iscrowd"]]
        empty_seen += not anns
        expected = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        expected[:, 2:] += expected[:, :2]
        expected[:, 0::2] = expected[:, 0::2].clip(0, info["width"])
        expected[:, 1::2] = expected[:, 1::2].clip(0, info["height"])
        np.testing.assert_allclose(target["boxes"].numpy(), expected, atol=1e-3)
        labels = [cat_ids.index(a["category_id"]) for a in anns]
        assert target["labels"].tolist() == labels
    # the sample does hold crowd boxes and unannotated images, so both rules were exercised
    assert crowd_seen > 0 and empty_seen > 0
    # crowd regions remain available to the evaluator
    assert sum(a["iscrowd"] for a in coco.coco.dataset["annotations"]) == crowd_seen


def _raw_mask(path):
    with PILImage.open(path) as f:
        return np.asarray(f).astype(np.int64)


def _check_ids_survive(dataset, indices, expected_raw_to_id):
    for index in indices:
        image, target = dataset[index]
        mask = target["mask"]
        assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
        assert mask.shape == image.shape[-2:]
        raw = _raw_mask(dataset.masks[index])
        np.testing.assert_array_equal(mask.numpy(), expected_raw_to_id(raw))
        ids = set(mask.unique().tolist())
        for seed in range(3):
            torch.manual_seed(seed)
            for transform in (train_transforms(320, resize_side="short"), eval_transforms(257)):
                out_image, out = transform(image, target)
                assert out["mask"].shape == out_image.shape[-2:]
                assert set(out["mask"].unique().tolist()) <= ids | {255}


def test_ade20k_ids_survive_augmentation(shared_data):
    dataset = ADE20K(shared_data / "ade20k", split="validation")  # flat sample layout
    assert len(dataset) == 3 and len(dataset.classes) == 150
    assert dataset.tasks == {"segmentation"}
    _check_ids_survive(dataset, range(3), lambda raw: np.where(raw == 0, 255, raw - 1))


def test_camvid_ids_survive_augmentation(shared_data):
    dataset = CamVid(shared_data / "camvid", split="train")
    assert len(dataset) == 367 and len(dataset.classes) == 11
    _check_ids_survive(dataset, [0, 100], lambda raw: np.where(raw == 11, 255, raw))


def _rectangles_sample(height=240, width=320):
    """Two filled rectangles; mask value = label + 1 inside each, 0 elsewhere."""
    rects = [(40, 30, 140, 110, 0), (200, 120, 300, 220, 1)]  # x1, y1, x2, y2, label
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    mask = torch.zeros(height, width, dtype=torch.int64)
    for x1, y1, x2, y2, label in rects:
        image[:, y1:y2, x1:x2] = 255
        mask[y1:y2, x1:x2] = label + 1
    boxes = tv_tensors.BoundingBoxes(
        [r[:4] for r in rects], format="XYXY", canvas_size=(height, width), dtype=torch.float32
    )
    labels = torch.tensor([r[4] for r in rects])
    return tv_tensors.Image(image), {
        "boxes": boxes,
        "labels": labels,
        "mask": tv_tensors.Mask(mask),
    }


@pytest.mark.parametrize("resize_side", ["long", "short"])
def test_boxes_follow_the_image(resize_side):
    image, target = _rectangles_sample()
    transform = train_transforms((160, 192), resize_side=resize_side, color_jitter=None)
    kept = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out = transform(image, target)
        assert out_image.shape[-2:] == (160, 192)
        assert len(out["boxes"]) == len(out["labels"])
        for box, label in zip(out["boxes"], out["labels"]):
            inside = out["mask"] == label + 1
            ys, xs = torch.nonzero(inside, as_tuple=True)
            # the box is the bounding box of its rectangle's visible pixels (±resize rounding)
            drawn = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            torch.testing.assert_close(box, drawn, atol=1.5, rtol=0)
            # and the image is white there
            x1, y1, x2, y2 = box.round().int().tolist()
            if x2 - x1 > 3 and y2 - y1 > 3:
                assert out_image[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].float().mean() > 200
            kept += 1
        # a rectangle still visible (more than a sliver) keeps its box
        for label in (0, 1):
            ys, xs = torch.nonzero(out["mask"] == label + 1, as_tuple=True)
            if len(xs) and xs.max() - xs.min() >= 2 and ys.max() - ys.min() >= 2:
                assert label in out["labels"].tolist()
    assert kept > 0


def test_sanitize_keeps_semantic_mask_with_as_many_rows_as_boxes():
    # torchvision would index a [H, W] Mask with the per-box keep flags when H == N boxes
    boxes = tv_tensors.BoundingBoxes(
        [[0, 0, 2, 2], [1, 1, 1, 1]], format="XYXY", canvas_size=(2, 4), dtype=torch.float32
    )
    target = {
        "boxes": boxes,
        "labels": torch.tensor([3, 4]),
        "mask": tv_tensors.Mask(torch.ones(2, 4, dtype=torch.int64)),
        "label": torch.tensor(7),
    }
    _, out = SanitizeBoxes()(tv_tensors.Image(torch.zeros(3, 2, 4, dtype=torch.uint8)), target)
    assert out["labels"].tolist() == [3] and out["boxes"].shape == (1, 4)
    assert out["mask"].shape == (2, 4) and out["label"].item() == 7


def test_transforms_without_boxes_and_collate():
    image = tv_tensors.Image(torch.full((3, 50, 70), 9, dtype=torch.uint8))
    torch.manual_seed(0)
    out_image, out = train_transforms(64)(image, {"label": torch.tensor(3)})
    assert out_image.shape == (3, 64, 64) and out == {"label": torch.tensor(3)}

    seg = (image, {"mask": tv_tensors.Mask(torch.zeros(50, 70, dtype=torch.int64))})
    det_image = tv_tensors.Image(torch.ones(3, 33, 40, dtype=torch.uint8))
    det_boxes = tv_tensors.BoundingBoxes(
        [[1, 2, 30, 31]], format="XYXY", canvas_size=(33, 40), dtype=torch.float32
    )
    det = (det_image, {"boxes": det_boxes, "labels": torch.tensor([5])})
    images, targets = collate([seg, det])
    assert images.shape == (2, 3, 64, 96) and images.dtype == torch.uint8
    assert type(images) is torch.Tensor
    assert images[1, :, 33:].eq(0).all() and images[1, :, :33, :40].eq(1).all()
    mask = targets[0]["mask"]
    assert mask.shape == (64, 96) and mask[50:].eq(255).all() and mask[:, 70:].eq(255).all()
    assert mask[:50, :70].eq(0).all()
    assert targets[1]["boxes"].tolist() == [[1, 2, 30, 31]]
    assert targets[1]["boxes"].canvas_size == (64, 96)


def test_imagenet_labels_match_tsv(shared_data):
    root = shared_data / "imagenet"
    dataset = ImageNetList(root / "images", root / "labels.tsv")
    with open(root / "labels.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(dataset) == len(rows) == 20 and dataset.tasks == {"classification"}
    for index, row in enumerate(rows):
        path, label = dataset.samples[index]
        assert path.name == row["file"] and label == int(row["class_index"])
        # the class order is the torchvision one: the file names carry the class name
        assert dataset.classes[label].replace(" ", "_").lower() in row["file"].lower()
    image, target = dataset[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert target["label"].dtype == torch.int64 and target["label"].ndim == 0


def _write_image(path, height, width, value=0, mode="RGB"):
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    PILImage.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path)


def test_imagenet_folder_and_list_formats(tmp_path):
    for wnid in ("n02", "n01"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        _write_image(tmp_path / "train" / wnid / f"{wnid}_a.JPEG", 8, 8)
    dataset = ImageNetFolder(tmp_path / "train")
    assert dataset.classes == ["n01", "n02"]
    assert [(p.name, y) for p, y in dataset.samples] == [("n01_a.JPEG", 0), ("n02_a.JPEG", 1)]

    (tmp_path / "val").mkdir()
    _write_image(tmp_path / "val" / "v1.JPEG", 8, 8)
    (tmp_path / "val.txt").write_text("v1.JPEG 65\n")  # Caffe style, no header
    assert ImageNetList(tmp_path / "val", tmp_path / "val.txt").samples[0][1] == 65
    (tmp_path / "bad.txt").write_text("v1.JPEG 1000\n")
    with pytest.raises(ValueError, match="bad.txt"):
        ImageNetList(tmp_path / "val", tmp_path / "bad.txt")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CamVid(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="instances.json"):
        CocoDetection(tmp_path, tmp_path / "instances.json")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _write_image(tmp_path / "images" / "a.jpg", 10, 12)
    with pytest.raises(FileNotFoundError, match="a.png"):
        SegmentationFolder(tmp_path / "images", tmp_path / "masks", ["x", "y"])
    _write_image(tmp_path / "masks" / "a.png", 10, 11, mode="L")
    dataset = SegmentationFolder(tmp_path / "images", tmp_path / "masks", ["x", "y"])
    with pytest.raises(ValueError, match="a.png"):
        dataset[0]
    _write_image(tmp_path / "masks" / "a.png", 10, 12, value=7, mode="L")
    with pytest.raises(ValueError, match=r"a.png.*\[7\]"):
        dataset[0]


def test_ade20k_challenge_layout(tmp_path):
    for split in ("training", "validation"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "annotations" / split).mkdir(parents=True)
    _write_image(tmp_path / "images/validation/ADE_val_1.jpg", 6, 5)
    _write_image(tmp_path / "annotations/validation/ADE_val_1.png", 6, 5, value=150, mode="L")
    dataset = ADE20K(tmp_path, split="val")
    assert [p.name for p in dataset.images] == ["ADE_val_1.jpg"]
    assert dataset[0][1]["mask"].unique().tolist() == [149]
    assert len(ADE20K(tmp_path, split="training")) == 0
