"""Selectable inference paths behind one small interface, and a `Predictor` that uses one.

A backend takes normalised images [B,3,H,W] and returns what `MultiTaskNet.forward` returns
(the same dict, anchors included), so the predictor's letterbox and decoding stay one code
path. A backend is named by a short spec string, convenient in configs:

    "eager"                   FP32 under torch.inference_mode (the reference)
    "channels_last"           FP32, NHWC weights and input (faster convolutions on CPU)
    "bf16", "fp16"            autocast (bf16 on CPUs with native bf16, or CUDA; fp16 on CUDA)
    "compile[+bf16]"          torch.compile (inductor; weights frozen on CPU)
    "onnxruntime"             the exported ONNX graph in ONNX Runtime (CUDA EP when there)
    "onnxruntime+int8"        its convolutions quantised to int8, calibrated on sim frames
    "openvino[+bf16]"         the exported graph in OpenVINO on the CPU (bf16: its own bf16
                              kernels for every op, attention included, on CPUs that have it)
    "openvino+int8+bf16"      int8 convolutions (the same quantised graph), the rest in bf16
    "tensorrt[+fp16]"         torch_tensorrt, only where it is importable
    "fp16+cuda_graph"         CUDA graph replay of the whole network (no launch overhead)

Tokens combine with "+": an engine (eager, compile, onnxruntime, openvino, tensorrt), a dtype
(fp32, bf16, fp16) and flags (int8, channels_last, cuda_graph). A spec the machine cannot run
falls back to the nearest one that it can, with a warning; `backend.spec` says what runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .export import (
    CONFIG_KEY,
    RawOutputs,
    cached_export,
    output_names,
    read_metadata,
    unflatten,
)
from .predictor import PredictionResult, predict

ENGINES = ("eager", "compile", "onnxruntime", "openvino", "tensorrt")
ONNX_ENGINES = ("onnxruntime", "openvino")  # run the exported graph (int8 only there)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# int8 is a flag, not a dtype: a quantised graph whose other ops still run in `dtype`
FLAGS = ("int8", "channels_last", "cuda_graph")


@dataclass(frozen=True)
class BackendSpec:
    engine: str = "eager"
    dtype: str = "fp32"
    int8: bool = False
    channels_last: bool = False
    cuda_graph: bool = False

    @classmethod
    def parse(cls, text: str | BackendSpec) -> BackendSpec:
        if isinstance(text, BackendSpec):
            return text
        spec = cls()
        for token in str(text).strip().lower().replace(" ", "").split("+"):
            if token in ENGINES:
                spec = replace(spec, engine=token)
            elif token in DTYPES:
                spec = replace(spec, dtype=token)
            elif token in FLAGS:
                spec = replace(spec, **{token: True})
            elif token:
                known = ", ".join((*ENGINES, *DTYPES, *FLAGS))
                raise ValueError(f"unknown backend token {token!r} in {text!r}; known: {known}")
        if spec.int8 and spec.engine not in ONNX_ENGINES:
            raise ValueError(
                f"{text!r}: int8 runs the quantised ONNX graph, in onnxruntime or openvino "
                "only, e.g. onnxruntime+int8"
            )
        return spec

    def __str__(self) -> str:
        parts = [self.engine]
        if self.dtype != "fp32":
            parts.append(self.dtype)
        parts += [f for f in FLAGS if getattr(self, f)]
        return "+".join(parts)


# -- what the machine can do ----------------------------------------------------------------


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, aarch64
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16, AMX or Arm BF16). oneDNN also 'supports' bf16 on
    plain AVX-512 by emulation, which is slower than fp32: that does not count here."""
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def tensorrt_available() -> bool:
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(spec: str | BackendSpec, device: torch.device | str) -> BackendSpec:
    """The spec this machine can run: unsupported parts dropped, each with a warning."""
    spec, notes = fallback(spec, device)
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return spec


