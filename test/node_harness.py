"""A perception node in-process with a probe node: what the node, robustness and fuzz tests
share.

The node runs from a tiny random-weight checkpoint (conftest's factory) under a unique
namespace on the test module's private context (conftest's `context`), spun with its probe
on one executor thread (pvt_mtl_ros.ros.inprocess); every wait is bounded.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Classification, Detection2DArray, LabelInfo

from pvt_mtl_ros.ros import inprocess
from pvt_mtl_ros.ros.inprocess import InProcess, stamp_ns
from pvt_mtl_ros.ros.lifecycle import start
from pvt_mtl_ros.ros.perception_node import PerceptionNode

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 30.0  # generous for a loaded 2-core machine; success takes well under a second
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
TASKS = ("detections", "segmentation", "scene")
OUTPUT_TYPES = {
    "detections": Detection2DArray,
    "segmentation": Image,
    "scene": Classification,
    "segmentation/color": Image,
    "debug_image": Image,
}


def wait_for(predicate, timeout=WAIT_S, what="condition"):
    """inprocess.wait_for with the tests' default bound, failing as an assertion."""
    return inprocess.wait_for(predicate, timeout, what, AssertionError)


def run_module(domain_id, *ros_args, module="pvt_mtl_ros.ros.perception_node", **popen):
    """`python -m MODULE --ros-args ROS_ARGS` from the checkout, on `domain_id`, unbuffered
    (its log lines arrive as written)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", module, "--ros-args", *ros_args]
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True, **popen)


def smooth_rgb(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([(x * 3 + seed) % 256, (y * 2) % 256, (x + y) % 256]).astype(np.uint8)


class Probe:
    """A test node: publishes camera frames ({name: transport}) and collects the perception
    node's `outputs` of each camera (with their label_info when `label_info`) and /diagnostics.
    """

    def __init__(self, ros, namespace, cameras, outputs=TASKS, label_info=True):
        self.node = ros.node(f"probe_{uuid.uuid4().hex[:8]}")
        self.ns = namespace
        self.inbox: dict[str, list] = {}
        self.pubs = {}
        for name, transport in cameras.items():
            kind = Image if transport == "raw" else CompressedImage
            suffix = "image_raw" if transport == "raw" else "image_raw/compressed"
            self.pubs[name] = self.node.create_publisher(
                kind, f"{namespace}/{name}/{suffix}", RELIABLE
            )
            for out in outputs:
                self.subscribe(f"{name}/{out}", OUTPUT_TYPES[out])
            for task in TASKS if label_info else ():
                self.subscribe(f"{name}/{task}/label_info", LabelInfo, LATCHED)
        self.diagnostics: list = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)

    def subscribe(self, topic, kind, qos=RELIABLE):
        box = self.inbox.setdefault(topic, [])
        return self.node.create_subscription(
            kind, f"{self.ns}/{topic}", lambda m: box.append((time.time(), m)), qos
        )

    def messages(self, topic):
        return [m for _, m in self.inbox[topic]]


class Served:
    """A perception node serving `cameras` ({name: transport}) and a probe, spun together on
    one executor thread of `context`; `outputs` are the topics the probe subscribes to (a
    head runs only while an output it feeds has a subscriber). A context manager: closed on
    exit."""

    def __init__(self, context, checkpoint, cameras, outputs=TASKS, label_info=True, **params):
        self.ns = f"/pvt_test_{uuid.uuid4().hex[:10]}"
        self.outputs = tuple(outputs)
        overrides = {
            "checkpoint": str(checkpoint),
            "camera_names": list(cameras),
            "score_threshold": 0.0,  # random weights: make sure there are boxes to check
            "max_detections": 20,
            "cpu_threads": 1,  # steadier timings next to the test's own threads
            "diagnostics_period": 0.5,
            "backend": "eager",  # the reference path, not the machine's `auto` choice
        }
        for name, transport in cameras.items():
            overrides[f"cameras.{name}.transport"] = transport
        overrides.update(params)
        self.ros = InProcess(context=context)
        self.node = PerceptionNode(
            f"perception_{uuid.uuid4().hex[:8]}",
            context=context,
            namespace=self.ns,
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        )
        self.probe = Probe(self.ros, self.ns, cameras, self.outputs, label_info)
        self.ros.spin(self.node, self.probe.node)
        self.stamp = 0

    def start(self):
        assert start(self.node), self.node.last_error
        self.wait_matched()
        return self

    def wait_matched(self):
        """Discovery done: frames reach the node and its outputs reach the probe."""
        wait_for(
            lambda: all(p.get_subscription_count() > 0 for p in self.probe.pubs.values())
            and all(
                pub.get_subscription_count() > 0 for cam in self.node.cameras
                for pub in cam.pubs.values()
                if pub.topic_name.split("/")[-1] in self.outputs
            ),
            what="publishers and subscriptions to match",
        )  # fmt: skip

    def next_header(self, msg, sec=None):
        """A unique header (frame id and stamp) so the frame's outputs can be matched to it:
        `sec` (default: the wall clock, the node's) plus a counter in nanoseconds."""
        self.stamp += 1
        msg.header.frame_id = f"optical_{self.stamp}"
        msg.header.stamp.sec = int(time.time()) if sec is None else sec
        msg.header.stamp.nanosec = self.stamp
        return msg

    def send(self, camera, msg):
        self.probe.pubs[camera].publish(msg)
        return msg

    def outputs_for(self, camera, msg, outputs=None, timeout=WAIT_S):
        """Wait until every output of this camera for this frame has arrived; return them."""
        outputs = self.outputs if outputs is None else outputs
        key = stamp_ns(msg)

        def found():
            got = {}
            for out in outputs:
                for m in self.probe.messages(f"{camera}/{out}"):
                    if stamp_ns(m) == key:
                        got[out] = m
            return got

        wait_for(lambda: len(found()) == len(outputs), timeout, f"{outputs} of {camera} {key}")
        return found()

    def counts(self, camera):
        return self.node.stats.snapshot()["cameras"][camera]

    def camera_status(self, camera):
        """The latest /diagnostics status of this camera: (level, message, {key: value})."""
        name = f"{self.node.get_name()}: camera {camera}"
        for array in reversed(list(self.probe.diagnostics)):
            for s in array.status:
                if s.name == name:
                    return s.level, s.message, {v.key: v.value for v in s.values}
        return None

    def close(self):
        self.ros.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# the hostile node's tiny model: two detection classes, three segmentation, two scenes
DET, SEG, SCENE = ["car", "person"], ["road", "sky", "other"], ["urban", "rural"]


def hostile(context, checkpoint, cameras, **params):
    """The node the robustness and fuzz tests send bad frames to: detections only, reliable
    inputs with room to queue (every frame sent is received), quick diagnostics, no warm-up."""
    for name in cameras:
        params.setdefault(f"cameras.{name}.reliability", "reliable")
        params.setdefault(f"cameras.{name}.queue_depth", 100)
    params = {"max_detections": 5, "diagnostics_period": 0.2, "warmup": False, **params}
    return Served(context, checkpoint, cameras, ("detections",), label_info=False, **params)
