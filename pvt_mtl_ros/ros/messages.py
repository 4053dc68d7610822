"""Pure builders: a `PredictionResult` (plus the class names) -> standard ROS 2 messages.

No node, no publishers, no tensors: every function takes arrays and a header and returns a
message (or an array), so the node stays small and the builders are tested on their own.
Detection `class_id`s are class NAMES; segmentation images hold class INDICES whose names
the matching `LabelInfo` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import (
    Classification,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    VisionClass,
)
from visualization_msgs.msg import ImageMarker

from ..visualize import colorize, overlay, palette
from .image_conversion import array_to_image_msg


def copy_header(header: Any) -> Header:
    """A fresh Header with the input's stamp and frame_id (outputs never share objects)."""
    out = Header(frame_id=header.frame_id)
    out.stamp.sec, out.stamp.nanosec = header.stamp.sec, header.stamp.nanosec
    return out


def detections_msg(
    header: Any, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: Sequence[str]
) -> Detection2DArray:
    """XYXY boxes in the image's pixels -> Detection2DArray (centre + size, class name). A
    message of its own; a publisher that sends one per frame keeps a DetectionArrayBuilder."""
    return DetectionArrayBuilder(names)(header, boxes, scores, labels)


class DetectionArrayBuilder:
    """`detections_msg` for one publisher, reusing its message objects from call to call.

    Building a hundred Detection2D objects costs about 1.3 ms on the 2-core CPU, almost all
    of it in rosidl's constructors (each makes a Header, a Pose, a covariance array, ...);
    setting the fields of kept objects costs a fraction of that. The message returned is
    valid until the next call: publish it first (rclpy serialises it inside `publish`).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.msg = Detection2DArray()
        self.pool: list[Detection2D] = []

    def __call__(
        self, header: Any, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray
    ) -> Detection2DArray:
        """XYXY boxes in the image's pixels -> the Detection2DArray (centre + size, class
        name); its objects are this builder's, rewritten by the next call."""
        out, names = self.msg, self.names
        out.header = copy_header(header)
        while len(self.pool) < len(boxes):
            det = Detection2D()
            det.results.append(ObjectHypothesisWithPose())
            self.pool.append(det)
        for det, (x1, y1, x2, y2), score, label in zip(
            self.pool, boxes.tolist(), scores.tolist(), labels.tolist()
        ):
            det.header = out.header
            det.bbox.center.position.x = (x1 + x2) / 2.0
            det.bbox.center.position.y = (y1 + y2) / 2.0
            det.bbox.size_x, det.bbox.size_y = x2 - x1, y2 - y1
            hyp = det.results[0].hypothesis
            hyp.class_id = names[label] if 0 <= label < len(names) else str(label)
            hyp.score = float(score)
        out.detections = self.pool[: len(boxes)]
        return out


def mask_encoding(mask: np.ndarray) -> str:
    """mono8 for up to 256 classes, mono16 past that (what the predictor already returns)."""
    return "mono8" if mask.dtype == np.uint8 else "mono16"


def segmentation_msg(header: Any, mask: np.ndarray) -> Any:
    """HxW class-id mask -> sensor_msgs/Image mono8 (mono16 past 256 classes)."""
    if mask.dtype not in (np.uint8, np.uint16):
        mask = mask.astype(np.uint16)
    return array_to_image_msg(mask, mask_encoding(mask), header=copy_header(header))


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


def camera_info_msg(
    info: CameraInfo, header: Any, input_size: tuple[int, int], output_size: tuple[int, int]
) -> CameraInfo:
    """The input camera's CameraInfo for an output image computed from its frame: the output's
    header, and where the output's (height, width) differs from the input frame's, K, P, the
    size and the ROI scaled by output/input per axis (as image_proc's resize does)."""
    sy, sx = output_size[0] / input_size[0], output_size[1] / input_size[1]
    out = CameraInfo(header=copy_header(header), distortion_model=info.distortion_model)
    out.d, out.r = list(info.d), np.array(info.r, np.float64)
    rows = np.array([sx, sy, 1.0])
    out.k = (np.array(info.k, np.float64).reshape(3, 3) * rows[:, None]).ravel()
    out.p = (np.array(info.p, np.float64).reshape(3, 4) * rows[:, None]).ravel()
    out.width, out.height = round(info.width * sx), round(info.height * sy)
    out.binning_x, out.binning_y = info.binning_x, info.binning_y
    roi = info.roi
    out.roi = RegionOfInterest(
        x_offset=round(roi.x_offset * sx), y_offset=round(roi.y_offset * sy),
        width=round(roi.width * sx), height=round(roi.height * sy), do_rectify=roi.do_rectify,
    )  # fmt: skip
    return out


BOX_COLOURS = palette(33)[1:]  # the debug image's box colours (visualize.overlay)


def box_colour(label: int) -> tuple[float, float, float]:
    """Class `label`'s box colour as RGB in [0, 1] (the debug image's, visualize.overlay)."""
    r, g, b = (BOX_COLOURS[int(label) % len(BOX_COLOURS)] / 255.0).tolist()
    return r, g, b


