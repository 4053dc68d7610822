"""The perception node's output messages read back into arrays: what SIL scores, what
replay's real-time mode records and scores, and what replay's tests read from a predictions
bag. The reverse of `messages` (which builds them).

No rclpy here: messages are read by attribute, so rclpy's messages, rosbags' and test
stand-ins all work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .image_conversion import image_msg_to_array


def boxes_from_msg(msg: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Detection2DArray -> (XYXY boxes [N, 4], scores [N], class names of the best
    hypothesis; "" and 0 for a detection without one)."""
    boxes, scores, names = [], [], []
    for det in msg.detections:
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        boxes.append([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0])
        best = det.results[0].hypothesis if det.results else None
        scores.append(best.score if best else 0.0)
        names.append(best.class_id if best else "")
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64), names


def mask_from_msg(msg: Any) -> np.ndarray:
    """mono8/mono16 segmentation image -> HxW class ids (uint8/uint16) as the node sent them."""
    return image_msg_to_array(msg, "passthrough")


def scene_from_msg(msg: Any) -> list[tuple[str, float]]:
    """Classification -> [(class name, score)] in the message's order (most likely first)."""
    return [(r.class_id, float(r.score)) for r in msg.results]
