"""Selectable inference paths behind one `Predictor`: the place callers import them from.

The parts live by concern: `spec` (BackendSpec, what the machine can do, the one policy
`choose`: "auto" and the fallbacks), `torch_engines` (eager, compile, CUDA graphs, TensorRT),
`graph_engines` (the exported graph in ONNX Runtime or OpenVINO). This module builds a
backend for a model (`make_backend`) and puts it behind `Predictor`, so `predict` stays the
only letterbox and decoding path. The names callers used from here before the split are
still importable from here.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .graph_engines import (
    GraphBackend,
    OnnxGraph,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    OpenVinoSplitBackend,
)
from .predictor import PredictionResult, predict
from .spec import (
    AUTO,
    AUTO_RULES,
    DTYPES,
    ENGINES,
    FLAGS,
    ONNX_ENGINES,
    Backend,
    BackendSpec,
    Choice,
    choose,
    cpu_flags,
    cpu_has_bf16,
    fallback,
    onnxruntime_available,
    openvino_available,
    resolve,
    tensorrt_available,
)
from .torch_engines import TorchBackend


def build_backend(model: torch.nn.Module, spec: BackendSpec, **options) -> Backend:
    """The engine for a spec this machine runs (see `choose`). `options` go to the ONNX
    Runtime or OpenVINO backend (path, threads, calibration, cache_dir; providers for ONNX
    Runtime; streams, frames in flight, for OpenVINO: the other engines run one frame at a
    time and ignore it); a torch engine takes none."""
    streams = options.pop("streams", 1)
    if spec.engine == "openvino":
        options["streams"] = streams
    if spec.engine == "onnxruntime":
        return OnnxRuntimeBackend(model, int8=spec.int8, **options)
    if spec.engine == "openvino" and spec.split:
        options.pop("providers", None)
        return OpenVinoSplitBackend(model, dtype=spec.dtype, **options)
    if spec.engine == "openvino":
        options.pop("providers", None)
        return OpenVinoBackend(model, dtype=spec.dtype, int8=spec.int8, **options)
    return TorchBackend(model, spec)


def make_backend(
    model: torch.nn.Module, spec: str | BackendSpec | Choice = "eager", **options
) -> Backend:
    """A backend for `model` on its own device: `spec` resolved by `choose` (a RuntimeWarning
    per part this machine cannot run), then built."""
    if isinstance(spec, Choice):
        return build_backend(model, spec.spec, **options)
    return build_backend(model, resolve(spec, model.mean.device), **options)


class BackendForward:
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

    `backend` is a spec string ("auto", "openvino+bf16", ...), a BackendSpec, a `Choice`
    already made by `choose` (not resolved again: a caller with its own log, such as the node,
    logs `choice.notes` and `choice.reason`), or a built Backend. A string or BackendSpec is
    resolved here, once, with a RuntimeWarning per part dropped. `choice` keeps the request
    and `reason` says in a sentence what runs and why.

    On CUDA, numpy images go through reused pinned host buffers and an asynchronous copy; the
    letterbox (resize, pad) and the normalisation then run on the GPU.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        backend: str | BackendSpec | Choice | Backend = "eager",
        pinned: bool | None = None,
        **options,
    ) -> None:
        self.model = model.eval()
        self.device = model.mean.device
        if isinstance(backend, Backend):
            self.choice = Choice(str(backend.spec), backend.spec)
            self.backend = backend
        else:
            if not isinstance(backend, Choice):
                backend = choose(backend, self.device)
                for note in backend.notes:
                    warnings.warn(note, RuntimeWarning, stacklevel=2)
            self.choice = backend
            self.backend = build_backend(model, backend.spec, **options)
        self.pinned = self.device.type == "cuda" if pinned is None else pinned
        self._pinned_buffers: dict[tuple, torch.Tensor] = {}  # (index, shape) -> host buffer
        self._forward = BackendForward(model, self.backend)

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.model.tasks)

    @property
    def spec(self) -> BackendSpec:
        """What runs."""
        return self.backend.spec

    @property
    def reason(self) -> str:
        """One sentence: what runs and why (auto's pick, or the parts of the request dropped)."""
        return self.choice.reason

    def _to_device(self, images: list) -> list:
        """numpy HxWx3 -> pinned staging buffer -> device, without blocking the host."""
        out = []
        for i, im in enumerate(images):
            if not (isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.ndim == 3):
                out.append(im)  # tensors, and bad input that predict() reports
                continue
            key = (i, im.shape)
            buf = self._pinned_buffers.get(key)
            if buf is None:
                buf = torch.empty(im.shape, dtype=torch.uint8).pin_memory()
                self._pinned_buffers[key] = buf
            # safe to reuse: predict() ends with .cpu() copies, so the last use is finished
            buf.numpy()[...] = im
            out.append(buf.to(self.device, non_blocking=True).permute(2, 0, 1))
        return out

    def predict(self, images, **kwargs) -> list[PredictionResult]:
        if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 3:
            images = [images]
        if self.pinned and self.device.type == "cuda":
            images = self._to_device(list(images))
        return predict(self._forward, images, **kwargs)

    __call__ = predict


__all__ = [
    "AUTO", "AUTO_RULES", "DTYPES", "ENGINES", "FLAGS", "ONNX_ENGINES", "Backend",
    "BackendForward", "BackendSpec", "Choice", "GraphBackend", "OnnxGraph",
    "OnnxRuntimeBackend", "OpenVinoBackend", "OpenVinoSplitBackend", "PredictionResult",
    "Predictor", "TorchBackend",
    "build_backend", "choose", "cpu_flags", "cpu_has_bf16", "fallback", "make_backend",
    "onnxruntime_available", "openvino_available", "predict", "resolve", "tensorrt_available",
]  # fmt: skip
