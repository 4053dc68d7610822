"""The graph engines: the model's exported ONNX graph in ONNX Runtime or OpenVINO.

Both run the same file (`export.export_onnx`, kept by `export.cached_export`); int8 is a flag
of both: the graph's convolutions quantised (`export.quantize_int8`), calibrated on images the
caller gives. The FCOS anchors are rebuilt in torch after the run.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..model.multitask import unflatten
from .export import CONFIG_KEY, cached_export, check_calibration, read_metadata
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
    ):
        self.names = model.output_names
        if path is None and int8:
            calibration = calibration() if callable(calibration) else calibration
            check_calibration(calibration)
        if path is None and cache_dir:
            try:
                path = cached_export(model, cache_dir, int8, calibration)
            except OSError as err:  # e.g. a read-only home on the robot
                warnings.warn(
                    f"cannot keep the export in {cache_dir} ({err}); not cached", stacklevel=2
                )
        if path is None:  # kept as long as this object is
            self._tmp = tempfile.TemporaryDirectory(prefix="pvt_mtl_onnx_")
            path = cached_export(model, self._tmp.name, int8, calibration)
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
    anchors are rebuilt in torch afterwards."""

    def __init__(self, model: torch.nn.Module, path, int8, calibration, cache_dir) -> None:
        self.device = model.mean.device
        self.graph = OnnxGraph(model, path, int8, calibration, cache_dir)
        self.names, self.path = self.graph.names, self.graph.path

    def run_raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, tasks=None) -> dict:
        flat = self.run_raw(images)
        return select_tasks(unflatten(self.names, flat, tuple(images.shape[-2:])), tasks)


class OnnxRuntimeBackend(GraphBackend):
    """The exported graph (all heads) in ONNX Runtime. `path`, `int8`, `calibration` and
    `cache_dir` as in `OnnxGraph`."""

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


class OpenVinoBackend(GraphBackend):
    """The exported graph in OpenVINO on the CPU. `dtype` sets its inference precision: bf16
    runs every op (attention, norms, GELU: what int8 convolutions leave in fp32) in bf16 on
    CPUs with native bf16. One compiled model per input shape (static shapes are faster
    than OpenVINO's dynamic ones; a camera sends one size). `path`, `int8`, `calibration`,
    `cache_dir` as in `OnnxGraph`."""

    def __init__(
        self,
        model: torch.nn.Module,
        path: str | Path | None = None,
        threads: int | None = None,
        dtype: str = "fp32",
        int8: bool = False,
        calibration: Calibration = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        import openvino as ov

        if dtype not in ("fp32", "bf16"):
            raise ValueError(f"openvino runs fp32 or bf16 on the CPU, not {dtype}")
        self.spec = BackendSpec(engine="openvino", dtype=dtype, int8=int8)
        super().__init__(model, path, int8, calibration, cache_dir)
        self.core = ov.Core()
        self.ov_model = self.core.read_model(str(self.path))
        self.graph.check(
            [o.get_any_name() for o in self.ov_model.outputs], read_metadata(self.path)
        )
        self.compile_config = {
            "INFERENCE_PRECISION_HINT": "bf16" if dtype == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        self._requests: dict[tuple, object] = {}  # input shape -> its compiled model's request

    def _request(self, shape: tuple):
        if shape not in self._requests:
            ov_model = self.ov_model.clone()
            ov_model.reshape({0: list(shape)})
            compiled = self.core.compile_model(ov_model, "CPU", self.compile_config)
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

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
