"""Colours and overlays for masks and boxes, shared by the node, replay reports and the demo.

No ROS here: replay and the demo draw without rclpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def palette(num_classes: int) -> np.ndarray:
    """[num_classes, 3] uint8 RGB colours: the PASCAL VOC bit-interleaving scheme, which
    gives distinct, stable colours for any number of classes (class 0 is black)."""
    ids = np.arange(max(num_classes, 1), dtype=np.int64)
    colours = np.zeros((ids.size, 3), dtype=np.int64)
    c = ids.copy()
    for shift in range(7, -1, -1):  # 8 rounds of 3 bits each cover ids below 2**24
        for ch in range(3):
            colours[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return colours[:num_classes].astype(np.uint8)


def colorize(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """HxW class ids -> HxWx3 RGB; ids outside the palette (e.g. 255 ignore) become black."""
    lut = np.zeros((max(int(mask.max(initial=0)) + 1, len(colours)), 3), dtype=np.uint8)
    lut[: len(colours)] = colours
    return lut[mask]


def overlay(
    rgb: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    mask_colours: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    box_texts: Sequence[str] | None = None,
    box_classes: Sequence[int] | None = None,
    caption: str | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """The frame with the mask blended in (ids outside the palette left clear), boxes with
    their texts (coloured per class), and a caption top-left. Returns a new RGB array."""
    out = rgb.copy()
    if mask is not None and mask_colours is not None and len(mask_colours):
        valid = mask < len(mask_colours)
        tinted = out.copy()
        tinted[valid] = mask_colours[mask[valid]]
        out = cv2.addWeighted(out, 1.0 - alpha, tinted, alpha, 0.0)
    thick = max(1, round(min(out.shape[:2]) / 320))
    font = 0.4 * thick
    if boxes is not None and len(boxes):
        colours = palette(33)[1:]  # skip black
        classes = list(box_classes) if box_classes is not None else [0] * len(boxes)
        for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4).tolist()):
            c = tuple(int(v) for v in colours[classes[i] % len(colours)])
            p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
            cv2.rectangle(out, p1, p2, c, thick)
            if box_texts:
                cv2.putText(
                    out,
                    box_texts[i],
                    (p1[0], max(p1[1] - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    font,
                    c,
                    thick,
                    cv2.LINE_AA,
                )
    if caption:
        org = (5, int(18 * thick))
        for colour, width in (((0, 0, 0), thick * 3), ((255, 255, 255), thick)):
            cv2.putText(out, caption, org, cv2.FONT_HERSHEY_SIMPLEX, font * 1.5, colour, width)
    return out
