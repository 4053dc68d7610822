"""The graph engines: the model's exported ONNX graph in ONNX Runtime or OpenVINO.

Both run the same file (`export.export_onnx`, kept by `export.cached_export`); int8 is a flag
of both: the graph's convolutions quantised (`export.quantize_int8`), calibrated on images the
caller gives. The FCOS anchors are rebuilt in torch after the run.
"""

from __future__ import annotations

import json
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..model.heads.detection import OUTPUT_KEYS
from ..model.multitask import anchors_for, unflatten
from ..model.necks import DETECTION_LEVELS, SEGMENTATION_LEVELS
from .export import (
    CONFIG_KEY,
    FEATURE_PREFIX,
    FlatWithFeatures,
    cached_export,
    check_calibration,
    read_metadata,
)
from .spec import Backend, BackendSpec, select_tasks

# HxWx3 uint8 RGB images, or a function that renders them (called only when an int8 export
# is made: the node's simulator frames cost nothing when the export is cached or not int8)
Calibration = Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray]] | None


class OnnxGraph:
    """The model's exported ONNX file, the part the ONNX Runtime and OpenVINO backends share.

    Without `path` the model is exported first (tens of seconds): into `cache_dir` when given
    (`export.cached_export`: the next start with the same weights reuses it), else into a
    temporary folder. With `int8` that export is then quantised (`export.quantize_int8`),
    calibrated on the `calibration` images (HxWx3 uint8 RGB, or a function returning them;
    required). A `path` is run as it is: pass an int8 file made by `python -m
    pvt_mtl_ros.inference.export --int8 --calibration FOLDER`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        path=None,
        int8: bool = False,
        calibration: Calibration = None,
        cache_dir=None,
        features: bool = False,
    ):
        self.names = FlatWithFeatures(model).names if features else model.output_names
        if path is None and int8:
            calibration = calibration() if callable(calibration) else calibration
            check_calibration(calibration)
        if path is None and cache_dir:
            try:
                path = cached_export(model, cache_dir, int8, calibration, features)
            except OSError as err:  # e.g. a read-only home on the robot
                warnings.warn(
                    f"cannot keep the export in {cache_dir} ({err}); not cached", stacklevel=2
                )
        if path is None:  # kept as long as this object is
            self._tmp = tempfile.TemporaryDirectory(prefix="pvt_mtl_onnx_")
            path = cached_export(model, self._tmp.name, int8, calibration, features)
        self.path = Path(path)
        self.cfg = model.cfg

    def check(self, outputs: list[str], stored_config: str | None) -> None:
        """A clear error for a file that is not this model's export."""
        if outputs != self.names:
            raise ValueError(f"{self.path} has outputs {outputs}, the model wants {self.names}")
        if stored_config and not same_heads(json.loads(stored_config), self.cfg.to_dict()):
            raise ValueError(f"{self.path} was exported from a model with other classes/heads")


def same_heads(a: dict, b: dict) -> bool:
    """Two model configs (as dicts) with the same graph and classes (thresholds and the input
    size may differ)."""

    def shape(cfg: dict) -> tuple:
        heads = tuple(
            (t, (cfg.get(t) or {}).get("classes"), (cfg.get(t) or {}).get(k))
            for t, k in (
                ("classification", None),
                ("detection", "num_convs"),
                ("segmentation", "channels"),
            )
        )
        return cfg.get("backbone"), cfg.get("neck"), cfg.get("neck_channels"), heads

    return shape(a) == shape(b)


class GraphBackend(Backend):
    """A backend that runs the exported graph: `run_raw` gives its flat outputs, the FCOS
    anchors are rebuilt in torch afterwards. The engines take the model, `threads` (default:
    torch's) and the graph's `path`, `int8`, `calibration` and `cache_dir` as `OnnxGraph`
    does."""

    def __init__(
        self, model: torch.nn.Module, path, int8, calibration, cache_dir, features=False
    ) -> None:
        self.device = model.mean.device
        self.graph = OnnxGraph(model, path, int8, calibration, cache_dir, features)
        self.names, self.path = self.graph.names, self.graph.path

    def run_raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, tasks=None) -> dict:
        flat = self.run_raw(images)
        return select_tasks(unflatten(self.names, flat, tuple(images.shape[-2:])), tasks)


