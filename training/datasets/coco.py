"""COCO-format detection: any image folder with a COCO instances json (COCO itself included)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors

from training.datasets.folder import read_image, require_dir


class CocoDetection(torch.utils.data.Dataset):
    """``(image, {"boxes", "labels", "image_id"})`` per image of ``ann_file``.

    Category ids are mapped to contiguous 0-based labels in ascending id order (COCO's 80
    categories → 0..79); ``contiguous_to_cat_id`` maps back for writing results json. Crowd
    annotations and boxes with no area inside the image are left out of the targets; the crowd
    regions stay in ``self.coco`` for evaluation. Images without annotations are kept, with
    empty boxes.
    """

    tasks = frozenset({"detection"})

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        transforms: Callable | None = None,
    ) -> None:
        self.image_dir = require_dir(Path(image_dir), "COCO image folder")
        ann_file = Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints timings
            self.coco = COCO(str(ann_file))
        self.transforms = transforms
        self.ids = sorted(self.coco.imgs)
        cat_ids = sorted(self.coco.cats)
        self.classes = [self.coco.cats[c]["name"] for c in cat_ids]
        self.contiguous_to_cat_id = dict(enumerate(cat_ids))
        self.cat_id_to_contiguous = {c: i for i, c in enumerate(cat_ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        image = read_image(path)
        height, width = image.shape[-2:]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise ValueError(
                f"{path}: image is {height}x{width} but the json says "
                f"{info['height']}x{info['width']}"
            )

        anns = self.coco.imgToAnns.get(image_id, [])
        anns = [a for a in anns if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh → xyxy
        boxes[:, 0::2].clamp_(0, width)
        boxes[:, 1::2].clamp_(0, height)
        labels = torch.tensor(
            [self.cat_id_to_contiguous[a["category_id"]] for a in anns], dtype=torch.int64
        )
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                boxes[keep], format="XYXY", canvas_size=(height, width)
            ),
            "labels": labels[keep],
            "image_id": image_id,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
