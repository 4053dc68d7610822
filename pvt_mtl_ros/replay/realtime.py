"""Real-time replay: the bag's frames played at their recorded rate (or a multiple) through
the real perception node over rclpy, in this process, on a private domain id and namespace.

It measures what a vehicle would see: end-to-end latency (frame published -> every output
received), input and output rates, and frames dropped by the node's latest-frame policy (a
frame whose outputs never come while a newer frame's do). The outputs received are scored
and written to the predictions bag, each at the frame's log time plus its latency.
"""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Classification, Detection2DArray

from pvt_mtl_ros.inference.predictor import PredictionResult
from pvt_mtl_ros.ros.inprocess import InProcess, stamp_ns, wait_for
from pvt_mtl_ros.ros.lifecycle import start
from pvt_mtl_ros.ros.outputs import boxes_from_msg, mask_from_msg, scene_from_msg
from pvt_mtl_ros.ros.perception_node import PerceptionNode

from .bag_io import IMAGE_TYPES, BagReadError, ReplayError
from .session import Decoded, ReplayOptions, ReplaySession, check_output
from .streaming import StreamingScore

WAIT_S = 30.0  # discovery and the node's start (model load, warm-up) on a loaded machine
DRAIN_MIN_S, DRAIN_MAX_S = 5.0, 60.0  # after the last frame, wait for outputs this long
QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
OUTPUTS = {"detections": Detection2DArray, "segmentation": Image, "scene": Classification}
TASK_OUTPUT = {"detection": "detections", "segmentation": "segmentation",
               "classification": "scene"}  # fmt: skip
DECODE = {"detections": boxes_from_msg, "segmentation": mask_from_msg, "scene": scene_from_msg}


@dataclass
class Pending:
    frame: Decoded
    t_pub: float
    outputs: dict[str, tuple[Any, float]] = field(default_factory=dict)