class OnnxRuntimeBackend(GraphBackend):
    """The exported graph (all heads) in ONNX Runtime; `providers` default to CUDA's where
    the model is on CUDA, then the CPU's."""

    def __init__(
        self,
        model: torch.nn.Module,
        path: str | Path | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
        int8: bool = False,
        calibration: Calibration = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        import onnxruntime as ort

        self.spec = BackendSpec(engine="onnxruntime", int8=int8)
        super().__init__(model, path, int8, calibration, cache_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's idle threads spin by default, and would take the cores from torch's own
        # letterbox and decoding in this process: let them sleep between calls
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if providers is None:
            want = ["CPUExecutionProvider"]
            if self.device.type == "cuda":
                want.insert(0, "CUDAExecutionProvider")
            providers = [p for p in want if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        self.graph.check(
            [o.name for o in self.session.get_outputs()],
            self.session.get_modelmeta().custom_metadata_map.get(CONFIG_KEY),
        )

    def run_raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.detach().float().contiguous().cpu().numpy()
        outs = self.session.run(None, {self.session.get_inputs()[0].name: x})
        return [torch.from_numpy(np.asarray(o)).to(images.device) for o in outs]


def openvino_config(dtype: str, threads: int | None, streams: int = 1) -> dict:
    """OpenVINO's CPU compile settings for `dtype` (fp32 or bf16). One stream: latency first,
    every thread on one frame. `streams` > 1: that many frames in flight at once, the threads
    shared out between them (throughput first: more frames a second where one frame's small
    ops do not keep every core busy, each frame later)."""
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"openvino runs fp32 or bf16 on the CPU, not {dtype}")
    if not isinstance(streams, int) or streams < 1:
        raise ValueError(f"openvino streams must be an integer >= 1, not {streams!r}")
    return {
        "INFERENCE_PRECISION_HINT": "bf16" if dtype == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        "NUM_STREAMS": streams,
    }


class _Requests:
    """Compiled models shared by every thread, one infer request per thread and key: with
    streams > 1 each caller's thread (the node's workers) runs its own frame, and the
    outputs a request's buffers hold are that thread's until its next call."""

    def __init__(self) -> None:
        self._compiled: dict = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def get(self, key, compile_fn):
        mine = self._local.__dict__.setdefault("requests", {})
        if key not in mine:
            with self._lock:  # compile each shape once, whichever thread asks first
                if key not in self._compiled:
                    self._compiled[key] = compile_fn()
            mine[key] = self._compiled[key].create_infer_request()
        return mine[key]

    def __len__(self) -> int:  # compiled models
        return len(self._compiled)

    def __iter__(self):  # their keys
        return iter(list(self._compiled))


class OpenVinoBackend(GraphBackend):
    """The exported graph in OpenVINO on the CPU. `dtype` sets its inference precision: bf16
    runs every op (attention, norms, GELU: what int8 convolutions leave in fp32) in bf16 on
    CPUs with native bf16. One compiled model per input shape (static shapes are faster
    than OpenVINO's dynamic ones; a camera sends one size). `streams` (default 1) is how
    many frames may run at once, each from its own calling thread (`openvino_config`)."""

    SPLIT = False  # OpenVinoSplitBackend: the export with the neck's levels; a split spec

    def __init__(
        self,
        model: torch.nn.Module,
        path: str | Path | None = None,
        threads: int | None = None,
        dtype: str = "fp32",
        int8: bool = False,
        calibration: Calibration = None,
        cache_dir: str | Path | None = None,
        streams: int = 1,
    ) -> None:
        import openvino as ov

        config = openvino_config(dtype, threads, streams)  # a bad value fails before any export
        self.spec = BackendSpec(engine="openvino", dtype=dtype, int8=int8, split=self.SPLIT)
        super().__init__(model, path, int8, calibration, cache_dir, features=self.SPLIT)
        self.core = ov.Core()
        self.ov_model = self.core.read_model(str(self.path))
        self.graph.check(
            [o.get_any_name() for o in self.ov_model.outputs], read_metadata(self.path)
        )
        self.compile_config = config
        self.streams = streams
        self._requests = _Requests()  # input shape -> compiled model; a request per thread

    def _request(self, shape: tuple):
        def compile_shape():
            ov_model = self.ov_model.clone()
            ov_model.reshape({0: list(shape)})
            return self.core.compile_model(ov_model, "CPU", self.compile_config)

        return self._requests.get(shape, compile_shape)

    def run_raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The outputs VIEW the request's buffers, which the next call overwrites: a copy of
        the full-size segmentation logits would be a large share of the run, and `predict`
        has decoded them before it calls again. Clone to keep them longer."""
        x = images.detach().float().contiguous().cpu().numpy()
        request = self._request(tuple(x.shape))
        request.infer({0: x})
        return [
            torch.from_numpy(request.get_output_tensor(i).data).to(images.device)
            for i in range(len(self.names))
        ]


class OpenVinoSplitBackend(OpenVinoBackend):
    """The exported graph cut into parts in OpenVINO ("openvino+split"): a trunk (backbone,
    neck, classification) and one graph per dense head, so that a head not asked for (per-task
    scheduling: `tasks`) costs nothing. The trunk's level tensors are handed to the heads
    without a copy. A call that runs every head runs the whole network as one more graph
    ("all") instead of three: one request, no hand-over between graphs. The segmentation
    graphs end in the argmax: they return the class ids at the input size
    ("segmentation_ids", uint8 [B,H,W]) instead of the logits, so neither the 11-channel
    logits nor their argmax in torch are paid for. The graph is the export with the neck's
    levels as outputs (`export.FlatWithFeatures`, cached under its own key). `options` as
    OpenVinoBackend's but int8: the float graph is cut."""

    SPLIT = True

    def __init__(self, model: torch.nn.Module, **options) -> None:
        if options.get("int8"):
            raise ValueError("openvino+split cuts the exported float graph: not with int8")
        super().__init__(model, **options)
        if len(model.cfg.segmentation.classes if model.cfg.segmentation else ()) > 256:
            raise ValueError("openvino+split returns uint8 class ids: at most 256 classes")
        self.heads = tuple(model.tasks)
        self.out_names = model.output_names
        self.parts = cut(self.ov_model, self.heads)  # part -> (ov.Model, its input level names)

    def _part(self, part: str, shape: tuple, level: dict | None = None, image=None):
        """The request of `part` compiled for input `shape`, its inputs static (a head's are
        the trunk's level tensors in `level` and the input `image`, set on the request here:
        no copy). Each thread has its own requests (streams)."""

        def compile_part():
            ov_model, keys = self.parts[part]
            ov_model = ov_model.clone()
            if not keys:  # the trunk, the whole network: the image is the only input
                ov_model.reshape({0: list(shape)})
            else:
                shapes = {i: list(level[k].shape) for i, k in enumerate(keys)}
                ov_model.reshape({**shapes, len(keys): list(shape)})
            return self.core.compile_model(ov_model, "CPU", self.compile_config)

        request = self._requests.get((part, shape), compile_part)
        keys = self.parts[part][1]
        for i, k in enumerate(keys):
            request.set_input_tensor(i, level[k])
        if keys:
            request.set_input_tensor(len(keys), image)
        return request

    def run_raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError("openvino+split returns class ids, not the logits: call it")

    def __call__(self, images: torch.Tensor, tasks=None) -> dict:
        """As the other backends, for `tasks` (None: all) only, with "segmentation_ids" in
        place of "segmentation". The outputs VIEW the requests' buffers (as OpenVinoBackend)."""
        tasks = self.heads if tasks is None else tuple(t for t in self.heads if t in tasks)
        x = images.detach().float().contiguous().cpu().numpy()
        shape = tuple(x.shape)
        if tasks == self.heads and "all" in self.parts:  # cut builds it for 2+ heads
            whole = self._part("all", shape)
            whole.infer({0: x})
            return self._outputs(tasks, whole, whole, whole, shape, images.device)
        trunk = self._part("trunk", shape)
        trunk.infer({0: x})
        image = trunk.get_input_tensor(0)
        names = [o.get_any_name() for o in trunk.model_outputs]
        level = {
            n[len(FEATURE_PREFIX) :]: trunk.get_tensor(n)
            for n in names
            if n.startswith(FEATURE_PREFIX)
        }
        det = seg = None
        if "detection" in tasks:
            det = self._part("detection", shape, level, image)
            det.infer()
        if "segmentation" in tasks:
            seg = self._part("segmentation", shape, level, image)
            seg.infer()
        return self._outputs(tasks, trunk, det, seg, shape, images.device)

    def _outputs(self, tasks, trunk, det, seg, shape: tuple, device) -> dict:
        """The backend's dict from the requests that ran (views of their buffers)."""
        out: dict = {}
        if "classification" in tasks:
            out["classification"] = torch.from_numpy(trunk.get_tensor("classification").data)
        if "detection" in tasks:
            raw = {
                n.split(".", 1)[1]: torch.from_numpy(det.get_tensor(n).data)
                for n in self.out_names
                if n.startswith("detection.")
            }
            raw["anchors"] = anchors_for(shape[-2:])
            out["detection"] = raw
        if "segmentation" in tasks:
            out["segmentation_ids"] = torch.from_numpy(seg.get_tensor("segmentation_ids").data)
        return {k: _to(v, device) for k, v in out.items()}


def _to(value, device):
    if isinstance(value, dict):
        return {k: v.to(device) for k, v in value.items()}
    return value.to(device)


def cut(full, heads: tuple[str, ...]) -> dict:
    """The split export (`FlatWithFeatures`) in OpenVINO -> {"trunk": (model, ()),
    "detection": (model, levels), "segmentation": (model, levels), "all": (model, ())}: the
    trunk ends at the classification logits and the neck's levels; each dense head starts
    from new inputs in place of the levels it reads; "all" (where the model has more than
    one head) is the whole network without the levels as outputs. The segmentation graphs
    end in the argmax over classes."""
    import openvino as ov
    import openvino.opset13 as ops

    def name(r) -> str:
        return r.output(0).get_any_name()

    def result(model, wanted):
        return next(r for r in model.get_results() if name(r) == wanted)

    def levels_in(model):
        return {
            name(r)[len(FEATURE_PREFIX) :]: r
            for r in model.get_results()
            if name(r).startswith(FEATURE_PREFIX)
        }

    def class_ids(r):
        """The segmentation logits' result -> one of their argmax as uint8 [B,H,W]."""
        ids = ops.topk(r.input_value(0), 1, 1, "max", "none", "i32").output(1)
        ids = ops.squeeze(ops.convert(ids, "u8"), [1])
        ids.output(0).set_names({"segmentation_ids"})
        return ops.result(ids)

    trunk_results = [
        r
        for r in full.get_results()
        if name(r).startswith(FEATURE_PREFIX) or name(r) == "classification"
    ]
    parts = {"trunk": (ov.Model(trunk_results, full.get_parameters(), "trunk"), ())}
    for head, wanted, keys in (
        ("detection", DETECTION_LEVELS, [f"detection.{k}" for k in OUTPUT_KEYS]),
        ("segmentation", SEGMENTATION_LEVELS, ["segmentation"]),
    ):
        if head not in heads:
            continue
        model = full.clone()
        feats = levels_in(model)
        params = []
        for k in wanted:
            source = feats[k].input_value(0)  # the neck's output tensor
            param = ops.parameter(source.get_partial_shape(), source.get_element_type(), name=k)
            param.output(0).set_names({FEATURE_PREFIX + k})
            for target in list(source.get_target_inputs()):
                if target.get_node() is not feats[k]:
                    target.replace_source_output(param.output(0))
            params.append(param)
        outs = [result(model, n) for n in keys]
        if head == "segmentation":
            outs = [class_ids(outs[0])]
        # the input image stays a parameter: the head may read its size (never its pixels)
        parts[head] = (ov.Model(outs, [*params, *model.get_parameters()], head), tuple(wanted))
    if len(heads) > 1:
        model = full.clone()
        outs = [
            class_ids(r) if name(r) == "segmentation" else r
            for r in model.get_results()
            if not name(r).startswith(FEATURE_PREFIX)
        ]
        parts["all"] = (ov.Model(outs, model.get_parameters(), "all"), ())
    return parts
