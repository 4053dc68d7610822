"""The torch engines: eager, channels-last, autocast, torch.compile, CUDA graphs, TensorRT."""

from __future__ import annotations

import contextlib
import copy

import torch

from ..model.multitask import FlatForward, unflatten
from .spec import Backend, BackendSpec, select_tasks

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend(Backend):
    """eager / channels_last / autocast / torch.compile / CUDA graphs / torch_tensorrt.

    Eager runs the model's own forward (only the asked-for heads); the others run
    `MultiTaskNet.forward_flat` (every head) and rebuild the dict.
    """

    def __init__(self, model: torch.nn.Module, spec: BackendSpec) -> None:
        self.spec = spec
        self.device = model.mean.device
        if spec.channels_last:  # a copy: the caller's model keeps its layout
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.flat_net = FlatForward(self.model).eval()
        self.dtype = TORCH_DTYPES[spec.dtype]
        self._cuda_graphs: dict[tuple, tuple] = {}  # input shape -> (graph, input, outputs)
        self._trt_modules: dict[tuple, torch.nn.Module] = {}  # input shape -> compiled
        self._compiled = None
        if spec.engine == "compile":
            opts = {"freezing": True} if self.device.type == "cpu" else {}
            mode = "reduce-overhead" if spec.cuda_graph else None
            self._compiled = torch.compile(self._autocast_flat, mode=mode, options=opts or None)

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        # no weight cache: CUDA graph capture must not keep casts made outside the graph
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)

    def _autocast_flat(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            return self.flat_net(x)

    def _flat(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._compiled is not None:
            return self._compiled(x)
        if self.spec.engine == "tensorrt":
            return self._tensorrt(x)
        if self.spec.cuda_graph:
            return self._graph(x)
        return self._autocast_flat(x)

    def __call__(self, images: torch.Tensor, tasks=None) -> dict:
        if self.spec.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.spec.engine == "eager" and not self.spec.cuda_graph:
                with self._autocast():  # the model's own forward: only the asked-for heads
                    return self.model(images, tasks=tasks)
            flat = self._flat(images)
        out = unflatten(self.flat_net.names, list(flat), tuple(images.shape[-2:]))
        return select_tasks(out, tasks)

    def _graph(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One captured graph per input shape; the input is copied into its static buffer."""
        key = tuple(x.shape)
        if key not in self._cuda_graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # cuDNN autotuning and allocations happen before capture
                    self._autocast_flat(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._autocast_flat(static_in)
            self._cuda_graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._cuda_graphs[key]
        static_in.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in static_out)  # the next replay overwrites static_out

    def _tensorrt(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch_tensorrt

        key = tuple(x.shape)
        if key not in self._trt_modules:
            precisions = {torch.float32, self.dtype}
            with torch.inference_mode(False), torch.no_grad():  # export wants normal tensors
                self._trt_modules[key] = torch_tensorrt.compile(
                    self.flat_net, ir="dynamo", inputs=[x.clone()], enabled_precisions=precisions
                )
        return tuple(t.float() for t in self._trt_modules[key](x))
