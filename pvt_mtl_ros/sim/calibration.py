"""Simulator frames for int8 calibration: what the node's int8 backends calibrate on unless
given other images (the inference layer takes its calibration images from its caller)."""

from __future__ import annotations

import numpy as np

from ..conventions import SIM_TEST_SEEDS
from .renderer import SimConfig, render

CALIBRATION_FRAMES = 16


def calibration_frames(
    height: int, width: int, count: int = CALIBRATION_FRAMES
) -> list[np.ndarray]:
    """`count` rendered frames (HxWx3 uint8 RGB) of `height` x `width`, the same every call."""
    if count < 1 or height < 1 or width < 1:
        raise ValueError(f"calibration frames need count, height, width >= 1, not "
                         f"{count}, {height}, {width}")  # fmt: skip
    cfg = SimConfig(width=width, height=height)
    return [render(SIM_TEST_SEEDS + i, cfg).image for i in range(count)]
