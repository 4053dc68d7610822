"""Datasets returning ``(tv_tensors.Image uint8 CHW RGB, target)`` per docs/ARCHITECTURE.md.

Each has ``tasks`` (the task names it labels) and ``classes`` (names for that task), and takes
an optional ``transforms(image, target)``.
"""

from training.datasets.coco import CocoDetection
from training.datasets.imagenet import ImageNetFolder, ImageNetList, imagenet1k_classes
from training.datasets.segmentation import (
    ADE20K,
    ADE20K_CLASSES,
    CAMVID_CLASSES,
    CamVid,
    SegmentationFolder,
)

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "CAMVID_CLASSES",
    "CamVid",
    "CocoDetection",
    "ImageNetFolder",
    "ImageNetList",
    "SegmentationFolder",
    "imagenet1k_classes",
]
