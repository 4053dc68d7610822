"""Torch Dataset over the procedural simulator: sample i is the frame rendered from one seed.

Splits own disjoint seed ranges (pvt_mtl_ros.conventions.SIM_SPLIT_START), so a training
frame can never reappear in validation or test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision import tv_tensors

from pvt_mtl_ros.conventions import SIM_SPLIT_SPAN, SIM_SPLIT_START
from pvt_mtl_ros.sim import (
    DETECTION_CLASSES,
    SCENE_CLASSES,
    SEG_CLASSES,
    SimConfig,
    SimFrame,
    render,
)

ALL_TASKS = ("classification", "detection", "segmentation")


class SimDataset(torch.utils.data.Dataset):
    """`size` frames of one split, starting `offset` seeds into the split's range.

    Target keys follow docs/ARCHITECTURE.md and exist only for `tasks`: `boxes`+`labels`
    (detection), `mask` (segmentation, never 255: the simulator labels every pixel), `label`
    (classification: the scene class), and always `image_id` (the seed).
    """

    def __init__(
        self,
        size: int,
        split: str = "train",
        cfg: SimConfig | None = None,
        tasks: Sequence[str] = ALL_TASKS,
        transforms: Callable | None = None,
        offset: int = 0,
    ):
        if split not in SIM_SPLIT_START:
            raise ValueError(f"split must be one of {tuple(SIM_SPLIT_START)}, got {split!r}")
        if size < 0 or offset < 0 or offset + size > SIM_SPLIT_SPAN:
            raise ValueError(
                f"offset + size must lie within 0..{SIM_SPLIT_SPAN} (one split's seeds)"
            )
        unknown = set(tasks) - set(ALL_TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; known: {ALL_TASKS}")
        self.split = split
        self.seeds = range(SIM_SPLIT_START[split] + offset, SIM_SPLIT_START[split] + offset + size)
        self.cfg = cfg or SimConfig()
        self.tasks = tuple(t for t in ALL_TASKS if t in tasks)
        self.transforms = transforms
        self.task_classes = {
            "classification": list(SCENE_CLASSES),
            "detection": list(DETECTION_CLASSES),
            "segmentation": list(SEG_CLASSES),
        }

    @property
    def classes(self) -> list[str]:
        """The class names when the dataset serves one task (see task_classes otherwise)."""
        if len(self.tasks) != 1:
            raise AttributeError("SimDataset serves several tasks: use task_classes[task]")
        return self.task_classes[self.tasks[0]]

    def __len__(self) -> int:
        return len(self.seeds)

    def frame(self, index: int) -> SimFrame:
        """The raw rendered frame (image, boxes, mask, scene fields, instances)."""
        return render(self.seeds[index], self.cfg)

    def __getitem__(self, index: int):
        f = self.frame(index)
        h, w = f.mask.shape
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(f.image.transpose(2, 0, 1))))
        target: dict = {"image_id": int(self.seeds[index])}
        if "detection" in self.tasks:
            target["boxes"] = tv_tensors.BoundingBoxes(
                torch.from_numpy(f.boxes), format="XYXY", canvas_size=(h, w)
            )
            target["labels"] = torch.from_numpy(f.labels)
        if "segmentation" in self.tasks:
            target["mask"] = tv_tensors.Mask(torch.from_numpy(f.mask.astype(np.int64)))
        if "classification" in self.tasks:
            target["label"] = torch.tensor(f.scene_label, dtype=torch.int64)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def sim_splits(
    train_size: int, val_size: int, cfg: SimConfig | None = None, **kwargs
) -> tuple[SimDataset, SimDataset]:
    """Train and val datasets over disjoint seeds, same renderer settings."""
    return (
        SimDataset(train_size, "train", cfg, **kwargs),
        SimDataset(val_size, "val", cfg, **kwargs),
    )
