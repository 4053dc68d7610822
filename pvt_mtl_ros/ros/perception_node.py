"""The perception node: camera frames in; detections, segmentation and scene class out.

A lifecycle node: configure loads the network, activate subscribes and starts the inference
worker, deactivate stops it, cleanup releases the model. Started on its own (`autostart`),
it configures and activates itself.

Flow: each subscription callback only drops the message into its camera's slot (depth 1,
latest frame wins), so the executor never waits on the network. One worker thread takes
every waiting frame at once, converts them (only frames that will run are decoded), runs
them through the network as one batch and publishes each camera's results with the input's
header. Publishers are thread-safe in rclpy.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Classification, Detection2DArray, LabelInfo
from visualization_msgs.msg import ImageMarker

from . import messages as M
from .diagnostics import NodeStats, diagnostics_msg
from .image_conversion import (
    CorruptImageError,
    FrameTooLargeError,
    ImageConversionError,
    array_to_image_msg,
    msg_to_array,
)
from .inprocess import stamp_ns
from .lifecycle import ConfigureError, TableNode, run_node
from .parameters import LIVE, START, Param, ParameterTable

PACKAGE_DIR = Path(__file__).resolve().parents[1]
NODE_NAME = "perception_node"
TRANSPORTS = {"raw": Image, "compressed": CompressedImage}
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
OUTPUTS = (
    "detections", "segmentation", "segmentation_color", "debug_image", "scene", "annotations",
)  # fmt: skip
OUTPUT_TYPES = {
    "detections": Detection2DArray,
    "segmentation": Image,
    "segmentation_color": Image,
    "debug_image": Image,
    "scene": Classification,
    "annotations": ImageMarker,  # foxglove_msgs/ImageAnnotations where it imports (configure)
}
IMAGE_OUTPUTS = ("segmentation", "segmentation_color", "debug_image")  # each has a camera_info
OUTPUT_TOPICS = {"segmentation_color": "segmentation/color"}  # the others: the output's name
# The head each output needs (the debug image draws every head the model has).
OUTPUT_TASKS = {
    "detections": ("detection",),
    "segmentation": ("segmentation",),
    "segmentation_color": ("segmentation",),
    "scene": ("classification",),
    "debug_image": ("detection", "segmentation", "classification"),
    "annotations": ("detection",),
}
LABELLED = {"detections": "detection", "segmentation": "segmentation", "scene": "classification"}
WARN_PERIOD_S = 5.0  # at most one bad-frame warning per camera per period
JOIN_TIMEOUT_S = 30.0  # deactivate waits this long for the batch in flight
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# best effort and volatile: matches every camera_info publisher (reliable or not, latched or not)
CAMERA_INFO_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


OUTPUT_HELP = {
    "detections": "Publish <camera>/detections (vision_msgs/Detection2DArray).",
    "segmentation": "Publish <camera>/segmentation (mono8 class ids; mono16 past 256 classes).",
    "segmentation_color": "Publish <camera>/segmentation/color (rgb8), only while subscribed.",
    "debug_image": "Publish <camera>/debug_image (frame + boxes + mask), only while subscribed.",
    "scene": "Publish <camera>/scene (vision_msgs/Classification, top-k scene classes).",
    "annotations": "Publish <camera>/annotations for Foxglove's Image panel, stamped as the input: "
    "foxglove_msgs/ImageAnnotations (per box its outline and '<class> <score>'; the scene label "
    "when the scene head ran) where foxglove_msgs imports, else visualization_msgs/ImageMarker "
    "(the boxes as one LINE_LIST); only while subscribed.",
}

# The node's parameters: config/perception.yaml mirrors them (test_perception_node checks both
# ways) and docs/PARAMETERS.md is generated from them.
PARAMETERS = ParameterTable(
    "perception_node",
    [
        Param("autostart", True, "Configure and activate at start-up (false: wait for a "
              "lifecycle manager).", when=START),
        Param("checkpoint", "weights/demo_mtl_b0.pt", "pvt_mtl_ros checkpoint; a relative path is "
              "looked up in the working directory, then in the installed pvt_mtl_ros package."),
        Param("device", "auto", "auto (CUDA when available), cpu, cuda or cuda:N."),
        Param("backend", "auto", "Inference backend spec: auto (the fastest path this machine "
              "has; the choice and why are logged), or engine (eager, compile, onnxruntime, "
              "openvino, tensorrt), dtype (fp32, bf16, fp16 on CUDA only) and flags (int8, "
              "channels_last, cuda_graph, split: OpenVINO graphs per head) joined by '+', e.g. "
              "bf16+channels_last or openvino+bf16+split. What the machine cannot run falls "
              "back (logged)."),
        Param("export_cache_dir", "", "Folder that keeps the ONNX export (onnxruntime, openvino) "
              "between starts, keyed by the weights: a restart skips the export. '' = "
              "$XDG_CACHE_HOME/pvt_mtl_ros/onnx (~/.cache/...); 'none' = export at every "
              "configure."),
        Param("cpu_threads", 0, "torch threads on CPU; 0 keeps torch's default.",
              range=(0, 1024)),
        Param("input_size", [0, 0], "Network input [height, width] the letterbox fits frames "
              "into; [0, 0] keeps the checkpoint's."),
        Param("inference_streams", 1, "Frames in flight: workers that each run a whole batch "
              "at once, with OpenVINO compiled for that many streams (the CPU threads shared "
              "out). More frames a second where one frame leaves cores idle, each frame later "
              "(README: camera rate). Other engines run 1.", range=(1, 16)),
        Param("warmup", True, "Run one dummy batch at configure so the first frame is not slow."),
        Param("max_pixels", 50_000_000, "Largest frame (width x height) served; a bigger one is "
              "dropped, from its header before decoding, and counted as bad.",
              range=(1, 2**40)),
        Param("score_threshold", 0.3, "Minimum detection score; the detections label_info "
              "carries it.", when=LIVE, range=(0.0, 1.0)),
        Param("nms_iou", 0.6, "IoU above which NMS suppresses the lower-scored box.", when=LIVE,
              range=(0.0, 1.0)),
        Param("max_detections", 100, "Most detections per frame (before detection_classes "
              "filters them).", when=LIVE, range=(1, 10000)),
        Param("detection_classes", [], "Detection class names to publish; empty publishes "
              "every class. Names the model lacks are refused.", when=LIVE,
              list_type=Parameter.Type.STRING_ARRAY),
        Param("scene_top_k", 3, "Top scene classes per scene message.", when=LIVE,
              range=(1, 999)),
        Param("camera_names", ["camera"], "Cameras to serve; each has its cameras.<name>.* "
              "parameters, and its outputs go under <name>/ in the node's namespace.",
              when=START),
        *[Param(f"outputs.{out}", True, text, when=LIVE) for out, text in OUTPUT_HELP.items()],
        Param("outputs.label_info", True, "Publish <camera>/<output>/label_info (transient "
              "local).", when=LIVE),
        Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages.",
              range=(0.05, 60.0)),
        Param("schedule.on_demand", True, "Run a head only while one of its enabled outputs "
              "(for that camera) has a subscriber; no head needed: no network run. Skipped "
              "heads are counted (heads_skipped). false: every enabled head on every frame.",
              when=LIVE),
        *[Param(f"schedule.every.{task}", 1, f"Run the {task} head on every Nth frame of each "
                "camera (1: every frame); on the others its outputs are not published.",
                when=LIVE, range=(1, 1000))
          for task in ("detection", "segmentation", "classification")],
    ],
)  # fmt: skip

# Each camera's own, under cameras.<name>.; the topic's default follows the transport.
CAMERA_PARAMETERS = ParameterTable(
    "perception_node: cameras.<name>",
    [
        Param("transport", "raw", "raw (sensor_msgs/Image) or compressed (CompressedImage).",
              choices=tuple(TRANSPORTS)),
        Param("topic", lambda v: f"{v['camera']}/image_raw" + ("/compressed" if v["transport"]
              == "compressed" else ""), "Image topic of this camera.",
              shown="<name>/image_raw (+ /compressed)"),
        Param("reliability", "best_effort", "best_effort (sensor data QoS, takes any publisher) "
              "or reliable.", choices=tuple(RELIABILITY)),
        Param("queue_depth", qos_profile_sensor_data.depth, "Subscription history depth. Frames "
              "queue here only while the executor is busy; the node still serves the newest. "
              "Deeper: a reliable publisher loses none then.", range=(1, 1000)),
        Param("camera_info_topic", lambda v: camera_info_sibling(v["topic"], v["transport"]),
              "sensor_msgs/CameraInfo of this camera; the newest one is republished with each "
              "image output (<output>/camera_info: its header, K and P scaled to its size). "
              "'' = none.", shown="beside topic: <dir of topic>/camera_info"),
    ],
)  # fmt: skip


def camera_info_sibling(topic: str, transport: str) -> str:
    """image_transport's convention: the camera_info beside the image topic (the base topic's
    namespace: camera/image_raw and camera/image_raw/compressed -> camera/camera_info)."""
    if transport == "compressed" and topic.endswith("/compressed"):
        topic = topic[: -len("/compressed")]
    head, sep, _ = topic.rpartition("/")
    return f"{head}{sep}camera_info"


def resolve_device(text: str) -> str:
    """`auto`/`cpu`/`cuda`/`cuda:N` -> a torch device string, or ConfigureError."""
    import torch

    text = text.strip().lower()
    if text in ("", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ConfigureError(f"device {text!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise ConfigureError(
            f"device {text!r} requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); set device to 'auto' or 'cpu'"
        )
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise ConfigureError(f"device {text!r} requested but only {count} CUDA device(s) exist")
    return f"cuda:{index}"


def resolve_streams(requested: int, engine: str, device: str) -> int:
    """inference_streams -> workers: OpenVINO on the CPU runs `requested` frames at once; the
    other engines (and CUDA) run one frame at a time."""
    if engine != "openvino" or not device.startswith("cpu"):
        return 1
    return requested


def resolve_checkpoint(text: str) -> Path:
    """An absolute path, or a relative one looked up in the working directory and then in
    the package directory (where the shipped model lives)."""
    if not text.strip():
        raise ConfigureError("parameter 'checkpoint' is empty: set it to a checkpoint file")
    path = Path(text).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, PACKAGE_DIR / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " or ".join(str(c) for c in candidates)
    raise ConfigureError(f"checkpoint not found: {text} (looked for {looked})")


class FrameSlots:
    """Latest-frame-wins: one slot per camera; a new frame replaces the one waiting."""

    def __init__(self, names: list[str]) -> None:
        self._cond = threading.Condition()
        self._frames: dict[str, Any] = dict.fromkeys(names)

    def put(self, name: str, frame: Any) -> bool:
        """Store the frame; True when it replaced one that was still waiting."""
        with self._cond:
            replaced = self._frames[name] is not None
            self._frames[name] = frame
            self._cond.notify()
        return replaced

    def take_all(self, timeout: float) -> list[tuple[str, Any]]:
        """Every waiting frame (emptying the slots); waits up to `timeout` for one."""
        with self._cond:
            if not any(f is not None for f in self._frames.values()):
                self._cond.wait(timeout)
            taken = [(n, f) for n, f in self._frames.items() if f is not None]
            for name, _ in taken:
                self._frames[name] = None
        return taken

    def clear(self) -> list[str]:
        return [name for name, _ in self.take_all(0.0)]

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return sum(f is not None for f in self._frames.values())


@dataclass
class Camera:
    name: str
    topic: str
    transport: str
    reliability: str
    queue_depth: int
    camera_info_topic: str = ""
    subscription: Any = None
    info_subscription: Any = None
    info: Any = None  # the newest CameraInfo received (since activate)
    pubs: dict[str, Any] = field(default_factory=dict)
    info_pubs: dict[str, Any] = field(default_factory=dict)  # image output -> its camera_info
    latched: dict[str, Any] = field(default_factory=dict)  # output -> its label_info publisher
    detections: Any = None  # M.DetectionArrayBuilder: message objects reused per frame
    warned_at: float = float("-inf")
    frames: int = 0  # frames scheduled since activate: the per-task divisors count these
    published: int | None = None  # the newest header stamp published, ns (several workers)
    suppressed: int = 0


class PerceptionNode(TableNode):
    """Multi-task perception for any number of cameras with one network."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        # Everything destroy_node touches exists before parameters are declared.
        self.cameras: list[Camera] = []
        self.slots = FrameSlots([])
        self.device = "none"
        self._workers: list[threading.Thread] = []
        self.streams = 1  # inference workers (inference_streams, resolved at configure)
        self._stop = threading.Event()
        self._diag_pub = self._diag_timer = None
        self.model = self.predictor = None
        super().__init__(node_name, **kwargs)
        self.declare_rows(PARAMETERS.rows())
        names = self._camera_names()
        self.cameras = [self._declare_camera(name) for name in names]
        self.finish_declaring()
        self.stats = NodeStats(names)
        self.slots = FrameSlots(names)
        self.backend_spec = "none"  # the spec that runs (after configure): logs, diagnostics
        self._tasks: tuple[str, ...] = ()
        self._keep_labels: np.ndarray | None = None  # detection_classes as label ids; None: all
        # per head: camera frames it ran for, and frames it was skipped for (schedule.*)
        self.heads_run: Counter[str] = Counter()
        self.heads_skipped: Counter[str] = Counter()
        # held while publishing a camera's results, and while outputs are switched live
        self._outputs_lock = threading.Lock()
        self._schedule_lock = threading.Lock()  # the workers' frame counts and head counters
        self._palette = np.zeros((0, 3), np.uint8)
        self._annotations_type: type = ImageMarker  # chosen at configure

    # -- parameters --------------------------------------------------------------------------

    def _camera_names(self) -> list[str]:
        """camera_names as given, less the ones that are no ROS name token (a problem)."""
        names = []
        for name in self.p("camera_names"):
            if name in names or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                self.parameter_problems.append(
                    f"camera_names: {name!r} is repeated or not a ROS name token "
                    "(a letter, then letters, digits or _)"
                )
            else:
                names.append(name)
        if not names:
            self.parameter_problems.append("camera_names: name at least one camera")
        return names

    def _declare_camera(self, name: str) -> Camera:
        prefix = f"cameras.{name}"
        v = self.declare_rows(CAMERA_PARAMETERS.under(prefix), camera=name)
        return Camera(
            name, v[f"{prefix}.topic"], v[f"{prefix}.transport"], v[f"{prefix}.reliability"],
            v[f"{prefix}.queue_depth"], v[f"{prefix}.camera_info_topic"],
        )  # fmt: skip

    def check_parameters(self) -> None:
        """Overrides for a camera not in camera_names only warn: the shipped YAML sets
        cameras.camera.* and `-p camera_names:=[front]` must still run with it."""
        served = {c.name for c in self.cameras}

        def other_camera(name: str) -> bool:
            parts = name.split(".")
            return len(parts) == 3 and parts[0] == "cameras" and parts[1] not in served

        others = sorted(n for n in self.unknown_overrides() if other_camera(n))
        if others:
            self.get_logger().warning(
                f"ignored {', '.join(others)}: not in camera_names {sorted(served)}"
            )
        problems = self.parameter_problems + self.unknown_problems(ignore=other_camera)
        if problems:
            raise ConfigureError("parameters: " + "; ".join(problems))

    def _live(self) -> dict[str, Any]:
        """Thresholds read for every batch, so `ros2 param set` takes effect at once."""
        names = ("score_threshold", "nms_iou", "max_detections", "scene_top_k")
        return {n: self.get_parameter(n).value for n in names}

    def check_live(self, param: Parameter) -> str | None:
        if param.name == "detection_classes" and self.model is not None:
            try:
                self._class_filter(param.value)
            except ConfigureError as err:
                return str(err)
        return None

    def parameters_changed(self, params: list[Parameter]) -> None:
        """What a live set changes beyond the values read for each frame."""
        names = {p.name for p in params}
        if "detection_classes" in names and self.model is not None:
            self._keep_labels = self._class_filter(self.p("detection_classes"))
        if self.state != "active":
            return  # activate reads the outputs
        if any(n.startswith("outputs.") for n in names):
            self._sync_outputs()
        if "score_threshold" in names:
            for cam in self.cameras:
                if "detections" in cam.latched:
                    self._publish_label_info(cam, "detections")

    def _class_filter(self, names: list[str]) -> np.ndarray | None:
        """detection_classes -> the label ids kept (None: every class), or ConfigureError."""
        if not names:
            return None
        det = self.model.cfg.detection
        classes = list(det.classes) if det is not None else []
        missing = [n for n in names if n not in classes]
        if missing:
            raise ConfigureError(
                f"detection_classes {list(names)}: {', '.join(map(repr, missing))} not among "
                f"this model's detection classes ({', '.join(classes) or 'none'})"
            )
        return np.array([classes.index(n) for n in names], np.int64)

    # -- lifecycle (TableNode runs these and turns errors into one logged line) --------------

    def configure(self) -> None:
        self._load_model()

    def activate(self) -> None:
        self._start_serving()

    def deactivate(self) -> None:
        self._stop_serving()

    def release(self) -> None:
        self._release_model()

    def destroy_node(self) -> None:
        self._stop_serving()
        self._release_model()
        super().destroy_node()

    # -- configure: the model ----------------------------------------------------------------

    def _load_model(self) -> None:
        """Cheap checks first, so a wrong setting fails before torch is even imported."""
        for cam in self.cameras:  # as set now (`ros2 param set` before configure counts)
            prefix = f"cameras.{cam.name}"
            cam.topic, cam.transport, cam.reliability, cam.queue_depth, cam.camera_info_topic = (
                self.p(f"{prefix}.{key}")
                for key in ("topic", "transport", "reliability", "queue_depth", "camera_info_topic")
            )  # the table's choices keep transport and reliability valid
        size = list(self.get_parameter("input_size").value)
        if len(size) != 2 or min(size) < 0 or (0 in size and size != [0, 0]):
            raise ConfigureError(f"input_size {size} must be [height, width] > 0, or [0, 0]")
        path = resolve_checkpoint(self.get_parameter("checkpoint").value)
        device = resolve_device(self.get_parameter("device").value)  # imports torch: after
        from functools import partial

        from ..inference.backends import Predictor, choose
        from ..inference.export import default_cache_dir
        from ..sim.calibration import calibration_frames

        requested = self.get_parameter("backend").value
        try:
            choice = choose(requested, device)  # the one policy (auto, fallbacks), once
        except ValueError as err:
            raise ConfigureError(f"parameter 'backend': {err}") from None
        import torch

        from ..model import CheckpointError, load_checkpoint

        threads = self.get_parameter("cpu_threads").value
        if threads > 0 and device == "cpu":
            torch.set_num_threads(threads)  # process-wide: torch has one CPU pool
        try:
            model = load_checkpoint(path, map_location=device)
        except CheckpointError as err:
            raise ConfigureError(str(err)) from None
        except (RuntimeError, OSError) as err:  # e.g. CUDA out of memory
            raise ConfigureError(f"cannot load {path} onto {device}: {err}") from None
        if size != [0, 0]:
            model.cfg.input_size = (int(size[0]), int(size[1]))
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed camera sizes: tune once
        for note in choice.notes:  # what this machine cannot run: into the log
            self.get_logger().warning(note)
        cache = self.get_parameter("export_cache_dir").value
        cache = None if cache == "none" else cache or default_cache_dir()
        frames = partial(calibration_frames, *model.cfg.input_size)  # int8: rendered if needed
        streams = resolve_streams(self.p("inference_streams"), choice.spec.engine, device)
        # an ONNX export, unless cached
        predictor = Predictor(model, choice, cache_dir=cache, calibration=frames, streams=streams)
        self.model, self.predictor, self.device = model, predictor, device
        self.streams = streams
        self.backend_spec = str(predictor.spec)
        self._tasks = self._needed_tasks(model)
        self._keep_labels = self._class_filter(self.p("detection_classes"))
        self._annotations_type = M.foxglove_annotations_type() or ImageMarker
        if model.cfg.detection is not None:
            self.get_logger().info(
                "annotations: foxglove_msgs/ImageAnnotations"
                if self._annotations_type is not ImageMarker
                else "annotations: visualization_msgs/ImageMarker (foxglove_msgs does not import)"
            )
        if model.cfg.segmentation is not None:
            self._palette = M.palette(len(model.cfg.segmentation.classes))
        if self.get_parameter("warmup").value and self._tasks:
            # through the predictor, so torch.compile, CUDA graph capture and ONNX Runtime's
            # first run happen now; one batch and a batch of every camera (the usual shapes)
            h, w = model.cfg.input_size
            for n in sorted({1, len(self.cameras)}):
                predictor.predict([np.zeros((h, w, 3), np.uint8)] * n, tasks=self._tasks)
        self.get_logger().info(
            f"loaded {path} ({model.cfg.backbone}, tasks {', '.join(model.tasks)}, input "
            f"{model.cfg.input_size[0]}x{model.cfg.input_size[1]}) on {device}, "
            f"{predictor.reason}; {streams} inference stream{'s' if streams > 1 else ''}"
        )

    def _needed_tasks(self, model: Any) -> tuple[str, ...]:
        """Only the heads whose outputs are enabled run."""
        on = [o for o in OUTPUTS if self.p(f"outputs.{o}")]
        return tuple(t for t in model.tasks if any(t in OUTPUT_TASKS[o] for o in on))

    def _release_model(self) -> None:
        was_cuda = self.device.startswith("cuda")
        self.model = self.predictor = None
        self._tasks, self.device, self.backend_spec = (), "none", "none"
        self._keep_labels = None
        if was_cuda:
            import torch

            torch.cuda.empty_cache()

    # -- activate: topics and the worker ----------------------------------------------------

    def _start_serving(self) -> None:
        self._sync_outputs()
        for cam in self.cameras:
            cam.frames, cam.published = 0, None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self.get_parameter("diagnostics_period").value
        self._diag_timer = self.create_timer(period, self._publish_diagnostics)
        self._stop.clear()
        self._workers = [
            threading.Thread(target=self._work, name=f"perception-worker-{i}", daemon=True)
            for i in range(self.streams)
        ]
        for worker in self._workers:
            worker.start()
        for cam in self.cameras:  # last: no frame arrives before the worker runs
            qos = QoSProfile(
                history=qos_profile_sensor_data.history,
                depth=cam.queue_depth,
                reliability=RELIABILITY[cam.reliability],
            )
            cam.subscription = self._subscribe(cam, qos)
            if cam.camera_info_topic:
                cam.info_subscription = self.create_subscription(
                    CameraInfo, cam.camera_info_topic, lambda m, c=cam: setattr(c, "info", m),
                    CAMERA_INFO_QOS,
                )  # fmt: skip
        topics_in = ", ".join(f"{c.name}: {c.topic} ({c.transport})" for c in self.cameras)
        self.get_logger().info(f"serving {topics_in}")

    def _sync_outputs(self) -> None:
        """Publishers (and latched label_info) for exactly the enabled outputs the model can
        produce: at activate, and when an outputs.* parameter is set live."""
        cfg, model_tasks = self.model.cfg, set(self.model.tasks)
        on = {o for o in OUTPUTS if self.p(f"outputs.{o}")}
        wanted = {o for o in on if model_tasks & set(OUTPUT_TASKS[o])}
        labels = self.p("outputs.label_info")
        with self._outputs_lock:
            for cam in self.cameras:
                pubs = dict(cam.pubs)
                for out in OUTPUTS:
                    if out in wanted and out not in pubs:
                        topic = f"{cam.name}/{OUTPUT_TOPICS.get(out, out)}"
                        kind = self._annotations_type if out == "annotations" else OUTPUT_TYPES[out]
                        pubs[out] = self.create_publisher(kind, topic, OUTPUT_QOS)
                    elif out not in wanted and out in pubs:
                        self.destroy_publisher(pubs.pop(out))
                if "detections" in pubs and cam.detections is None:
                    cam.detections = M.DetectionArrayBuilder(cfg.detection.classes)
                for out in IMAGE_OUTPUTS:
                    info = cam.camera_info_topic and out in pubs
                    if info and out not in cam.info_pubs:
                        topic = f"{cam.name}/{OUTPUT_TOPICS.get(out, out)}/camera_info"
                        cam.info_pubs[out] = self.create_publisher(CameraInfo, topic, OUTPUT_QOS)
                    elif not info and out in cam.info_pubs:
                        self.destroy_publisher(cam.info_pubs.pop(out))
                cam.pubs = pubs
                for out in LABELLED:
                    if labels and out in pubs and out not in cam.latched:
                        topic = f"{cam.name}/{out}/label_info"
                        cam.latched[out] = self.create_publisher(LabelInfo, topic, LATCHED_QOS)
                        self._publish_label_info(cam, out)
                    elif not (labels and out in pubs) and out in cam.latched:
                        self.destroy_publisher(cam.latched.pop(out))
            self._tasks = self._needed_tasks(self.model)

    def _publish_label_info(self, cam: Camera, out: str) -> None:
        """The class map of an output; the detections' carries the score threshold."""
        classes = getattr(self.model.cfg, LABELLED[out]).classes
        threshold = self.p("score_threshold") if out == "detections" else 0.0
        msg = M.label_info_msg(Header(stamp=self._now_stamp()), classes, threshold)
        cam.latched[out].publish(msg)

    def _stop_serving(self) -> None:
        for cam in self.cameras:
            if cam.subscription is not None:
                self.destroy_subscription(cam.subscription)
                cam.subscription = None
            if cam.info_subscription is not None:
                self.destroy_subscription(cam.info_subscription)
                cam.info_subscription = cam.info = None
        self._stop.set()
        self.slots.wake()
        workers, self._workers = self._workers, []
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if any(w.is_alive() for w in workers):
            self.get_logger().warning("an inference worker did not stop in time")
        for name in self.slots.clear():
            self.stats.count(name, "discarded")
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        self._diag_timer = self._diag_pub = None
        for cam in self.cameras:
            for pub in [*cam.pubs.values(), *cam.latched.values(), *cam.info_pubs.values()]:
                self.destroy_publisher(pub)
            cam.pubs, cam.latched, cam.info_pubs, cam.detections = {}, {}, {}, None

    # -- the data path ------------------------------------------------------------------------

    def _subscribe(self, cam: Camera, qos: QoSProfile) -> Any:
        """The camera's subscription, with the middleware's message-lost event counted
        where the RMW reports it (a best-effort frame too big for the transport is lost
        before the node, with no other trace)."""
        from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError

        kind = TRANSPORTS[cam.transport]
        callback = lambda msg, c=cam: self._on_frame(c, msg)  # noqa: E731
        lost = SubscriptionEventCallbacks(message_lost=lambda info, c=cam: self._on_lost(c, info))
        try:
            return self.create_subscription(kind, cam.topic, callback, qos, event_callbacks=lost)
        except UnsupportedEventTypeError:
            self.stats.no_lost_detection(cam.name)
            return self.create_subscription(kind, cam.topic, callback, qos)

    def _on_frame(self, cam: Camera, msg: Any) -> None:
        """Executor thread: keep only the newest frame; never touches the network."""
        self.stats.count(cam.name, "received")
        if self.slots.put(cam.name, (msg, time.perf_counter())):
            self.stats.count(cam.name, "superseded")

    def _on_lost(self, cam: Camera, info: Any) -> None:
        """Executor thread: frames sent to this camera's topic that never arrived."""
        self.stats.count(cam.name, "lost", n=int(info.total_count_change))
        self._warn_bad(
            cam,
            f"{info.total_count_change} frame(s) lost before reaching the node "
            "(QoS message-lost event; large best-effort frames: README, Robustness)",
        )

    def _work(self) -> None:
        while not self._stop.is_set():
            frames = self.slots.take_all(timeout=0.2)
            if not frames:
                continue
            if self._stop.is_set():
                for name, _ in frames:
                    self.stats.count(name, "discarded")
                break
            try:
                self._process(frames)
            except Exception as err:  # keep serving whatever happens to one batch
                self.get_logger().error(
                    f"batch failed: {type(err).__name__}: {err}", throttle_duration_sec=5.0
                )

    def _process(self, frames: list[tuple[str, Any]]) -> None:
        cycle_start = time.perf_counter()
        by_name = {c.name: c for c in self.cameras}
        max_pixels = self.get_parameter("max_pixels").value
        batch = []
        for name, (msg, received) in frames:
            cam = by_name[name]
            try:
                rgb = msg_to_array(msg, "rgb8", max_pixels=max_pixels)
                if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
                    raise ImageConversionError(f"converted frame has shape {rgb.shape}")
            except Exception as err:  # ImageConversionError, or anything a backend raises
                reason = str(err) if isinstance(err, ImageConversionError) else repr(err)
                self.stats.count(name, "bad", error=reason)
                detail = {FrameTooLargeError: "too_large", CorruptImageError: "corrupt"}
                if type(err) in detail:
                    self.stats.count(name, detail[type(err)])
                self._warn_bad(cam, reason)
                continue
            batch.append((cam, msg.header, rgb, received))
        if not batch:
            return
        live = self._live()
        tasks = self._schedule([b[0] for b in batch])
        start = time.perf_counter()
        try:
            results = self._predict([b[2] for b in batch], tasks, live)
        except Exception as err:
            for cam, *_ in batch:
                self.stats.count(cam.name, "failed", error=f"inference: {err}")
            self.get_logger().error(
                f"inference failed: {type(err).__name__}: {err}", throttle_duration_sec=5.0
            )
            return
        inference = time.perf_counter() - start
        if not self.context.ok():  # shut down under us: publishing would only log errors
            for cam, *_ in batch:
                self.stats.count(cam.name, "discarded")
            return
        served = []
        for (cam, header, rgb, received), result in zip(batch, results):
            stamp = stamp_ns(header)
            if not self._publish(cam, header, rgb, result, live["scene_top_k"]):
                self.stats.count(cam.name, "superseded")  # a newer frame was published first
                continue
            now_ns = self.get_clock().now().nanoseconds
            latency = (now_ns - stamp) / 1e9 if stamp else None
            self.stats.published(cam.name, latency, time.perf_counter() - received)
            served.append((cam.name, stamp))
        self.stats.batch(served, inference, time.perf_counter() - cycle_start)

    def _schedule(self, cams: list[Camera]) -> tuple[str, ...]:
        """The heads this batch runs: each enabled head that is due for one of its cameras
        (that camera's frame count modulo schedule.every.<task>) and, with
        schedule.on_demand, has a subscriber to one of that camera's outputs it feeds. A
        head runs for the whole batch; the frames it did not run for are counted skipped."""
        on_demand = self.p("schedule.on_demand")
        every = {t: self.p(f"schedule.every.{t}") for t in self._tasks}
        run: set[str] = set()
        with self._schedule_lock:  # the workers take frames of one camera in turn
            for cam in cams:
                due = {t for t in self._tasks if cam.frames % every[t] == 0}
                if on_demand:
                    due &= self._subscribed_tasks(cam)
                run |= due
                cam.frames += 1
            for task in self._tasks:
                (self.heads_run if task in run else self.heads_skipped)[task] += len(cams)
        return tuple(t for t in self._tasks if t in run)

    def _subscribed_tasks(self, cam: Camera) -> set[str]:
        pubs = cam.pubs
        return {
            task
            for out, pub in pubs.items()
            if pub.get_subscription_count() > 0
            for task in OUTPUT_TASKS[out]
        }

    def _predict(self, images: list, tasks: tuple[str, ...], live: dict) -> list:
        """The predictor's results; with no head to run, empty ones (no network run)."""
        if not tasks:
            from ..inference.predictor import PredictionResult

            return [PredictionResult() for _ in images]
        return self.predictor.predict(
            images,
            tasks=tasks,
            score_thresh=live["score_threshold"],
            nms_iou=live["nms_iou"],
            max_detections=live["max_detections"],
        )

    def _publish(self, cam: Camera, header, rgb, res, top_k: int) -> bool:
        """Publish one frame's results; False (nothing published) when another worker has
        already published a newer frame of this camera: outputs never go back in time."""
        keep = self._keep_labels
        if keep is not None and res.boxes is not None:
            kept = np.isin(res.labels, keep)
            res.boxes, res.scores, res.labels = res.boxes[kept], res.scores[kept], res.labels[kept]
        with self._outputs_lock:  # no output is switched off while this camera publishes
            stamp = stamp_ns(header)
            if self.streams > 1 and cam.published is not None and stamp < cam.published:
                return False
            cam.published = stamp
            self._publish_outputs(cam, header, rgb, res, top_k)
        return True

    def _publish_outputs(self, cam: Camera, header, rgb, res, top_k: int) -> None:
        pubs, cfg = cam.pubs, self.model.cfg
        if "detections" in pubs and res.boxes is not None:
            # the builder reuses its objects: safe, publish() has serialised them on return
            pubs["detections"].publish(cam.detections(header, res.boxes, res.scores, res.labels))
        annotations = pubs.get("annotations")  # drawn by viewers: built only for a subscriber
        if annotations is not None and res.boxes is not None:
            if annotations.get_subscription_count() > 0:
                annotations.publish(self._annotations_msg(header, res))
        if res.mask is not None:
            if "segmentation" in pubs:
                self._publish_image(cam, "segmentation", M.segmentation_msg(header, res.mask), rgb)
            colour = pubs.get("segmentation_color")
            if colour is not None and colour.get_subscription_count() > 0:
                msg = M.segmentation_color_msg(header, res.mask, self._palette)
                self._publish_image(cam, "segmentation_color", msg, rgb)
        if "scene" in pubs and res.class_probs is not None:
            names = cfg.classification.classes
            pubs["scene"].publish(M.scene_msg(header, res.class_probs, names, top_k))
        debug = pubs.get("debug_image")
        if debug is not None and debug.get_subscription_count() > 0:
            self._publish_image(cam, "debug_image", self._debug_msg(header, rgb, res), rgb)

    def _annotations_msg(self, header, res) -> Any:
        if self._annotations_type is ImageMarker:
            return M.image_marker_msg(header, res.boxes, res.labels)
        cfg = self.model.cfg
        scene = None
        if res.class_probs is not None:
            scene = M.scene_caption(res.class_probs, cfg.classification.classes)
        return M.image_annotations_msg(
            header, res.boxes, res.scores, res.labels, cfg.detection.classes, scene=scene
        )

    def _publish_image(self, cam: Camera, out: str, msg: Any, rgb: np.ndarray) -> None:
        """An image output, then the camera's newest camera_info matched to it."""
        cam.pubs[out].publish(msg)
        info, info_pub = cam.info, cam.info_pubs.get(out)
        if info is not None and info_pub is not None:
            size = (msg.height, msg.width)
            info_pub.publish(M.camera_info_msg(info, msg.header, rgb.shape[:2], size))

    def _debug_msg(self, header, rgb, res) -> Any:
        cfg = self.model.cfg
        scene = None
        if res.class_probs is not None:
            scene = M.scene_caption(res.class_probs, cfg.classification.classes)
        image = M.debug_image(
            rgb,
            mask=res.mask,
            mask_colours=self._palette if res.mask is not None else None,
            boxes=res.boxes,
            scores=res.scores,
            labels=res.labels,
            det_names=cfg.detection.classes if cfg.detection else (),
            scene=scene,
        )
        return array_to_image_msg(image, "rgb8", header=M.copy_header(header))

    def _warn_bad(self, cam: Camera, reason: str) -> None:
        """One warning per camera per WARN_PERIOD_S, counting the ones it stands for."""
        now = time.monotonic()
        if now - cam.warned_at < WARN_PERIOD_S:
            cam.suppressed += 1
            return
        more = f" ({cam.suppressed} more since the last warning)" if cam.suppressed else ""
        self.get_logger().warning(
            f"camera '{cam.name}' ({cam.topic}): dropped a frame: {reason}{more}"
        )
        cam.warned_at, cam.suppressed = now, 0

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is not None:
            tasks = self.model.tasks if self.model is not None else ()
            heads = {t: (self.heads_run[t], self.heads_skipped[t]) for t in tasks}
            msg = diagnostics_msg(
                self.stats, self.get_name(), self.device, self.backend_spec, self._now_stamp(),
                heads=heads, streams=self.streams,
            )  # fmt: skip
            self._diag_pub.publish(msg)

    def _now_stamp(self) -> Any:
        return self.get_clock().now().to_msg()


def main(args: list[str] | None = None) -> int:
    """`perception_node` / `python -m pvt_mtl_ros.ros.perception_node --ros-args ...`."""
    return run_node(PerceptionNode, args)


if __name__ == "__main__":
    sys.exit(main())
