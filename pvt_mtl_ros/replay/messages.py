"""Prediction messages as rosbags objects, the same fields and conventions as the node's
(pvt_mtl_ros.ros.messages, which builds rclpy objects): detection class_ids are class NAMES,
segmentation images hold class INDICES (mono8, mono16 past 256 classes) whose names the
matching LabelInfo lists, the scene is the top-k classes. pvt_mtl_ros.ros.outputs reads them
back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SCENE_TOP_K = 5


class Builder:
    """Message constructors bound to one typestore."""

    def __init__(self, typestore: Any) -> None:
        self.t = typestore.types

    def header(self, stamp_sec: int, stamp_nanosec: int, frame_id: str) -> Any:
        time = self.t["builtin_interfaces/msg/Time"](sec=stamp_sec, nanosec=stamp_nanosec)
        return self.t["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def copy_header(self, header: Any) -> Any:
        return self.header(int(header.stamp.sec), int(header.stamp.nanosec), header.frame_id)

    def _pose(self) -> Any:
        t = self.t
        pose = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        )
        return t["geometry_msgs/msg/PoseWithCovariance"](
            pose=pose, covariance=np.zeros(36, dtype=np.float64)
        )

    def detections(
        self,
        header: Any,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        names: Sequence[str],
    ) -> Any:
        """XYXY boxes in the image's pixels -> Detection2DArray (centre + size, class name)."""
        t = self.t
        dets = []
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            centre = t["vision_msgs/msg/Pose2D"](
                position=t["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2.0, y=(y1 + y2) / 2.0),
                theta=0.0,
            )
            hyp = t["vision_msgs/msg/ObjectHypothesis"](
                class_id=names[label] if 0 <= label < len(names) else str(label),
                score=float(score),
            )
            dets.append(
                t["vision_msgs/msg/Detection2D"](
                    header=header,
                    results=[
                        t["vision_msgs/msg/ObjectHypothesisWithPose"](
                            hypothesis=hyp, pose=self._pose()
                        )
                    ],
                    bbox=t["vision_msgs/msg/BoundingBox2D"](
                        center=centre, size_x=x2 - x1, size_y=y2 - y1
                    ),
                    id="",
                )
            )
        return t["vision_msgs/msg/Detection2DArray"](header=header, detections=dets)

    def segmentation(self, header: Any, mask: np.ndarray) -> Any:
        """HxW class ids -> sensor_msgs/Image mono8 (mono16 past 256 classes)."""
        if mask.dtype == np.uint8:
            encoding, data = "mono8", mask
        else:
            encoding, data = "mono16", mask.astype("<u2")
        h, w = mask.shape
        return self.t["sensor_msgs/msg/Image"](
            header=header,
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=w * data.itemsize,
            data=np.ascontiguousarray(data).view(np.uint8).reshape(-1),
        )

    def rgb_image(self, header: Any, rgb: np.ndarray) -> Any:
        """HxWx3 uint8 RGB -> sensor_msgs/Image rgb8 (the colour mask)."""
        h, w = rgb.shape[:2]
        return self.t["sensor_msgs/msg/Image"](
            header=header,
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=3 * w,
            data=np.ascontiguousarray(rgb, np.uint8).reshape(-1),
        )

    def scene(self, header: Any, probs: np.ndarray, names: Sequence[str]) -> Any:
        """Class probabilities -> vision_msgs/Classification with the top-k classes."""
        k = min(SCENE_TOP_K, probs.size)
        order = np.argsort(-probs, kind="stable")[:k]
        results = [
            self.t["vision_msgs/msg/ObjectHypothesis"](
                class_id=names[i] if i < len(names) else str(i), score=float(probs[i])
            )
            for i in order.tolist()
        ]
        return self.t["vision_msgs/msg/Classification"](header=header, results=results)

    def label_info(self, header: Any, names: Sequence[str], threshold: float = 0.0) -> Any:
        classes = [
            self.t["vision_msgs/msg/VisionClass"](class_id=i, class_name=str(n))
            for i, n in enumerate(names)
        ]
        return self.t["vision_msgs/msg/LabelInfo"](
            header=header, class_map=classes, threshold=float(threshold)
        )
