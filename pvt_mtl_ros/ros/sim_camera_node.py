"""The simulated camera: procedural driving frames at a set rate, with exact ground truth.

A lifecycle node, like the perception node: configure creates the publishers (so a harness
can wait for discovery before any frame goes out), activate starts the frame timer,
deactivate stops it. Started on its own (`autostart`), it configures and activates itself.

Topics, relative to the node's namespace (remap them as usual):

    image_raw or image_raw/compressed   sensor_msgs/Image rgb8 | CompressedImage
    camera_info                         sensor_msgs/CameraInfo (the frame's own intrinsics)
    ground_truth/detections             vision_msgs/Detection2DArray (class_id = class name)
    ground_truth/segmentation           sensor_msgs/Image mono8, ids into sim SEG_CLASSES
    ground_truth/scene                  vision_msgs/Classification (the true scene, score 1)
    ground_truth/<output>/label_info    vision_msgs/LabelInfo, latched

Every message of one frame carries the same header, so consumers match them by stamp.
Frame i renders seed `seed_start + i` (modulo `seed_count` when it is > 0).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Classification, Detection2DArray, LabelInfo

from ..sim import (
    DETECTION_CLASSES,
    SCENE_CLASSES,
    SCENE_TYPES,
    SEG_CLASSES,
    TIMES_OF_DAY,
    WEATHERS,
    SimConfig,
    SimFrame,
    render,
)
from . import messages as M
from .image_conversion import array_to_compressed_msg, array_to_image_msg
from .lifecycle import TableNode, run_node
from .parameters import LIVE, START, Param, ParameterTable

NODE_NAME = "sim_camera_node"
TRANSPORTS = ("raw", "compressed")
FORMATS = ("jpeg", "png")
INT_MAX = 2**62
# Reliable output serves reliable and best-effort subscribers alike (the reverse does not).
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
GT_OUTPUTS = {
    "detections": (Detection2DArray, DETECTION_CLASSES),
    "segmentation": (Image, SEG_CLASSES),
    "scene": (Classification, SCENE_CLASSES),
}

# The one table the node, config/sim_camera.yaml (test_sil checks both ways), docs/PARAMETERS.md
# and the SIL scenario loader (which accepts these as per-camera keys) agree on.
PARAMETERS = ParameterTable(
    "sim_camera_node",
    [
        Param("autostart", True, "Configure and activate at start-up (false: wait for a "
              "lifecycle manager).", when=START),
        Param("rate", 10.0, "Frames per second.", range=(0.01, 1000.0)),
        Param("width", 640, "Image width in pixels.", range=(16, 8192)),
        Param("height", 480, "Image height in pixels.", range=(16, 8192)),
        Param("transport", "raw", "raw (image_raw, rgb8) or compressed (image_raw/compressed).",
              choices=TRANSPORTS),
        Param("compressed_format", "jpeg", "jpeg or png, for transport compressed.",
              choices=FORMATS, when=LIVE),
        Param("jpeg_quality", 90, "JPEG quality, for transport compressed.", range=(0, 100),
              when=LIVE),
        Param("frame_id", "camera_optical_frame", "frame_id of every message.", when=LIVE),
        Param("seed_start", 0, "Seed of the first frame.", range=(0, INT_MAX), when=LIVE),
        Param("seed_count", 0, "Frames cycle through seeds seed_start .. "
              "seed_start+seed_count-1; 0: never repeat.", range=(0, INT_MAX), when=LIVE),
        Param("max_frames", 0, "Stop after this many frames; 0: no limit.", range=(0, INT_MAX),
              when=LIVE),
        Param("scene", "", f"One of {', '.join(SCENE_TYPES)}; empty: drawn per seed.",
              choices=("", *SCENE_TYPES)),
        Param("time_of_day", "", f"One of {', '.join(TIMES_OF_DAY)}; empty: drawn per seed.",
              choices=("", *TIMES_OF_DAY)),
        Param("weather", "", f"One of {', '.join(WEATHERS)}; empty: drawn per seed.",
              choices=("", *WEATHERS)),
        Param("ground_truth", True, "Publish the ground_truth/* topics."),
    ],
)  # fmt: skip


def camera_info_msg(header: Any, frame: SimFrame) -> CameraInfo:
    """The pinhole intrinsics the frame was rendered with (no distortion)."""
    h, w = frame.mask.shape
    f, cx, cy = float(frame.camera["f"]), w / 2.0, h / 2.0  # the renderer's principal point
    msg = CameraInfo(header=M.copy_header(header), height=h, width=w)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def ground_truth_msgs(header: Any, frame: SimFrame) -> dict[str, Any]:
    """The frame's boxes, mask and scene as the perception node's own message types, built
    with its builders: a ground-truth message reads exactly like a perfect prediction."""
    n = len(frame.labels)
    scene = np.zeros(len(SCENE_CLASSES), np.float32)
    scene[frame.scene_label] = 1.0
    return {
        "detections": M.detections_msg(
            header, frame.boxes, np.ones(n, np.float32), frame.labels, DETECTION_CLASSES
        ),
        "segmentation": M.segmentation_msg(header, frame.mask),
        "scene": M.scene_msg(header, scene, SCENE_CLASSES, 1),
    }


class SimCameraNode(TableNode):
    """Publishes rendered frames and their ground truth; counts what it published."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        self._pubs: dict[str, Any] = {}
        self._latched: list[Any] = []
        self._timer = None
        super().__init__(node_name, **kwargs)
        self.declare_rows(PARAMETERS.rows())
        self.finish_declaring()
        self.published = 0
        self.late = 0  # frames whose render overran the frame period
        self._cfg: SimConfig | None = None
        self._next: SimFrame | None = None  # rendered ahead, so a tick only stamps and sends

    # -- lifecycle (TableNode runs these and turns errors into one logged line) --------------

    def configure(self) -> None:
        self._cfg = self._sim_config()
        suffix = "image_raw/compressed" if self.p("transport") == "compressed" else "image_raw"
        kind = CompressedImage if self.p("transport") == "compressed" else Image
        self._pubs = {
            "image": self.create_publisher(kind, suffix, OUTPUT_QOS),
            "camera_info": self.create_publisher(CameraInfo, "camera_info", OUTPUT_QOS),
        }
        if self.p("ground_truth"):
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.p("frame_id"))
            for out, (msg_type, classes) in GT_OUTPUTS.items():
                topic = f"ground_truth/{out}"
                self._pubs[out] = self.create_publisher(msg_type, topic, OUTPUT_QOS)
                pub = self.create_publisher(LabelInfo, f"{topic}/label_info", LATCHED_QOS)
                pub.publish(M.label_info_msg(header, classes))
                self._latched.append(pub)

    def activate(self) -> None:
        self._next = self._render(self.published)
        self._timer = self.create_timer(1.0 / self.p("rate"), self._tick)
        self.get_logger().info(
            f"publishing {self.p('width')}x{self.p('height')} {self.p('transport')} frames at "
            f"{self.p('rate'):g} Hz from seed {self.p('seed_start')}"
        )

    def deactivate(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def release(self) -> None:
        for pub in [*self._pubs.values(), *self._latched]:
            self.destroy_publisher(pub)
        self._pubs, self._latched = {}, []

    def destroy_node(self) -> None:
        self.deactivate()
        self.release()
        super().destroy_node()

    # -- frames ------------------------------------------------------------------------------

    def _sim_config(self) -> SimConfig:
        """Parameters as set now -> SimConfig (the table has checked each value)."""
        return SimConfig(
            width=self.p("width"),
            height=self.p("height"),
            scene=self.p("scene") or None,
            time_of_day=self.p("time_of_day") or None,
            weather=self.p("weather") or None,
        )

    def seed(self, index: int) -> int:
        count = self.p("seed_count")
        return self.p("seed_start") + (index % count if count > 0 else index)

    def _render(self, index: int) -> SimFrame:
        return render(self.seed(index), self._cfg)

    def _tick(self) -> None:
        limit = self.p("max_frames")
        if self._next is None or (limit and self.published >= limit):
            self.deactivate()
            return
        frame, self._next = self._next, None
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.p("frame_id"))
        self._publish(header, frame)
        self.published += 1
        start = time.perf_counter()
        if not limit or self.published < limit:
            self._next = self._render(self.published)
        if time.perf_counter() - start > 1.0 / self.p("rate"):
            self.late += 1

    def _publish(self, header: Header, frame: SimFrame) -> None:
        if self.p("transport") == "compressed":
            image = array_to_compressed_msg(
                frame.image, self.p("compressed_format"), M.copy_header(header),
                quality=self.p("jpeg_quality"),
            )  # fmt: skip
        else:
            image = array_to_image_msg(frame.image, "rgb8", header=M.copy_header(header))
        # Ground truth first: a consumer never sees an output before the truth it is scored on.
        if "detections" in self._pubs:
            for out, msg in ground_truth_msgs(header, frame).items():
                self._pubs[out].publish(msg)
        self._pubs["camera_info"].publish(camera_info_msg(header, frame))
        self._pubs["image"].publish(image)


def main(args: list[str] | None = None) -> int:
    """`sim_camera_node` / `python -m pvt_mtl_ros.ros.sim_camera_node --ros-args ...`."""
    return run_node(SimCameraNode, args)


if __name__ == "__main__":
    sys.exit(main())
