"""A perception node in-process with a probe node, for the robustness and fuzz tests.

Private rclpy context on its own domain id and a unique namespace (as test_perception_node
does), a tiny random-weight checkpoint from conftest's factory; every wait is bounded.
"""

import os
import random
import threading
import time
import uuid

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from pvt_mtl_ros.ros.lifecycle import start
from pvt_mtl_ros.ros.perception_node import PerceptionNode

WAIT_S = 30.0  # generous for a loaded 2-core machine
DOMAIN_ID = int(os.environ.get("PVT_TEST_DOMAIN_ID", random.randint(101, 200)))
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
DET, SEG, SCENE = ["car", "person"], ["road", "sky", "other"], ["urban", "rural"]


def wait_for(predicate, timeout=WAIT_S, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID, signal_handler_options=SignalHandlerOptions.NO)
    return ctx


def smooth_rgb(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([(x * 3 + seed) % 256, (y * 2) % 256, (x + y) % 256]).astype(np.uint8)


class Node:
    """A perception node serving `cameras` ({name: transport}), a probe publishing frames to
    it and collecting its detections and /diagnostics, one executor thread spinning both."""

    def __init__(self, context, checkpoint, cameras, **params):
        self.ns = f"/pvt_fuzz_{uuid.uuid4().hex[:10]}"
        overrides = {
            "checkpoint": str(checkpoint),
            "camera_names": list(cameras),
            "score_threshold": 0.0,
            "max_detections": 5,
            "cpu_threads": 1,
            "diagnostics_period": 0.2,
            "warmup": False,
            "backend": "eager",  # the reference path, not the machine's `auto` choice
        }
        for name, transport in cameras.items():
            overrides[f"cameras.{name}.transport"] = transport
            overrides[f"cameras.{name}.reliability"] = "reliable"
            overrides[f"cameras.{name}.queue_depth"] = 100
        overrides.update(params)
        self.node = PerceptionNode(
            f"perception_{uuid.uuid4().hex[:8]}",
            context=context,
            namespace=self.ns,
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        )
        self.probe = rclpy.create_node(f"probe_{uuid.uuid4().hex[:8]}", context=context)
        self.pubs, self.detections = {}, {}
        for name, transport in cameras.items():
            kind = Image if transport == "raw" else CompressedImage
            suffix = "image_raw" if transport == "raw" else "image_raw/compressed"
            self.pubs[name] = self.probe.create_publisher(
                kind, f"{self.ns}/{name}/{suffix}", RELIABLE
            )
            box = self.detections[name] = []
            self.probe.create_subscription(
                Detection2DArray, f"{self.ns}/{name}/detections", box.append, RELIABLE
            )
        self.diagnostics = []
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.stamp = 0

    def start(self):
        assert start(self.node), self.node.last_error
        wait_for(
            lambda: (
                all(p.get_subscription_count() > 0 for p in self.pubs.values())
                and all(
                    pub.get_subscription_count() > 0
                    for cam in self.node.cameras
                    for name, pub in cam.pubs.items()
                    if name == "detections"
                )
            ),
            what="publishers and subscriptions to match",
        )
        return self

    def stamped(self, msg, sec=None):
        """A unique header stamp (wall-clock time unless `sec` is given)."""
        self.stamp += 1
        msg.header.frame_id = f"f{self.stamp}"
        now = time.time() if sec is None else sec
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), self.stamp
        return msg

    def send(self, camera, msg):
        self.pubs[camera].publish(msg)
        return msg

    def served(self, camera, msg, timeout=WAIT_S):
        """Wait for the detections of this frame (matched by its stamp)."""
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        wait_for(
            lambda: any(
                (d.header.stamp.sec, d.header.stamp.nanosec) == key
                for d in list(self.detections[camera])
            ),
            timeout,
            f"detections of {camera} {key}",
        )

    def counts(self, camera):
        return self.node.stats.snapshot()["cameras"][camera]

    def camera_status(self, camera):
        """The latest /diagnostics status of this camera: (level, message, {key: value})."""
        name = f"{self.node.get_name()}: camera {camera}"
        for array in reversed(list(self.diagnostics)):
            for s in array.status:
                if s.name == name:
                    return s.level, s.message, {v.key: v.value for v in s.values}
        return None

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(5.0)
        self.node.destroy_node()
        self.probe.destroy_node()
