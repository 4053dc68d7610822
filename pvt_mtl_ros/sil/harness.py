"""The closed loop in one process: simulated cameras (or an external simulator's topics), the
perception node and a probe node that hears inputs, ground truth and outputs.

Each group of nodes spins in its own executor thread, so rendering never delays the
probe's timestamps. Probe callbacks only queue `(camera, kind, message, wall time)`; the
main thread decodes, matches by stamp (matching.py), scores (scoring.py) and prints a live
line. Every wait is bounded by the scenario's connect_timeout, duration and drain.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Classification, Detection2DArray, LabelInfo

from pvt_mtl_ros.metrics import latency_stats
from pvt_mtl_ros.metrics.streaming import Streaming
from pvt_mtl_ros.ros.image_conversion import ImageConversionError
from pvt_mtl_ros.ros.inprocess import InProcess, stamp_ns, wait_for
from pvt_mtl_ros.ros.lifecycle import start as start_perception
from pvt_mtl_ros.ros.perception_node import PerceptionNode
from pvt_mtl_ros.ros.sim_camera_node import SimCameraNode

from . import adapters
from .gates import check
from .matching import GT, IMAGE, Matcher
from .report import attach_gates, live_line, totals
from .scenario import Scenario, resolve_domain
from .scoring import Rate, Scores

INBOX_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
OUTPUT_TYPES = {"detections": Detection2DArray, "segmentation": Image, "scene": Classification}
GT_TYPES = OUTPUT_TYPES
SUCCESS = TransitionCallbackReturn.SUCCESS


class HarnessError(RuntimeError):
    """The loop could not start (a node failed to configure, topics never connected)."""


class Loop:
    """One scenario run. `run()` returns the report dict (without gates); `close()` always."""

    def __init__(self, scn: Scenario, printer: Callable[[str], None] = print) -> None:
        self.scn, self.print = scn, printer
        self.ros: InProcess | None = None  # the context, its executor threads, ordered close
        self.perception: PerceptionNode | None = None
        self.sims: dict[str, SimCameraNode] = {}
        self.subs: dict[tuple[str, str], Any] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.seg_names: list[str] | None = None
        self.decoder = adapters.ground_truth_decoder(scn.source, scn.carla or scn.gazebo)
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self.outputs: dict[str, tuple[str, ...]] = {}
        self.images = {c.name: Rate() for c in scn.cameras}
        self.done = {c.name: Rate() for c in scn.cameras}
        self.matcher: Matcher | None = None
        self.scores: Scores | None = None
        self.streaming: Streaming | None = None
        self.run_s = 0.0

    # -- set-up ------------------------------------------------------------------------------

    def open(self) -> None:
        scn = self.scn
        self.ros = InProcess(resolve_domain(scn))
        self.domain, self.context = self.ros.domain, self.ros.context
        private = scn.perception.start or scn.source == "sim"
        self.ns = (
            f"/pvt_sil_{uuid.uuid4().hex[:8]}"
            if private and not scn.perception.namespace
            else "/" + scn.perception.namespace.strip("/")
        ).rstrip("/")
        if scn.source == "sim":
            for cam in scn.cameras:
                node = SimCameraNode(
                    f"sim_camera_{cam.name}",
                    context=self.context,
                    namespace=f"{self.ns}/{cam.name}",
                    parameter_overrides=[
                        Parameter(k, value=v) for k, v in {**cam.sim, "autostart": False}.items()
                    ],
                )
                self.sims[cam.name] = node
                self.ros.spin(node)  # one thread each: cameras render in parallel
        if scn.perception.start:
            self.perception = self._perception_node()
            self.ros.spin(self.perception)
        self.probe = self.ros.node(f"sil_probe_{uuid.uuid4().hex[:8]}")
        self.ros.spin(self.probe)

    def _perception_node(self) -> PerceptionNode:
        spec = self.scn.perception
        params: dict[str, Any] = {
            "autostart": False,
            "checkpoint": spec.checkpoint,
            "device": spec.device,
            "camera_names": [c.name for c in self.scn.cameras],
            "outputs.segmentation_color": False,
            "outputs.debug_image": False,
            "outputs.annotations": False,
        }
        for cam in self.scn.cameras:
            params[f"cameras.{cam.name}.topic"] = cam.image
            params[f"cameras.{cam.name}.transport"] = cam.transport
            # sim: reliable, so that the only frames lost are the ones the node skips
            params[f"cameras.{cam.name}.reliability"] = cam.reliability
        node = PerceptionNode(
            f"perception_{uuid.uuid4().hex[:8]}",
            context=self.context,
            namespace=self.ns,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        # The scenario's own parameters are set after construction: a wrong name or type is
        # then a result to report, not an exception from inside the node's constructor.
        problems = []
        for name, value in spec.parameters.items():
            if not node.has_parameter(name):
                problems.append(f"{name}: the perception node has no such parameter")
                continue
            declared = node.get_parameter(name).type_
            if declared == Parameter.Type.DOUBLE and type(value) is int:
                value = float(value)  # YAML writes 0 for 0.0
            (result,) = node.set_parameters([Parameter(name, value=value)])
            if not result.successful:
                problems.append(f"{name}={value!r}: {result.reason} (declared {declared.name})")
        if problems:
            node.destroy_node()
            raise HarnessError("perception.parameters: " + "; ".join(problems))
        return node

    def _topic(self, name: str) -> str:
        return name if name.startswith("/") else f"{self.ns}/{name}"

    def _subscribe(self, camera: str, kind: str, msg_type: Any, topic: str, qos: Any) -> None:
        inbox = self.inbox

        def queue_it(msg: Any) -> None:
            inbox.put((camera, kind, msg, time.time()))

        self.subs[camera, kind] = self.probe.create_subscription(
            msg_type, self._topic(topic), queue_it, qos
        )

    def connect(self) -> None:
        """Start the nodes, subscribe, and wait until every topic has its publisher."""
        scn = self.scn
        for name, node in self.sims.items():
            if node.trigger_configure() != SUCCESS:
                raise HarnessError(f"sim camera {name}: {node.last_error or 'configure failed'}")
        if self.perception is not None:
            if not start_perception(self.perception):
                raise HarnessError(f"perception node: {self.perception.last_error}")
        gt_kinds = {}
        for cam in scn.cameras:
            if self.perception is not None:
                have = {k for c in self.perception.cameras if c.name == cam.name for k in c.pubs}
                self.outputs[cam.name] = tuple(o for o in scn.perception.outputs if o in have)
            else:
                self.outputs[cam.name] = scn.perception.outputs
            if not self.outputs[cam.name]:
                raise HarnessError(
                    f"{cam.name}: the perception node publishes none of "
                    f"{', '.join(scn.perception.outputs)} (does the model have those heads?)"
                )
            image_qos = INBOX_QOS if cam.reliability == "reliable" else BEST_EFFORT_QOS
            kind = CompressedImage if cam.transport == "compressed" else Image
            self._subscribe(cam.name, IMAGE, kind, cam.image, image_qos)
            gt = cam.ground_truth
            for task in ("detections", "segmentation", "scene"):
                topic = getattr(gt, task)
                if topic:
                    self._subscribe(cam.name, GT + task, GT_TYPES[task], topic, image_qos)
            for out in self.outputs[cam.name]:
                self._subscribe(cam.name, out, OUTPUT_TYPES[out], f"{cam.name}/{out}", INBOX_QOS)
            if "segmentation" in self.outputs[cam.name] and gt.segmentation:
                self._subscribe(
                    cam.name, "label_info", LabelInfo, f"{cam.name}/segmentation/label_info",
                    LATCHED_QOS,
                )  # fmt: skip
            gt_kinds[cam.name] = gt.kinds()
        self.scores = Scores(self.decoder.seg_classes, scn.latency, scn.min_box_height)
        periods = {  # sim: the camera's own rate; external sources: estimated from the frames
            c.name: 1.0 / c.sim["rate"] if scn.source == "sim" and c.sim.get("rate") else None
            for c in scn.cameras
        }
        self.streaming = Streaming(
            self.outputs, self.decoder.seg_classes, scn.latency, scn.min_box_height, periods
        )
        self.matcher = Matcher(
            self.outputs, gt_kinds, external=scn.source != "sim", on_close=self.streaming.add_frame
        )

        def connected() -> bool:
            self._drain_label_info()
            if any(s.get_publisher_count() == 0 for s in self.subs.values()):
                return False
            if self.perception is not None and any(
                c.subscription is None or c.subscription.get_publisher_count() == 0
                for c in self.perception.cameras
            ):
                return False
            needs_names = any(k == "label_info" for _, k in self.subs)
            return not needs_names or self.seg_names is not None

        try:
            wait_for(connected, scn.connect_timeout, "the topics to connect", HarnessError, 0.02)
        except HarnessError:
            subs = list(self.subs.values())
            if self.perception is not None:  # the node's own inputs
                subs += [c.subscription for c in self.perception.cameras if c.subscription]
            silent = list(dict.fromkeys(s.topic_name for s in subs if not s.get_publisher_count()))
            if not silent:
                silent = ["the segmentation label_info (perception node outputs.label_info)"]
            raise HarnessError(
                f"timed out after {scn.connect_timeout:g} s waiting for: {', '.join(silent)}"
            ) from None

    def _drain_label_info(self) -> None:
        """Before the run only label_info matters: frames of an external source that is
        already running are not part of the run."""
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if item[1] == "label_info":
                self._label_info(item[2])

    def _label_info(self, msg: Any) -> None:
        names = [c.class_name for c in sorted(msg.class_map, key=lambda c: c.class_id)]
        if self.seg_names is None:
            self.seg_names = names
            self.scores.set_model_seg_classes(names)
            self.streaming.set_model_seg_classes(names)

    # -- the run -----------------------------------------------------------------------------

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)
            self.print(f"warning: {message}")

    def _handle(self, camera: str, kind: str, msg: Any, t: float) -> None:
        if kind == "label_info":
            self._label_info(msg)
            return
        try:
            payload = self._decode(kind, msg)
        except (ImageConversionError, ValueError, IndexError) as err:
            self.warn_once(f"decode:{camera}:{kind}", f"{camera} {kind}: cannot decode: {err}")
            return
        stamp = stamp_ns(msg)
        self.matcher.add(camera, kind, stamp, payload, t)
        if kind in self.outputs[camera]:
            self.streaming.add_output(camera, kind, stamp, payload, t)
        if kind == IMAGE:
            self.images[camera].add(t)
            label = self._camera(camera).ground_truth.scene_label
            if label:
                self.matcher.add(camera, GT + "scene", stamp, label, t)

    def _camera(self, name: str) -> Any:
        return next(c for c in self.scn.cameras if c.name == name)

    def _decode(self, kind: str, msg: Any) -> Any:
        d = self.decoder
        decoders = {
            IMAGE: lambda m: None,  # only its arrival time matters
            GT + "detections": d.detections,
            GT + "segmentation": d.segmentation,
            GT + "scene": d.scene,
            "detections": adapters.output_detections,
            "segmentation": adapters.output_mask,
            "scene": adapters.output_scene,
        }
        return decoders[kind](msg)

    def _pump(self, timeout: float, final: bool = False) -> None:
        """Handle what arrived (waiting up to `timeout` for the first item); score frames."""
        try:
            item = self.inbox.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            item = None
        while item is not None:
            self._handle(*item)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                item = None
        for frame in self.matcher.take_ready(final):
            self.scores.add(frame)
            self.done[frame.camera].add(max(frame.t_out.values()))

    def cameras_summary(self) -> dict[str, dict]:
        out = {}
        for cam in self.scn.cameras:
            tally = vars(self.matcher.tally[cam.name]).copy()
            tally["input_hz"] = self.images[cam.name].hz()
            tally["output_hz"] = self.done[cam.name].hz()
            if cam.name in self.sims:
                tally["published"] = self.sims[cam.name].published
            out[cam.name] = tally
        return out

    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        scn = self.scn
        stop = stop or threading.Event()
        status = "complete"
        for name, node in self.sims.items():
            if node.trigger_activate() != SUCCESS:
                raise HarnessError(f"sim camera {name}: activate failed")
        t0 = time.monotonic()
        next_line = t0 + scn.report_period if scn.report_period else float("inf")
        try:
            while (now := time.monotonic()) - t0 < scn.duration and not stop.is_set():
                self._pump(min(0.05, t0 + scn.duration - now))
                if next_line <= time.monotonic() < t0 + scn.duration:  # the report follows
                    next_line += scn.report_period
                    self.print(self.live(time.monotonic() - t0))
            self.run_s = time.monotonic() - t0
            for node in self.sims.values():
                node.trigger_deactivate()  # no new frames; those in flight still count
            if scn.source != "sim":
                self.matcher.stop()
            deadline = time.monotonic() + scn.drain
            while time.monotonic() < deadline and not stop.is_set():
                self._pump(0.05)
                # our cameras' last frames may still be on their way to the probe
                heard = all(self.images[c].n >= n.published for c, n in self.sims.items())
                if heard and not self.matcher.waiting() and self.inbox.empty():
                    break
            if stop.is_set():
                status = "interrupted"
        except KeyboardInterrupt:
            status = "interrupted"
            self.run_s = self.run_s or time.monotonic() - t0
        self._pump(0.0, final=True)
        return self.report(status)

    def live(self, elapsed: float) -> str:
        return live_line(elapsed, self.cameras_summary(), self.scores.metrics(live=True))

    def report(self, status: str) -> dict[str, Any]:
        scn = self.scn
        cams = self.cameras_summary()
        report: dict[str, Any] = {
            "scenario": scn.name,
            "scenario_file": str(scn.path) if scn.path else None,
            "source": scn.source,
            "status": status,
            "duration_s": self.run_s,
            "latency_mode": scn.latency,
            "domain_id": self.domain,
            "namespace": self.ns,
            "checkpoint": scn.perception.checkpoint if scn.perception.start else None,
            "device": self.perception.device if self.perception is not None else None,
            "backend": self.perception.backend_spec if self.perception is not None else None,
            "outputs": {c: list(o) for c, o in self.outputs.items()},
            "cameras": cams,
            "totals": totals(cams),
            "metrics": {
                **self.scores.metrics(per_class=True),
                "streaming": self.streaming.metrics(),  # every frame in: streaming.py
            },
            "warnings": [*self.warnings, *self.decoder.warnings, *self.scores.warnings],
        }
        if self.perception is not None:
            snap = self.perception.stats.snapshot()["cameras"]
            keys = ("received", "processed", "superseded", "bad", "failed", "discarded")
            report["node_counts"] = {c: {k: s[k] for k in keys} for c, s in snap.items()}
        if self.perception is not None and scn.latency == "stamp":
            # the node's own stamp-to-publish latency (its last 500 frames): the part of the
            # end-to-end figure that is not transport or the harness (stamps on our clock)
            report["node_latency_ms"] = latency_stats(
                [1000.0 * v for s in snap.values() for v in s["latency"] if v is not None]
            )
        return report

    def close(self) -> None:
        if self.ros is not None:
            self.ros.close()


def run_scenario(
    scn: Scenario,
    printer: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run the loop; return the report with its threshold gates (status pass/fail, or
    interrupted). Raises HarnessError when the loop cannot start."""
    loop = Loop(scn, printer)
    try:
        loop.open()
        loop.connect()
        printer(
            f"running '{scn.name}' for {scn.duration:g} s: {len(scn.cameras)} camera(s), "
            f"source {scn.source}, domain {loop.domain}, namespace {loop.ns}"
        )
        report = loop.run(stop)
    finally:
        loop.close()
    return attach_gates(report, check(scn.thresholds, report))
