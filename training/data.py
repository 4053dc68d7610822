"""Datasets from config entries, their transforms, and one endless DataLoader per dataset."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pvt_mtl_ros.sim import SimConfig
from training.config import DatasetConfig, TrainConfigError, resolve_path
from training.datasets import (
    ADE20K,
    CamVid,
    CocoDetection,
    ImageNetFolder,
    ImageNetList,
    SegmentationFolder,
)
from training.datasets.sim import ALL_TASKS, SimDataset
from training.sampler import SeededSamples, StreamBatchSampler, mix
from training.transforms import collate, train_transforms


@dataclass
class Source:
    """One configured dataset: the dataset itself (transforms set later) and what it labels."""

    cfg: DatasetConfig
    dataset: Dataset  # the full dataset object (classes, coco, ...)
    indices: list[int]  # the samples used (max_samples)
    where: str  # "data.train[0]" for messages

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(sorted(self.dataset.tasks))

    def classes(self, task: str) -> list[str]:
        """The dataset's class names for one of its tasks."""
        per_task = getattr(self.dataset, "task_classes", None)  # datasets with several tasks
        return list(per_task[task] if per_task is not None else self.dataset.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def samples(self) -> Dataset:
        return (
            self.dataset
            if len(self.indices) == len(self.dataset)
            else Subset(self.dataset, self.indices)
        )


def build_source(d: DatasetConfig, where: str, role: str = "train") -> Source:
    """The dataset a config entry describes; missing files and bad labels name the entry."""
    train = role == "train"
    try:
        if d.type == "coco":
            ds = CocoDetection(resolve_path(d.images), resolve_path(d.annotations))
        elif d.type == "camvid":
            ds = CamVid(resolve_path(d.root), d.split or ("train" if train else "val"))
        elif d.type == "ade20k":
            ds = ADE20K(resolve_path(d.root), d.split or ("training" if train else "validation"))
        elif d.type == "imagenet_list":
            ds = ImageNetList(resolve_path(d.images), resolve_path(d.labels))
        elif d.type == "imagenet_folder":
            ds = ImageNetFolder(resolve_path(d.root))
        elif d.type == "segmentation_folder":
            ds = SegmentationFolder(
                resolve_path(d.images),
                resolve_path(d.masks),
                d.classes,
                ignore_value=255 if d.ignore_value is None else d.ignore_value,
                label_offset=d.label_offset or 0,
            )
        elif d.type == "sim":
            h, w = d.frame_size or (480, 640)
            split = d.split or ("train" if train else "val")
            ds = SimDataset(
                d.frames,
                split,
                SimConfig(width=w, height=h),
                tasks=d.tasks or ALL_TASKS,
                offset=d.seed_offset or 0,
            )
        else:  # config validation lists the types; this is a guard for new ones
            raise TrainConfigError(f"{where}.type: unknown dataset type {d.type!r}")
    except (FileNotFoundError, ValueError) as e:
        raise TrainConfigError(f"{where} ({d.name}): {e}") from None
    n = len(ds) if d.max_samples is None else min(d.max_samples, len(ds))
    if n == 0:
        raise TrainConfigError(f"{where} ({d.name}): the dataset has no samples")
    return Source(d, ds, list(range(n)), where)


def set_train_transforms(source: Source, input_size: tuple[int, int]) -> None:
    a = source.cfg.augment
    source.dataset.transforms = train_transforms(
        size=a.size or input_size,
        scale_range=a.scale_range,
        resize_side=a.resize_side,
        hflip_prob=a.hflip,
        color_jitter=a.color_jitter,
        min_box_size=a.min_box_size,
    )


def make_loader(
    source: Source,
    stream: int,
    seed: int,
    rank: int,
    world_size: int,
    start_batch: int,
    num_workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless loader whose first batch is batch ``start_batch`` of the stream."""
    sampler = StreamBatchSampler(
        len(source), source.cfg.batch_size, seed, stream, rank, world_size, start_batch
    )
    return DataLoader(
        SeededSamples(source.samples()),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        # A private generator: creating the iterator must not draw from the global RNG, or a
        # resumed run would see other dropout masks than an uninterrupted one.
        generator=torch.Generator().manual_seed(mix(seed, stream, rank, 4)),
    )
