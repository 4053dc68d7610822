"""Joint image/target augmentation (torchvision.transforms.v2) and batch collation.

The v2 transforms move ``BoundingBoxes`` and ``Mask`` with the image (masks with nearest
neighbour, so no new class ids appear) and pass plain tensors and ints (``labels``, ``label``,
``image_id``) through untouched, so one pipeline serves every task mix a target can carry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from pvt_mtl_ros.conventions import IGNORE_INDEX

# Padding fills: black image, ignored mask pixels.
FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX, "others": 0}


class SanitizeBoxes:
    """``v2.SanitizeBoundingBoxes`` for targets that may lack boxes or carry a semantic mask.

    Drops boxes (and their ``labels``) that a crop left empty or smaller than ``min_size``.
    Targets without ``boxes`` pass through. The semantic mask is kept out of the call because
    torchvision also filters any ``Mask`` by the box keep-mask when the first dimensions
    match, which would cut rows out of an ``[H, W]`` mask with as many rows as boxes.
    """

    def __init__(self, min_size: float = 1.0) -> None:
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=min_size, labels_getter=_get_labels)

    def __call__(self, image: Any, target: dict) -> tuple[Any, dict]:
        if "boxes" not in target:
            return image, target
        rest = {k: v for k, v in target.items() if k != "mask"}
        image, rest = self.sanitize(image, rest)
        if "mask" in target:
            rest["mask"] = target["mask"]
        return image, rest

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_size={self.sanitize.min_size})"


def _get_labels(inputs: tuple[Any, dict]) -> torch.Tensor:
    # Explicit: the default heuristic would fall back to the classification "label" key.
    return inputs[1]["labels"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def train_transforms(
    size: int | Sequence[int] = 512,
    scale_range: tuple[float, float] = (0.5, 2.0),
    resize_side: str = "long",
    hflip_prob: float = 0.5,
    color_jitter: tuple[float, float, float, float] | None = (0.4, 0.4, 0.4, 0.05),
    min_box_size: float = 1.0,
) -> v2.Compose:
    """Scale jitter → random crop to ``size`` (padded where smaller) → flip → colour jitter →
    drop boxes the crop emptied.

    ``size`` is the output ``(h, w)`` (or an int for a square). ``resize_side="long"`` scales
    the image to fit ``size`` times a random factor in ``scale_range`` (LSJ, ``v2.ScaleJitter``);
    ``"short"`` sets the short side to a random length in ``min(size) * scale_range``
    (``v2.RandomResize``, the segmentation recipe). Padding is 0 in the image, 255 in the mask.
    """
    h, w = _pair(size)
    if resize_side == "long":
        resize = v2.ScaleJitter(target_size=(h, w), scale_range=scale_range)
    elif resize_side == "short":
        lo, hi = (round(min(h, w) * s) for s in scale_range)
        resize = v2.RandomResize(lo, hi + 1)
    else:
        raise ValueError(f"resize_side must be 'long' or 'short', got {resize_side!r}")
    steps = [
        resize,
        v2.RandomCrop((h, w), pad_if_needed=True, fill=FILL),
        v2.RandomHorizontalFlip(hflip_prob),
    ]
    if color_jitter is not None:
        steps.append(v2.ColorJitter(*color_jitter))
    steps.append(SanitizeBoxes(min_box_size))
    return v2.Compose(steps)


def eval_transforms(size: int = 512) -> v2.Compose:
    """Resize keeping the aspect ratio so that the long side is ``size`` (boxes and mask
    follow the image; the mask by nearest neighbour)."""
    return v2.Compose([v2.Resize(size=None, max_size=size)])


def collate(batch: Sequence[tuple[Any, dict]], size_divisor: int = 32):
    """Pad a list of ``(image, target)`` to one size, a multiple of ``size_divisor``.

    Images are padded at the right and bottom with 0 (so boxes keep their coordinates), masks
    with 255. Returns ``(uint8 [B, 3, H, W] tensor, list of targets)``.
    """
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    height = math.ceil(height / size_divisor) * size_divisor
    width = math.ceil(width / size_divisor) * size_divisor
    images, targets = [], []
    for image, target in batch:
        padding = [0, 0, width - image.shape[-1], height - image.shape[-2]]  # l, t, r, b
        images.append(F.pad(image, padding, fill=0).as_subclass(torch.Tensor))
        target = dict(target)
        if "mask" in target:
            target["mask"] = F.pad(target["mask"], padding, fill=IGNORE_INDEX)
        if "boxes" in target:
            target["boxes"] = F.pad(target["boxes"], padding)  # only the canvas size changes
        targets.append(target)
    return torch.stack(images), targets
