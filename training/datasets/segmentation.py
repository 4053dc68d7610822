"""Semantic segmentation: an image folder with class-id PNG masks, and ADE20K / CamVid layouts.

Masks are read with PIL so that palette PNGs give their indices, not colours. In the target
the ids are 0..C-1 and 255 = ignore (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from torchvision import tv_tensors

from pvt_mtl_ros.conventions import ADE20K_CLASSES, CAMVID_CLASSES, IGNORE_INDEX
from training.datasets.folder import list_images, read_image, require_dir


class SegmentationFolder(torch.utils.data.Dataset):
    """``(image, {"mask"})`` for every image in ``image_dir`` with a same-stem mask PNG.

    A stored mask value ``v`` becomes class ``v - label_offset``; ``ignore_value`` becomes 255.
    Any other value outside ``0..len(classes)-1`` is an error (it means the class list does not
    fit the data), reported with the file.
    """

    tasks = frozenset({"segmentation"})

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path,
        classes: Sequence[str],
        ignore_value: int = IGNORE_INDEX,
        label_offset: int = 0,
        transforms: Callable | None = None,
        mask_suffix: str = ".png",
    ) -> None:
        if len(classes) > IGNORE_INDEX:
            raise ValueError(f"at most {IGNORE_INDEX} classes fit beside ignore id {IGNORE_INDEX}")
        self.classes = list(classes)
        self.ignore_value = ignore_value
        self.label_offset = label_offset
        self.transforms = transforms
        self.images = list_images(Path(image_dir))
        mask_dir = require_dir(Path(mask_dir), "mask folder")
        self.masks = [mask_dir / (p.stem + mask_suffix) for p in self.images]
        for mask in self.masks:
            if not mask.is_file():
                raise FileNotFoundError(f"mask file not found: {mask}")

    def __len__(self) -> int:
        return len(self.images)

    def load_mask(self, path: Path) -> torch.Tensor:
        with PILImage.open(path) as mask_file:
            raw = np.asarray(mask_file).astype(np.int64)
        if raw.ndim != 2:
            raise ValueError(f"{path}: expected a single-channel class-id mask, got {raw.shape}")
        ignore = raw == self.ignore_value
        ids = raw - self.label_offset
        bad = ~ignore & ((ids < 0) | (ids >= len(self.classes)))
        if bad.any():
            raise ValueError(
                f"{path}: values {np.unique(raw[bad])[:10].tolist()} are neither a class "
                f"(offset {self.label_offset}, {len(self.classes)} classes) nor the ignore "
                f"value {self.ignore_value}"
            )
        ids[ignore] = IGNORE_INDEX
        return torch.from_numpy(ids)

    def __getitem__(self, index: int):
        image = read_image(self.images[index])
        mask = self.load_mask(self.masks[index])
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f"{self.masks[index]}: mask is {tuple(mask.shape)} but its image is "
                f"{tuple(image.shape[-2:])}"
            )
        target = {"mask": tv_tensors.Mask(mask)}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


class ADE20K(SegmentationFolder):
    """ADEChallengeData2016: ``images/<split>/*.jpg`` + ``annotations/<split>/*.png``.

    Also reads the flat layout ``images/*.jpg`` + ``annotations/*.png`` (the shared sample),
    which has no split: ``split`` is then not used. 0 = ignore, 1..150 → 0..149.
    """

    SPLITS = {"train": "training", "val": "validation"}

    def __init__(
        self, root: str | Path, split: str = "training", transforms: Callable | None = None
    ) -> None:
        split = self.SPLITS.get(split, split)
        if split not in ("training", "validation"):
            raise ValueError(f"unknown ADE20K split {split!r}: training/train or validation/val")
        root = Path(root)
        image_dir, mask_dir = root / "images" / split, root / "annotations" / split
        if not image_dir.is_dir() and (root / "images").is_dir() and list_images(root / "images"):
            image_dir, mask_dir = root / "images", root / "annotations"
        super().__init__(
            image_dir,
            mask_dir,
            ADE20K_CLASSES,
            ignore_value=0,
            label_offset=1,
            transforms=transforms,
        )


class CamVid(SegmentationFolder):
    """CamVid (SegNet tutorial, 11 classes): ``<split>/images/*`` + ``<split>/labels/*.png``;
    11 (Unlabelled) = ignore."""

    def __init__(
        self, root: str | Path, split: str = "train", transforms: Callable | None = None
    ) -> None:
        root = Path(root)
        images, labels = root / split / "images", root / split / "labels"
        super().__init__(images, labels, CAMVID_CLASSES, ignore_value=11, transforms=transforms)