def fallback(spec: str | BackendSpec, device: torch.device | str) -> tuple[BackendSpec, list]:
    """`resolve` without warnings: the spec that runs and a sentence per part dropped (for a
    caller with its own log, such as the node: no process-wide warning capture)."""
    requested = spec = BackendSpec.parse(spec)
    cuda = torch.device(device).type == "cuda"
    notes = []
    if spec.dtype == "fp16" and not cuda:
        notes.append("fp16 needs CUDA (CPU fp16 kernels are slow): running fp32")
        spec = replace(spec, dtype="fp32")
    if spec.dtype == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            notes.append("this GPU has no bf16: running fp16")
            spec = replace(spec, dtype="fp16")
        elif not cuda and not cpu_has_bf16():
            notes.append("this CPU has no native bf16 (avx512_bf16/amx): running fp32")
            spec = replace(spec, dtype="fp32")
    if spec.cuda_graph and not cuda:
        notes.append("cuda_graph needs CUDA: dropped")
        spec = replace(spec, cuda_graph=False)
    if spec.engine == "tensorrt" and not (cuda and tensorrt_available()):
        notes.append("torch_tensorrt is not importable or no CUDA: using torch.compile")
        spec = replace(spec, engine="compile")
    if spec.engine == "openvino" and cuda:  # the GPU's own kernels beat any CPU engine
        notes.append("openvino runs on the CPU only: using eager on CUDA")
        spec = replace(spec, engine="eager", int8=False)
    if spec.engine == "openvino" and not openvino_available():
        notes.append("openvino is not importable: using onnxruntime")
        spec = replace(spec, engine="onnxruntime")
    if spec.engine == "onnxruntime" and not onnxruntime_available():
        notes.append("onnxruntime is not importable: using eager")
        spec = replace(spec, engine="eager", int8=False)
    if spec.engine == "onnxruntime" and (spec.dtype != "fp32" or spec.channels_last):
        notes.append("ONNX Runtime runs the graph in fp32 NCHW: dtype and channels_last ignored")
        spec = replace(spec, dtype="fp32", channels_last=False)
    if spec.engine == "openvino" and spec.channels_last:
        notes.append("openvino picks its own layouts: channels_last ignored")
        spec = replace(spec, channels_last=False)
    return spec, [f"backend {requested}: {note}" for note in notes]


# -- backends -----------------------------------------------------------------------------


class Backend:
    """Normalised images -> the `MultiTaskNet.forward` dict for `tasks` (default: all)."""

    spec: BackendSpec

    def __call__(self, images: torch.Tensor, tasks=None) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec})"