def box_texts(scores: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> list[str]:
    """'<class name> <score>' per box, as the debug image and the annotations label boxes."""
    return [
        f"{names[lab] if 0 <= lab < len(names) else lab} {s:.2f}"
        for s, lab in zip(np.asarray(scores).tolist(), np.asarray(labels).tolist())
    ]


def scene_caption(probs: np.ndarray, names: Sequence[str]) -> str:
    """'<most likely scene class> <probability>', the debug image's and annotations' label."""
    index, prob = top_k(probs, 1)[0]
    return f"{names[index] if index < len(names) else index} {prob:.2f}"


def foxglove_annotations_type() -> type | None:
    """foxglove_msgs/ImageAnnotations where foxglove_msgs imports (a ROS 2 install with the
    package, or our interfaces/foxglove_msgs build in the venv), else None: the node then
    publishes `image_marker_msg` instead."""
    try:
        from foxglove_msgs.msg import ImageAnnotations
    except ImportError:
        return None
    return ImageAnnotations


def image_annotations_msg(
    header: Any,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    scene: str | None = None,
    thickness: float = 2.0,
    font_size: float = 14.0,
) -> Any:
    """XYXY boxes -> foxglove_msgs/ImageAnnotations for Foxglove's Image panel: per box one
    PointsAnnotation (LINE_LOOP of its corners in its class's colour) and one TextAnnotation
    ('<class> <score>' on the box's top-left corner), plus `scene` as a text in the image's
    top-left corner when given. Every annotation carries the input header's stamp (the type
    has no header; the panel matches annotations to images by it). Raises ImportError where
    foxglove_msgs is not installed (see `foxglove_annotations_type`)."""
    from foxglove_msgs.msg import Color, ImageAnnotations, Point2, PointsAnnotation, TextAnnotation

    out = ImageAnnotations()

    def stamp() -> Time:  # one object per annotation: outputs never share objects
        return Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    white, clear = Color(r=1.0, g=1.0, b=1.0, a=1.0), Color()
    for (x1, y1, x2, y2), label, text in zip(
        boxes.tolist(), np.asarray(labels).tolist(), box_texts(scores, labels, names)
    ):
        r, g, b = box_colour(label)
        corners = [Point2(x=x, y=y) for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
        out.points.append(
            PointsAnnotation(
                timestamp=stamp(), type=PointsAnnotation.LINE_LOOP, points=corners,
                outline_color=Color(r=r, g=g, b=b, a=1.0), fill_color=clear,
                thickness=float(thickness),
            )
        )  # fmt: skip
        # the text's position is its bottom-left corner: above the box, inside the image
        out.texts.append(
            TextAnnotation(
                timestamp=stamp(), position=Point2(x=x1, y=max(y1, float(font_size))), text=text,
                font_size=float(font_size), text_color=white,
                background_color=Color(r=r, g=g, b=b, a=0.7),
            )
        )  # fmt: skip
    if scene:
        out.texts.append(
            TextAnnotation(
                timestamp=stamp(), position=Point2(x=4.0, y=4.0 + 1.5 * font_size), text=scene,
                font_size=1.5 * float(font_size), text_color=white,
                background_color=Color(r=0.0, g=0.0, b=0.0, a=0.6),
            )
        )  # fmt: skip
    return out


def image_marker_msg(
    header: Any, boxes: np.ndarray, labels: np.ndarray, line_width: float = 2.0
) -> ImageMarker:
    """XYXY boxes -> one visualization_msgs/ImageMarker LINE_LIST with the input's header:
    box i is points [8i, 8i+8), its four edges as point pairs, in its class's colour. The
    node's annotations where foxglove_msgs is not installed (no texts: the type has none).

    One message per frame, not one marker per box: Foxglove's Image panel keeps only the
    newest message of each annotation topic, so a marker per box would show only the last
    box. A frame without boxes sends an empty list, which clears the previous frame's."""
    out = ImageMarker(header=copy_header(header), ns="detections", id=0)
    out.type, out.action, out.scale = ImageMarker.LINE_LIST, ImageMarker.ADD, float(line_width)
    points, colours = [], []
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes).reshape(-1, 4).tolist(), labels.tolist()):
        r, g, b = box_colour(label)
        colour = ColorRGBA(r=r, g=g, b=b, a=1.0)
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        for i in range(4):
            for x, y in (corners[i], corners[(i + 1) % 4]):
                points.append(Point(x=float(x), y=float(y)))
                colours.append(colour)
    out.points, out.outline_colors = points, colours
    out.outline_color = colours[0] if colours else ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
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
    texts = box_texts(scores, labels, det_names) if boxes is not None and len(boxes) else None
    return overlay(
        rgb,
        mask=mask,
        mask_colours=mask_colours,
        boxes=boxes,
        box_texts=texts,
        box_classes=None if labels is None else labels.tolist(),
        caption=scene,
        alpha=alpha,
    )


__all__ = [
    "DetectionArrayBuilder",
    "box_colour",
    "box_texts",
    "camera_info_msg",
    "colorize",
    "copy_header",
    "debug_image",
    "detections_msg",
    "foxglove_annotations_type",
    "image_annotations_msg",
    "image_marker_msg",
    "label_info_msg",
    "mask_encoding",
    "palette",
    "scene_caption",
    "scene_msg",
    "segmentation_color_msg",
    "segmentation_msg",
    "top_k",
]
