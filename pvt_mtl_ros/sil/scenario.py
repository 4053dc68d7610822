"""Scenario files: YAML -> a validated `Scenario`, or one `ScenarioError` that names the file,
the key and what is allowed. No ROS here, so a bad file fails before anything starts."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvt_mtl_ros.config_loader import ConfigError, read_yaml, set_key
from pvt_mtl_ros.conventions import SIM_TEST_SEEDS

SOURCES = ("sim", "carla", "gazebo")
LATENCY_MODES = ("stamp", "arrival")
TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("reliable", "best_effort")
OUTPUTS = ("detections", "segmentation", "scene")
SEG_CLASS_SETS = ("camvid", "cityscapes")
SEED_STRIDE = 1_000_000  # cameras without their own seeds get disjoint ranges this far apart
# name -> (kind, help): "min" thresholds fail below the limit, "max" ones above it.
THRESHOLDS: dict[str, tuple[str, str]] = {
    "ap50": ("min", "detection AP at IoU 0.5 over every class with ground truth"),
    "ap50_per_class": ("min", "{class name: minimum AP50}"),
    "miou": ("min", "segmentation mIoU (model classes present in the ground truth)"),
    "scene_accuracy": ("min", "top-1 scene accuracy"),
    "latency_p50_ms": ("max", "end-to-end latency, median"),
    "latency_p95_ms": ("max", "end-to-end latency, 95th percentile"),
    "latency_p99_ms": ("max", "end-to-end latency, 99th percentile"),
    "output_rate_hz": ("min", "frames with every output per second, slowest camera"),
    "dropped_frames": ("max", "frames that got no complete output"),
    "dropped_fraction": ("max", "dropped frames / frames in"),
    "unmatched_outputs": ("max", "outputs whose stamp matches no input frame"),
    "min_scored_frames": ("min", "frames scored against ground truth (guards empty runs)"),
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_MISSING = object()


# A scenario that cannot run; the message says where and what to fix (the config loader's
# error, so a bad file, --set or key all read the same).
ScenarioError = ConfigError

DEFAULT_SCENARIO = "config/sil/default.yaml"  # what `pvt-mtl-sil` runs without a file


def shipped_file(relative: str) -> Path:
    """A file the package ships (setup.py data_files): in the checkout beside the package, else
    in the installed share/pvt_mtl_ros (the ament index), as the launch file and demo find it."""
    candidate = Path(__file__).resolve().parents[2] / relative
    if candidate.is_file():
        return candidate
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        raise ScenarioError(f"{relative} not found at {candidate} (no ament_index_python "
                            "to look in an installed share/pvt_mtl_ros)") from None  # fmt: skip
    try:
        shared = Path(get_package_share_directory("pvt_mtl_ros")) / relative
    except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (no install)
        shared = None
    if shared is None or not shared.is_file():
        where = f"{candidate}" + (f" or {shared}" if shared else "")
        raise ScenarioError(f"{relative} not found (looked for {where}); name a scenario file")
    return shared


@dataclass
class GroundTruthSpec:
    """Where one camera's ground truth comes from; None: not scored for that task."""

    detections: str | None = None
    segmentation: str | None = None
    scene: str | None = None
    scene_label: str | None = None  # a constant scene class (e.g. the world's), for every frame

    def kinds(self) -> tuple[str, ...]:
        """The ground-truth parts every frame of this camera must have to be scored."""
        topics = {"detections": self.detections, "segmentation": self.segmentation,
                  "scene": self.scene or self.scene_label}  # fmt: skip
        return tuple(k for k, v in topics.items() if v)


@dataclass
class CameraSpec:
    name: str
    image: str  # topic; relative topics resolve in the harness's namespace
    transport: str = "raw"
    reliability: str = "reliable"
    ground_truth: GroundTruthSpec = field(default_factory=GroundTruthSpec)
    sim: dict[str, Any] = field(default_factory=dict)  # sim_camera_node parameters


