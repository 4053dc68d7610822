"""Pure builders: a `PredictionResult` (plus the class names) -> standard ROS 2 messages.

No node, no publishers, no tensors: every function takes arrays and a header and returns a
message (or an array), so the node stays small and the builders are tested on their own.
Detection `class_id`s are class NAMES; segmentation images hold class INDICES whose names
the matching `LabelInfo` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from std_msgs.msg import Header
from vision_msgs.msg import (
    Classification,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    VisionClass,
)

from .image_conversion import array_to_image_msg


def copy_header(header: Any) -> Header:
    """A fresh Header with the input's stamp and frame_id (outputs never share objects)."""
    out = Header(frame_id=header.frame_id)
    out.stamp.sec, out.stamp.nanosec = header.stamp.sec, header.stamp.nanosec
    return out


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


def detections_msg(
    header: Any, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: Sequence[str]
) -> Detection2DArray:
    """XYXY boxes in the image's pixels -> Detection2DArray (centre + size, class name)."""
    out = Detection2DArray(header=copy_header(header))
    for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        det = Detection2D(header=out.header)
        det.bbox.center.position.x = (x1 + x2) / 2.0
        det.bbox.center.position.y = (y1 + y2) / 2.0
        det.bbox.size_x, det.bbox.size_y = x2 - x1, y2 - y1
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = names[label] if 0 <= label < len(names) else str(label)
        hyp.hypothesis.score = float(score)
        det.results.append(hyp)
        out.detections.append(det)
    return out


def mask_encoding(mask: np.ndarray) -> str:
    """mono8 for up to 256 classes, mono16 past that (what the predictor already returns)."""
    return "mono8" if mask.dtype == np.uint8 else "mono16"


def segmentation_msg(header: Any, mask: np.ndarray) -> Any:
    """HxW class-id mask -> sensor_msgs/Image mono8 (mono16 past 256 classes)."""
    if mask.dtype not in (np.uint8, np.uint16):
        mask = mask.astype(np.uint16)
    return array_to_image_msg(mask, mask_encoding(mask), header=copy_header(header))


def colorize(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """HxW class ids -> HxWx3 RGB; ids outside the palette (e.g. 255 ignore) become black."""
    lut = np.zeros((max(int(mask.max(initial=0)) + 1, len(colours)), 3), dtype=np.uint8)
    lut[: len(colours)] = colours
    return lut[mask]


def segmentation_color_msg(header: Any, mask: np.ndarray, colours: np.ndarray) -> Any:
    return array_to_image_msg(colorize(mask, colours), "rgb8", header=copy_header(header))


def top_k(probs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(class index, probability) of the k most likely classes, most likely first."""
    k = max(1, min(int(k), probs.size))
    idx = np.argpartition(-probs, k - 1)[:k]
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    return [(int(i), float(probs[i])) for i in idx]


def scene_msg(header: Any, probs: np.ndarray, names: Sequence[str], k: int) -> Classification:
    """Class probabilities -> vision_msgs/Classification with the top-k names and scores."""
    out = Classification(header=copy_header(header))
    out.results = [
        ObjectHypothesis(class_id=names[i] if i < len(names) else str(i), score=p)
        for i, p in top_k(probs, k)
    ]
    return out


def label_info_msg(header: Any, names: Sequence[str], threshold: float = 0.0) -> LabelInfo:
    """The class map (index -> name) that ids in the node's outputs refer to."""
    out = LabelInfo(header=copy_header(header), threshold=float(threshold))
    out.class_map = [VisionClass(class_id=i, class_name=str(n)) for i, n in enumerate(names)]
    return out


def debug_image(
    rgb: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    mask_colours: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    det_names: Sequence[str] = (),
    scene: str | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """The camera frame with the mask blended in, boxes with class and score, and the scene
    label in the top-left corner. Returns a new HxWx3 RGB array."""
    out = rgb.copy()
    if mask is not None and mask_colours is not None:
        colour = colorize(mask, mask_colours)
        out = cv2.addWeighted(out, 1.0 - alpha, colour, alpha, 0.0)
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 320))
    font = 0.4 * thick
    if boxes is not None and len(boxes):
        box_colours = palette(len(det_names) + 1)[1:]  # skip black
        for (x1, y1, x2, y2), s, lab in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            c = tuple(int(v) for v in box_colours[lab % len(box_colours)])
            p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
            cv2.rectangle(out, p1, p2, c, thick)
            name = det_names[lab] if 0 <= lab < len(det_names) else str(lab)
            cv2.putText(
                out, f"{name} {s:.2f}", (p1[0], max(p1[1] - 3, 10)),
                cv2.FONT_HERSHEY_SIMPLEX, font, c, thick, cv2.LINE_AA,
            )  # fmt: skip
    if scene:
        org = (5, int(18 * thick))
        cv2.putText(out, scene, org, cv2.FONT_HERSHEY_SIMPLEX, font * 1.5, (0, 0, 0), thick * 3)
        cv2.putText(out, scene, org, cv2.FONT_HERSHEY_SIMPLEX, font * 1.5, (255, 255, 255), thick)
    return out


__all__ = [
    "colorize",
    "copy_header",
    "debug_image",
    "detections_msg",
    "label_info_msg",
    "mask_encoding",
    "palette",
    "scene_msg",
    "segmentation_color_msg",
    "segmentation_msg",
    "top_k",
]
