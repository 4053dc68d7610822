"""Procedural driving-scene simulator (numpy + OpenCV) with exact ground truth."""

from .classes import (
    CAMVID_TO_CITYSCAPES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_TO_CAMVID,
    DETECTION_CLASSES,
    DETECTION_TO_SEG,
    SCENE_CLASSES,
    SCENE_TYPES,
    SEG_CLASSES,
    SEG_PALETTE,
    TIMES_OF_DAY,
    WEATHERS,
    scene_label,
)
from .renderer import SimConfig, SimFrame, render

__all__ = [
    "CAMVID_TO_CITYSCAPES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_TO_CAMVID",
    "DETECTION_CLASSES",
    "DETECTION_TO_SEG",
    "SCENE_CLASSES",
    "SCENE_TYPES",
    "SEG_CLASSES",
    "SEG_PALETTE",
    "TIMES_OF_DAY",
    "WEATHERS",
    "SimConfig",
    "SimFrame",
    "render",
    "scene_label",
]