class TorchBackend(Backend):
    """eager / channels_last / autocast / torch.compile / CUDA graphs / torch_tensorrt."""

    def __init__(self, model: torch.nn.Module, spec: BackendSpec) -> None:
        self.spec = spec
        self.device = model.mean.device
        if spec.channels_last:  # a copy: the caller's model keeps its layout
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.raw = RawOutputs(self.model).eval()
        self.dtype = DTYPES[spec.dtype]
        self._graphs: dict[tuple, tuple] = {}
        self._compiled = None
        if spec.engine == "compile":
            opts = {"freezing": True} if self.device.type == "cpu" else {}
            mode = "reduce-overhead" if spec.cuda_graph else None
            self._compiled = torch.compile(self._autocast_raw, mode=mode, options=opts or None)
        elif spec.engine == "tensorrt":
            self._trt: dict[tuple, torch.nn.Module] = {}

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        # no weight cache: CUDA graph capture must not keep casts made outside the graph
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)

    def _autocast_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            return self.raw(x)

    def _flat(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._compiled is not None:
            return self._compiled(x)
        if self.spec.engine == "tensorrt":
            return self._tensorrt(x)
        if self.spec.cuda_graph:
            return self._graph(x)
        return self._autocast_raw(x)

    def __call__(self, images: torch.Tensor, tasks=None) -> dict:
        if self.spec.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.spec.engine == "eager" and not self.spec.cuda_graph:
                with self._autocast():  # the model's own forward: only the asked-for heads
                    return self.model(images, tasks=tasks)
            flat = self._flat(images)
        return _select(unflatten(self.raw.names, list(flat), tuple(images.shape[-2:])), tasks)

    def _graph(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One captured graph per input shape; the input is copied into its static buffer."""
        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # cuDNN autotuning and allocations happen before capture
                    self._autocast_raw(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._autocast_raw(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in static_out)  # the next replay overwrites static_out

    def _tensorrt(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch_tensorrt

        key = tuple(x.shape)
        if key not in self._trt:
            precisions = {torch.float32, self.dtype}
            with torch.inference_mode(False), torch.no_grad():  # export wants normal tensors
                self._trt[key] = torch_tensorrt.compile(
                    self.raw, ir="dynamo", inputs=[x.clone()], enabled_precisions=precisions
                )
        return tuple(t.float() for t in self._trt[key](x))


class OnnxGraph:
    """The model's exported ONNX file, the part the ONNX Runtime and OpenVINO backends share.

    Without `path` the model is exported first (tens of seconds): into `cache_dir` when given
    (`export.cached_export`: the next start with the same weights reuses it), else into a
    temporary folder. With `int8` that export is then quantised (`export.quantize_int8`),
    calibrated on `calibration` images (HxWx3 uint8 RGB; default: simulator frames). A
    `path` is run as it is: pass an int8 file made by `python -m pvt_mtl_ros.inference.export
    --int8`.
    """

    def __init__(
        self, model: torch.nn.Module, path=None, int8=False, calibration=None, cache_dir=None
    ):
        self.names = output_names(tuple(model.tasks))
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
        if stored_config and not _same_heads(json.loads(stored_config), self.cfg.to_dict()):
            raise ValueError(f"{self.path} was exported from a model with other classes/heads")


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
        return _select(unflatten(self.names, flat, tuple(images.shape[-2:])), tasks)


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
        calibration=None,
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
        calibration=None,
        cache_dir: str | Path | None = None,
    ) -> None:
        import openvino as ov

        if dtype not in ("fp32", "bf16"):
            raise ValueError(f"openvino runs fp32 or bf16 on the CPU, not {dtype}")
        self.spec = BackendSpec(engine="openvino", dtype=dtype, int8=int8)
        super().__init__(model, path, int8, calibration, cache_dir)
        self.core = ov.Core()
        self.network = self.core.read_model(str(self.path))
        self.graph.check([o.get_any_name() for o in self.network.outputs], read_metadata(self.path))
        self.config = {
            "INFERENCE_PRECISION_HINT": "bf16" if dtype == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        self._requests: dict[tuple, object] = {}  # input shape -> its compiled model's request

    def _request(self, shape: tuple):
        if shape not in self._requests:
            network = self.network.clone()
            network.reshape({0: list(shape)})
            compiled = self.core.compile_model(network, "CPU", self.config)
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

    def run_raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The outputs VIEW the request's buffers, which the next call overwrites: copying
        the full-size segmentation logits would cost 16 ms of the 110 (B0 @512, 2 cores),
        and `predict` has decoded them before it calls again. Clone to keep them longer."""
        x = images.detach().float().contiguous().cpu().numpy()
        request = self._request(tuple(x.shape))
        request.infer({0: x})
        return [
            torch.from_numpy(request.get_output_tensor(i).data).to(images.device)
            for i in range(len(self.names))
        ]


def _same_heads(a: dict, b: dict) -> bool:
    """Same graph and classes (thresholds and the input size may differ)."""

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


def _select(out: dict, tasks) -> dict:
    return out if tasks is None else {t: out[t] for t in tasks if t in out}


def make_backend(model: torch.nn.Module, spec: str | BackendSpec = "eager", **options) -> Backend:
    """A backend for `model` on its own device; `options` go to the ONNX Runtime or
    OpenVINO backend (path, threads, calibration, cache_dir; providers for ONNX Runtime)."""
    spec = resolve(spec, model.mean.device)
    if spec.engine == "onnxruntime":
        return OnnxRuntimeBackend(model, int8=spec.int8, **options)
    if spec.engine == "openvino":
        options.pop("providers", None)
        return OpenVinoBackend(model, dtype=spec.dtype, int8=spec.int8, **options)
    return TorchBackend(model, spec)


# -- the predictor ----------------------------------------------------------------------------


class _BackendModel:
    """What `predict` reads from a model (cfg, mean, normalize, heads, __call__), with the
    forward pass handed to a backend: so `predict` itself stays the only decoding path."""

    def __init__(self, model: torch.nn.Module, backend: Backend) -> None:
        self.model, self.backend = model, backend

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def mean(self) -> torch.Tensor:
        return self.model.mean

    @property
    def heads(self):
        return self.model.heads

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.normalize(images)

    def __call__(self, images: torch.Tensor, tasks=None) -> dict:
        return self.backend(images, tasks=tasks)


class Predictor:
    """model + backend -> `.predict(images, ...)` with `predict`'s arguments and results.

    A drop-in for `model.predict` (it also has `.cfg` and `.tasks`). On CUDA, numpy images go
    through reused pinned host buffers and an asynchronous copy; the letterbox (resize, pad)
    and the normalisation then run on the GPU.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        backend: str | BackendSpec | Backend = "eager",
        pinned: bool | None = None,
        **options,
    ) -> None:
        self.model = model.eval()
        self.backend = (
            backend if isinstance(backend, Backend) else make_backend(model, backend, **options)
        )
        self.device = model.mean.device
        self.pinned = self.device.type == "cuda" if pinned is None else pinned
        self._staging: dict[tuple, torch.Tensor] = {}
        self._proxy = _BackendModel(model, self.backend)

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.model.tasks)

    @property
    def spec(self) -> BackendSpec:
        return self.backend.spec

    def _to_device(self, images: list) -> list:
        """numpy HxWx3 -> pinned staging buffer -> device, without blocking the host."""
        out = []
        for i, im in enumerate(images):
            if not (isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.ndim == 3):
                out.append(im)  # tensors, and bad input that predict() reports
                continue
            key = (i, im.shape)
            buf = self._staging.get(key)
            if buf is None:
                buf = self._staging[key] = torch.empty(im.shape, dtype=torch.uint8).pin_memory()
            # safe to reuse: predict() ends with .cpu() copies, so the last use is finished
            buf.numpy()[...] = im
            out.append(buf.to(self.device, non_blocking=True).permute(2, 0, 1))
        return out

    def predict(self, images, **kwargs) -> list[PredictionResult]:
        if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 3:
            images = [images]
        if self.pinned and self.device.type == "cuda":
            images = self._to_device(list(images))
        return predict(self._proxy, images, **kwargs)

    __call__ = predict