@dataclass
class PerceptionSpec:
    start: bool = True  # run the perception node in the harness's process
    checkpoint: str = ""
    device: str = "auto"
    namespace: str = ""  # "": a fresh private one (start: true) or the root (start: false)
    outputs: tuple[str, ...] = OUTPUTS  # expected outputs when the node is not ours
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    source: str
    duration: float
    cameras: list[CameraSpec]
    perception: PerceptionSpec
    thresholds: dict[str, Any] = field(default_factory=dict)
    rate: float = 10.0
    report_period: float = 2.0
    latency: str = "stamp"
    drain: float = 10.0
    min_box_height: float = 0.0  # KITTI height rule for AP: lower gt boxes are ignore regions
    connect_timeout: float = 60.0
    domain_id: int | None = None  # None: random (sim) or ROS_DOMAIN_ID (carla, gazebo)
    carla: dict[str, Any] = field(default_factory=dict)
    gazebo: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


class _Section:
    """Typed reads from one mapping; unknown keys become an error with suggestions."""

    def __init__(self, data: Any, where: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data, self.where, self.used = data, where, set()

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: Any, default: Any = _MISSING, choices=None, check=None) -> Any:
        self.used.add(key)
        if key not in self.data or (self.data[key] is None and default is None):
            if default is _MISSING:
                raise ScenarioError(f"{self.at(key)}: required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ScenarioError(f"{self.at(key)}: expected {names}, got {value!r}")
        if choices is not None and value not in choices:
            raise ScenarioError(f"{self.at(key)}: {value!r} is not one of {', '.join(choices)}")
        if check is not None:
            problem = check(value)
            if problem:
                raise ScenarioError(f"{self.at(key)}: {problem} (got {value!r})")
        return value

    def section(self, key: str) -> _Section:
        self.used.add(key)
        return _Section(self.data.get(key), self.at(key))

    def done(self, allowed_extra: tuple[str, ...] = ()) -> None:
        unknown = [k for k in self.data if k not in self.used and k not in allowed_extra]
        if unknown:
            key = str(unknown[0])
            known = {str(k).lower(): str(k) for k in (*self.used, *allowed_extra)}
            near = difflib.get_close_matches(key.lower(), list(known), n=1)
            hint = f" (did you mean {known[near[0]]!r}?)" if near else ""
            known = ", ".join(sorted(map(str, {*self.used, *allowed_extra})))
            raise ScenarioError(f"{self.at(key)}: unknown key{hint}; known keys: {known}")


def positive(v: float) -> str:
    return "" if v > 0 else "must be > 0"


def non_negative(v: float) -> str:
    return "" if v >= 0 else "must be >= 0"


def ros_name(v: str) -> str:
    return "" if _NAME.fullmatch(v) else "must be a ROS name token ([A-Za-z][A-Za-z0-9_]*)"


def load_scenario(path: str | Path, overrides: list[tuple[str, Any]] | None = None) -> Scenario:
    """Read and validate a scenario file (see docs/SIL.md for every key; ``_base_:`` inherits
    another file); `overrides` are (dotted key, value) pairs (config_loader.parse_assignment)
    applied to the file's content first."""
    path = Path(path)
    data = read_yaml(path)
    try:
        for key, value in overrides or []:
            set_key(data, key, value)
        scenario = parse_scenario(data, default_name=path.stem)
    except ScenarioError as err:
        raise ScenarioError(f"{path}: {err}") from None
    scenario.path = path
    return scenario


def parse_scenario(data: dict, default_name: str = "scenario") -> Scenario:
    top = _Section(data, "")
    source = top.get("source", str, "sim", choices=SOURCES)
    scn = Scenario(
        name=top.get("name", str, default_name),
        source=source,
        duration=top.get("duration", float, check=positive),
        cameras=[],
        perception=_perception(top.section("perception"), source),
        rate=top.get("rate", float, 10.0, check=positive),
        report_period=top.get("report_period", float, 2.0, check=non_negative),
        latency=top.get(
            "latency", str, "stamp" if source == "sim" else "arrival", choices=LATENCY_MODES
        ),
        drain=top.get("drain", float, 10.0, check=non_negative),
        min_box_height=top.get("min_box_height", float, 0.0, check=non_negative),
        connect_timeout=top.get("connect_timeout", float, 60.0, check=positive),
    )
    domain = top.get("domain_id", (int, str), "auto")
    if domain != "auto" and not (isinstance(domain, int) and 0 <= domain <= 232):
        raise ScenarioError(f"domain_id: 'auto' or an integer 0..232, got {domain!r}")
    scn.domain_id = None if domain == "auto" else domain
    seeds = top.section("seeds")
    seed_start = seeds.get("start", int, SIM_TEST_SEEDS, check=non_negative)
    seed_count = seeds.get("count", int, 0, check=non_negative)
    seeds.done()
    sim_defaults = _sim_parameters(top.section("sim"), allow_transport=True)
    scn.carla = _carla(top.section("carla")) if source == "carla" else {}
    scn.gazebo = _gazebo(top.section("gazebo")) if source == "gazebo" else {}
    if source != "carla":
        top.used.add("carla")  # a shared file may carry every adapter's section
    if source != "gazebo":
        top.used.add("gazebo")
    cameras = top.get("cameras", list)
    if not cameras:
        raise ScenarioError("cameras: at least one camera is needed")
    stride = seed_count or SEED_STRIDE
    for i, raw in enumerate(cameras):
        defaults = {"rate": scn.rate, **sim_defaults}
        defaults.setdefault("seed_start", seed_start + i * stride)
        defaults.setdefault("seed_count", seed_count)
        scn.cameras.append(_camera(_Section(raw, f"cameras[{i}]"), scn, defaults))
    names = [c.name for c in scn.cameras]
    if len(set(names)) != len(names):
        raise ScenarioError(f"cameras: names must be unique, got {names}")
    scn.thresholds = _thresholds(top.section("thresholds"))
    top.done()
    return scn


def _perception(sec: _Section, source: str) -> PerceptionSpec:
    spec = PerceptionSpec(
        start=sec.get("start", bool, True),
        checkpoint=sec.get("checkpoint", str, ""),
        device=sec.get("device", str, "auto"),
        namespace=sec.get("namespace", str, ""),
        parameters=dict(sec.get("parameters", dict, {})),
    )
    outputs = sec.get("outputs", list, list(OUTPUTS))
    bad = [o for o in outputs if o not in OUTPUTS]
    if bad or not outputs:
        raise ScenarioError(f"{sec.at('outputs')}: a non-empty list of {', '.join(OUTPUTS)}")
    spec.outputs = tuple(outputs)
    if spec.start and not spec.checkpoint:
        raise ScenarioError(f"{sec.at('checkpoint')}: required when perception.start is true")
    if not spec.start and source == "sim" and not spec.namespace:
        raise ScenarioError(
            f"{sec.at('namespace')}: required with perception.start false (where the running "
            "node's outputs are)"
        )
    sec.done()
    return spec


def _sim_parameters(sec: _Section, allow_transport: bool) -> dict[str, Any]:
    """Keys of a `sim:` block or a sim camera: sim_camera_node parameters."""
    from pvt_mtl_ros.ros.sim_camera_node import PARAMETERS  # the node's own table

    out = {}
    for name, row in PARAMETERS.items():
        default = row.default
        if name in ("autostart", "max_frames") or (name == "transport" and not allow_transport):
            continue  # the harness drives these
        sec.used.add(name)  # a known key, listed in errors, even where absent
        if name in sec.data:
            kind = float if isinstance(default, float) else type(default)
            out[name] = sec.get(name, kind)
    return out


def _camera(sec: _Section, scn: Scenario, sim_defaults: dict) -> CameraSpec:
    name = sec.get("name", str, check=ros_name)
    transport = sec.get("transport", str, sim_defaults.get("transport", "raw"), choices=TRANSPORTS)
    gt_sec = sec.section("ground_truth")
    if scn.source == "sim":
        own = _sim_parameters(sec, allow_transport=False)
        seeds = sec.section("seeds")
        if seeds.data:
            own["seed_start"] = seeds.get("start", int, check=non_negative)
            own["seed_count"] = seeds.get("count", int, 0, check=non_negative)
        seeds.done()
        suffix = "image_raw/compressed" if transport == "compressed" else "image_raw"
        camera = CameraSpec(
            name=name,
            image=f"{name}/{suffix}",
            transport=transport,
            reliability=sec.get("reliability", str, "reliable", choices=RELIABILITIES),
            sim={**sim_defaults, **own, "transport": transport},
        )
        gt = {k: f"{name}/ground_truth/{k}" for k in OUTPUTS}
    else:
        # CARLA's ROS bridge names camera topics by convention; Gazebo bridges do not.
        default_image = (
            f"/carla/{scn.carla['vehicle']}/{name}/image" if scn.source == "carla" else _MISSING
        )
        camera = CameraSpec(
            name=name,
            image=sec.get("image", str, default_image, check=_topic),
            transport=transport,
            reliability=sec.get("reliability", str, "best_effort", choices=RELIABILITIES),
        )
        gt = {k: None for k in OUTPUTS}
        if scn.source == "carla":
            semantic = sec.get("semantic_camera", str, None)
            if semantic:
                gt["segmentation"] = f"/carla/{scn.carla['vehicle']}/{semantic}/image"
    camera.ground_truth = GroundTruthSpec(
        detections=gt_sec.get("detections", str, gt["detections"]),
        segmentation=gt_sec.get("segmentation", str, gt["segmentation"]),
        scene=gt_sec.get("scene", str, gt["scene"]),
        scene_label=gt_sec.get("scene_label", str, None),
    )
    # an explicit null switches a default topic off
    for key in OUTPUTS:
        if key in gt_sec.data and gt_sec.data[key] is None:
            setattr(camera.ground_truth, key, None)
    if camera.ground_truth.scene and camera.ground_truth.scene_label:
        raise ScenarioError(f"{gt_sec.where}: give scene (a topic) or scene_label, not both")
    gt_sec.done()
    sec.done()
    return camera


def _carla(sec: _Section) -> dict[str, Any]:
    out = {
        "vehicle": sec.get("vehicle", str, "ego_vehicle", check=ros_name),
        "segmentation_classes": sec.get(
            "segmentation_classes", str, "camvid", choices=SEG_CLASS_SETS
        ),
    }
    sec.done()
    return out


def _labels(sec: _Section, key: str) -> dict[int, str]:
    raw = sec.get(key, dict, {})
    out = {}
    for label, name in raw.items():
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= 65535:
            raise ScenarioError(f"{sec.at(key)}: label {label!r} is not an integer 0..65535")
        if not isinstance(name, str) or not name:
            raise ScenarioError(f"{sec.at(key)}.{label}: expected a class name, got {name!r}")
        out[label] = name
    return out


def _gazebo(sec: _Section) -> dict[str, Any]:
    out = {
        "segmentation_labels": _labels(sec, "segmentation_labels"),
        "detection_labels": _labels(sec, "detection_labels"),
    }
    sec.done()
    return out


def _thresholds(sec: _Section) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in THRESHOLDS:
        if key == "ap50_per_class":
            per = sec.section(key)
            out[key] = {
                str(name): per.get(name, float, check=_unit) for name in list(per.data)
            } or None
            continue
        check = _unit if key in ("ap50", "miou", "scene_accuracy", "dropped_fraction") else None
        out[key] = sec.get(key, (float, int), None, check=check or non_negative)
    sec.done()
    return {k: v for k, v in out.items() if v is not None}


def _topic(v: str) -> str:
    return "" if v.strip() else "must be a topic name"


def _unit(v: float) -> str:
    return "" if 0.0 <= v <= 1.0 else "must lie in 0..1"


def resolve_domain(scn: Scenario) -> int | None:
    """The ROS domain to join: the scenario's, else ROS_DOMAIN_ID when anything outside the
    harness takes part; None means a random private one (our cameras and our node: nothing
    else should hear the loop)."""
    if scn.domain_id is not None:
        return scn.domain_id
    if scn.source == "sim" and scn.perception.start:
        return None
    env = os.environ.get("ROS_DOMAIN_ID", "").strip()
    return int(env) if env.isdigit() else 0