class NodeHarness:
    """The perception node plus a player/probe node in a private rclpy context and domain
    (`ros.inprocess.InProcess`), spun by one executor thread. Callbacks only queue what
    arrives; the replay loop does the rest."""

    def __init__(self, opts: ReplayOptions, model_cfg: Any, topics: dict[str, str]) -> None:
        self.node = None
        self.ros = InProcess(opts.extra.get("domain_id"))  # None: a random private domain
        try:
            self._open(opts, model_cfg, topics)
        except BaseException:
            self.close()
            raise

    def _open(self, opts: ReplayOptions, model_cfg: Any, topics: dict[str, str]) -> None:
        self.ns = f"/pvt_replay_{uuid.uuid4().hex[:10]}"
        self.cameras = {topic: f"cam{i}" for i, topic in enumerate(topics)}
        self.outputs = [TASK_OUTPUT[t] for t in model_cfg.tasks]
        thresh = opts.score_thresh
        if thresh is None and model_cfg.detection is not None:
            thresh = model_cfg.detection.score_thresh
        params = {
            "autostart": False,
            "checkpoint": str(opts.checkpoint.resolve()),
            "device": opts.device,
            "backend": opts.backend,
            "camera_names": list(self.cameras.values()),
            "outputs.segmentation_color": False,
            "outputs.debug_image": False,
            "score_threshold": float(thresh or 0.0),
        }
        if model_cfg.classification is not None:  # every class: the full probability vector
            params["scene_top_k"] = min(len(model_cfg.classification.classes), 999)
        for topic, cam in self.cameras.items():
            params[f"cameras.{cam}.transport"] = topics[topic]
            params[f"cameras.{cam}.reliability"] = "reliable"  # drops = the node's policy only
        self.inbox: queue.Queue = queue.Queue()
        self.node = PerceptionNode(
            f"perception_{uuid.uuid4().hex[:8]}",
            context=self.ros.context,
            namespace=self.ns,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        self.ros.nodes.append(self.node)  # destroyed by close() even if it never spins
        self.player = self.ros.node(f"replay_{uuid.uuid4().hex[:8]}")
        self.pubs, self.subs = {}, []
        for topic, cam in self.cameras.items():
            kind = Image if topics[topic] == "raw" else CompressedImage
            suffix = "image_raw" if topics[topic] == "raw" else "image_raw/compressed"
            self.pubs[topic] = self.player.create_publisher(kind, f"{self.ns}/{cam}/{suffix}", QOS)
            for out in self.outputs:
                self.subs.append(self.player.create_subscription(
                    OUTPUTS[out], f"{self.ns}/{cam}/{out}",
                    lambda msg, t=topic, o=out: self.inbox.put((t, o, msg, time.perf_counter())),
                    QOS,
                ))  # fmt: skip
        self.ros.spin(self.node, self.player)

    def start(self) -> None:
        if not start(self.node):
            raise ReplayError(f"the perception node did not start: {self.node.last_error}")
        wait_for(
            lambda: (
                all(p.get_subscription_count() > 0 for p in self.pubs.values())
                and all(s.get_publisher_count() > 0 for s in self.subs)
            ),
            WAIT_S,
            "the perception node's topics to connect",
            ReplayError,
        )

    def node_counts(self) -> dict[str, dict[str, int]]:
        snap = self.node.stats.snapshot()["cameras"]
        keys = ("received", "processed", "superseded", "bad", "failed", "discarded")
        return {t: {k: snap[c][k] for k in keys} for t, c in self.cameras.items()}

    def close(self) -> None:
        """Executor stopped and joined, then the nodes and the context (InProcess.close)."""
        self.ros.close()


def to_result(outputs: dict[str, Any], cfg: Any) -> PredictionResult:
    """The node's messages back into a PredictionResult (what offline replay scores);
    class names the model lacks are dropped."""
    result = PredictionResult()
    if "detections" in outputs:
        ids = {n: i for i, n in enumerate(cfg.detection.classes)}
        boxes, scores, names = boxes_from_msg(outputs["detections"])
        keep = [i for i, n in enumerate(names) if n in ids]
        result.boxes = boxes[keep].astype(np.float32).reshape(-1, 4)
        result.scores = scores[keep].astype(np.float32)
        result.labels = np.array([ids[names[i]] for i in keep], np.int64)
    if "segmentation" in outputs:
        result.mask = mask_from_msg(outputs["segmentation"])
    if "scene" in outputs:
        ids = {n: i for i, n in enumerate(cfg.classification.classes)}
        probs = np.zeros(len(ids), np.float32)
        for name, score in scene_from_msg(outputs["scene"]):
            if name in ids:
                probs[ids[name]] = score
        result.class_probs = probs
    return result


class Player:
    """The replay loop's state: frames in flight, what came back, what was dropped."""

    def __init__(self, session: ReplaySession, harness: NodeHarness) -> None:
        self.session, self.harness = session, harness
        self.pending: dict[tuple[str, int], Pending] = {}
        self.dropped = 0
        self.published = 0
        self.t_pub_first = self.t_pub_last = None
        self.t_out_first = self.t_out_last = None
        self.max_latency = 0.0
        gt, cfg = session.gt, session.model.cfg
        self.streaming = (  # accuracy as delivered: every frame by the prediction in force
            None if gt is None
            else StreamingScore(gt, session.topics, cfg.tasks, session.names["segmentation"])
        )  # fmt: skip

    def publish(self, frame: Decoded, data: bytes) -> None:
        key = (frame.topic, frame.stamp)
        if key in self.pending:
            self.session.warn(f"{frame.topic}: two frames with stamp {frame.stamp} in flight")
        self.harness.pubs[frame.topic].publish(data)  # the recorded CDR bytes, as recorded
        now = time.perf_counter()
        self.pending[key] = Pending(frame, now)
        if self.streaming is not None:
            self.streaming.published(frame.topic, frame.stamp, now)
        self.published += 1
        self.t_pub_first = self.t_pub_first or now
        self.t_pub_last = now

    def collect(self, timeout: float) -> None:
        """Take what arrived (waiting up to `timeout` for the first item)."""
        try:
            item = self.harness.inbox.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return
        while item is not None:
            self._arrived(*item)
            try:
                item = self.harness.inbox.get_nowait()
            except queue.Empty:
                item = None
        if self.streaming is not None:
            self.streaming.close_due(time.perf_counter())

    def _arrived(self, topic: str, out: str, msg: Any, t: float) -> None:
        key = (topic, stamp_ns(msg))
        if self.streaming is not None:  # late outputs too: they may be in force for later frames
            self.streaming.output(topic, out, key[1], DECODE[out](msg), t)
        entry = self.pending.get(key)
        if entry is None:
            return  # a late output of a frame already counted
        entry.outputs[out] = (msg, t)
        if len(entry.outputs) < len(self.harness.outputs):
            return
        del self.pending[key]
        times = [t for _, t in entry.outputs.values()]
        latency = max(times) - entry.t_pub
        self.max_latency = max(self.max_latency, latency)
        self.session.latency["end_to_end"].append(1000 * latency)
        self.session.latency["first_output"].append(1000 * (min(times) - entry.t_pub))
        self.t_out_first = self.t_out_first or max(times)
        self.t_out_last = max(times)
        result = to_result({o: m for o, (m, _) in entry.outputs.items()}, self.session.model.cfg)
        log_time = entry.frame.log_time + int(latency * self.session.opts.rate * 1e9)
        self.session.record(entry.frame, result, log_time)
        # Outputs come in order per camera: older frames still waiting were superseded.
        for old in [k for k, p in self.pending.items() if k[0] == topic and p.t_pub < entry.t_pub]:
            del self.pending[old]
            self.dropped += 1

    def drain(self) -> None:
        timeout = min(DRAIN_MAX_S, max(DRAIN_MIN_S, 3 * self.max_latency))
        deadline = time.perf_counter() + timeout
        while self.pending and time.perf_counter() < deadline:
            self.collect(0.05)
        self.dropped += len(self.pending)
        self.pending.clear()


def run_realtime(opts: ReplayOptions, model: Any) -> dict[str, Any]:
    """Replay through the perception node; `model` gives the class names (the node loads
    its own copy from opts.checkpoint). Returns the report dict; see run_offline for what
    is kept when things go wrong."""
    check_output(opts)  # nothing is removed before the new results exist
    session = ReplaySession(opts, model)
    harness = player = None
    try:
        with session.recording():
            session.open()
            topics = {t: IMAGE_TYPES[session.source.topics[t].msgtype] for t in session.topics}
            harness = NodeHarness(opts, model.cfg, topics)
            harness.start()
            session.backend = harness.node.backend_spec  # what the node runs
            player = Player(session, harness)
            t0 = first_log = None
            try:
                for raw in session.source.frames():
                    if opts.max_frames is not None and player.published >= opts.max_frames:
                        break
                    # Decode first: the node must never get bytes that are no message.
                    frame = session.decode(raw)
                    if frame is None:
                        continue
                    if t0 is None:
                        t0, first_log = time.perf_counter(), raw.log_time
                    due = t0 + (raw.log_time - first_log) / 1e9 / opts.rate
                    while (now := time.perf_counter()) < due:
                        player.collect(min(due - now, 0.01))
                    player.publish(frame, raw.data)
                    # how far playback fell behind the recording (a slow machine, a busy GIL)
                    session.latency["publish_late"].append(1000 * (time.perf_counter() - due))
                    player.collect(0.0)
            except BagReadError as err:
                session.fail("bag read error", err)
                session.warn(str(err))
            player.drain()
    finally:
        if player is not None:
            session.report_extra.update(realtime_figures(player, harness, opts))
        if harness is not None:
            harness.close()
        report = session.finish()
    return report


def realtime_figures(player: Player, harness: NodeHarness, opts: ReplayOptions) -> dict:
    def rate(n: int, t0: float | None, t1: float | None) -> float | None:
        return (n - 1) / (t1 - t0) if n > 1 and t0 is not None and t1 > t0 else None

    done = len(player.session.latency.get("end_to_end", []))
    return {
        "rate": opts.rate,
        "published": player.published,
        "dropped": player.dropped,
        "input_fps": rate(player.published, player.t_pub_first, player.t_pub_last),
        "output_fps": rate(done, player.t_out_first, player.t_out_last),
        "node_counts": harness.node_counts(),
        "streaming": player.streaming.metrics() if player.streaming is not None else None,
    }
