"""What a backend is (its spec and its interface) and the one policy that turns a requested
spec into what this machine runs.

A backend takes normalised images [B,3,H,W] and returns what `MultiTaskNet.forward` returns
(the same dict, anchors included), so the predictor's letterbox and decoding stay one code
path. Engines: `torch_engines` (eager, compile, CUDA graphs, TensorRT), `graph_engines` (the
exported graph in ONNX Runtime or OpenVINO). A backend is named by a short spec string:

    "auto"                    the fastest path this machine has (`AUTO_RULES`, below)
    "eager"                   FP32 under torch.inference_mode (the reference)
    "channels_last"           FP32, NHWC weights and input (faster convolutions on CPU)
    "bf16", "fp16"            autocast (bf16 on CPUs with native bf16, or CUDA; fp16 on CUDA)
    "compile[+bf16]"          torch.compile (inductor; weights frozen on CPU)
    "onnxruntime"             the exported ONNX graph in ONNX Runtime (CUDA EP when there)
    "onnxruntime+int8"        its convolutions quantised to int8, calibrated on given images
    "openvino[+bf16]"         the exported graph in OpenVINO on the CPU (bf16: its own bf16
                              kernels for every op, attention included, on CPUs that have it)
    "openvino+int8+bf16"      int8 convolutions (the same quantised graph), the rest in bf16
    "openvino+bf16+split"     the graph cut into a trunk and one graph per head (a head not
                              asked for costs nothing), the mask's argmax in the graph
    "tensorrt[+fp16]"         torch_tensorrt, only where it is importable
    "fp16+cuda_graph"         CUDA graph replay of the whole network (no launch overhead)

Tokens combine with "+": an engine (eager, compile, onnxruntime, openvino, tensorrt), a dtype
(fp32, bf16, fp16) and flags (int8, channels_last, cuda_graph, split). `choose` resolves a request
once: "auto" picks a spec, and a spec the machine cannot run falls back to the nearest one
that it can, with a sentence per part dropped; `Choice.reason` says what runs and why.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

ENGINES = ("eager", "compile", "onnxruntime", "openvino", "tensorrt")
ONNX_ENGINES = ("onnxruntime", "openvino")  # run the exported graph (int8 only there)
DTYPES = ("fp32", "bf16", "fp16")
# int8 is a flag, not a dtype: a quantised graph whose other ops still run in `dtype`
FLAGS = ("int8", "channels_last", "cuda_graph", "split")
AUTO = "auto"


@dataclass(frozen=True)
class BackendSpec:
    engine: str = "eager"
    dtype: str = "fp32"
    int8: bool = False
    channels_last: bool = False
    cuda_graph: bool = False
    split: bool = False  # openvino: trunk + a graph per head, the mask's argmax in the graph

    @classmethod
    def parse(cls, text: str | BackendSpec) -> BackendSpec:
        """A spec string -> BackendSpec ("auto" is not one: `choose` resolves it)."""
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
            elif token == AUTO:
                raise ValueError(f"{text!r}: 'auto' is a whole spec, not a token to combine")
            elif token:
                known = ", ".join((AUTO, *ENGINES, *DTYPES, *FLAGS))
                raise ValueError(f"unknown backend token {token!r} in {text!r}; known: {known}")
        if spec.int8 and spec.engine not in ONNX_ENGINES:
            raise ValueError(
                f"{text!r}: int8 runs the quantised ONNX graph, in onnxruntime or openvino "
                "only, e.g. onnxruntime+int8"
            )
        if spec.split and (spec.engine != "openvino" or spec.int8):
            raise ValueError(
                f"{text!r}: split cuts the exported float graph in OpenVINO only, e.g. "
                "openvino+bf16+split (not with int8)"
            )
        return spec

    def __str__(self) -> str:
        parts = [self.engine]
        if self.dtype != "fp32":
            parts.append(self.dtype)
        parts += [f for f in FLAGS if getattr(self, f)]
        return "+".join(parts)


class Backend:
    """Normalised images -> the `MultiTaskNet.forward` dict for `tasks` (default: all)."""

    spec: BackendSpec

    def __call__(self, images, tasks=None) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec})"


def select_tasks(out: dict, tasks) -> dict:
    """The entries of a forward dict for `tasks` (None: all)."""
    return out if tasks is None else {t: out[t] for t in tasks if t in out}


# -- what the machine can do ----------------------------------------------------------------

X86_BF16 = frozenset({"avx512_bf16", "amx_bf16"})  # the flags OpenVINO's bf16 kernels use


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
        return bool(flags & (X86_BF16 | {"bf16"}))
    import torch

    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def importable(module: str) -> bool:
    """Whether `module` imports (not just whether it is installed: one that fails counts as
    absent)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# One function per engine, so that tests can stand in for the machine (monkeypatch).
def onnxruntime_available() -> bool:
    return importable("onnxruntime")


def openvino_available() -> bool:
    return importable("openvino")


def tensorrt_available() -> bool:
    return importable("torch_tensorrt")


def cuda_has_bf16() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


# -- the policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A request resolved for one device: what runs, and the sentences that say why."""

    requested: str  # as asked (normalised), e.g. "auto" or "openvino+bf16+int8"
    spec: BackendSpec  # what runs
    dropped: tuple[str, ...] = ()  # a clause per part of the request this machine cannot run
    why: str = ""  # auto only: why `spec` is the fastest path here

    @property
    def notes(self) -> list[str]:
        """A sentence per part dropped, for a log ("backend X: cuda_graph needs CUDA: ...")."""
        return [f"backend {self.requested}: {clause}" for clause in self.dropped]

    @property
    def reason(self) -> str:
        """One sentence for a log or diagnostics: what runs and why, e.g. "backend
        openvino+bf16 (auto): this CPU has avx512_bf16 and OpenVINO is installed: ..."."""
        if self.why:
            return f"backend {self.spec} (auto): {self.why}"
        if self.dropped:
            return f"backend {self.spec} (asked for {self.requested}): {'; '.join(self.dropped)}"
        return f"backend {self.spec} (as asked)"


# The CPU order is the README's backend benchmark (fastest first). int8 is never chosen: its
# outputs differ beyond float tolerance, so it is asked for by name.
AUTO_RULES = """\
CUDA: tensorrt+fp16 where torch_tensorrt imports, else fp16.
CPU with AVX512-BF16 or AMX, OpenVINO installed: openvino+bf16+split.
CPU with native bf16 otherwise: bf16+channels_last.
CPU without native bf16: openvino, else onnxruntime, else channels_last (the first installed)."""


def auto_spec(device) -> tuple[BackendSpec, str]:
    """The fastest spec for `device` by AUTO_RULES, and why (a clause for `Choice.reason`)."""
    if _device_type(device) == "cuda":
        if tensorrt_available():
            return BackendSpec("tensorrt", "fp16"), "CUDA with torch_tensorrt installed"
        return BackendSpec("eager", "fp16"), "CUDA without torch_tensorrt: fp16 autocast"
    x86_bf16 = sorted(cpu_flags() & X86_BF16)
    if x86_bf16 and openvino_available():
        # split: the same graph and masks as openvino+bf16 (closed-loop AP50/mIoU equal),
        # the argmax in the graph and skipped heads free: the README's camera-rate table
        return BackendSpec("openvino", "bf16", split=True), (
            f"this CPU has {'/'.join(x86_bf16)} and OpenVINO is installed: its bf16 kernels "
            "are the fastest CPU path, split per head"
        )
    if cpu_has_bf16():
        return BackendSpec("eager", "bf16", channels_last=True), (
            "this CPU has native bf16, OpenVINO is not installed: torch bf16 autocast"
        )
    if openvino_available():
        return BackendSpec("openvino"), "no native bf16 on this CPU: OpenVINO in fp32"
    if onnxruntime_available():
        return BackendSpec("onnxruntime"), "no native bf16 on this CPU, no OpenVINO: ONNX Runtime"
    return BackendSpec(channels_last=True), (
        "no native bf16 on this CPU and neither OpenVINO nor ONNX Runtime installed"
    )


def choose(requested: str | BackendSpec | Choice, device) -> Choice:
    """The one policy: `requested` ("auto" or a spec) -> what runs on `device`, and why."""
    if isinstance(requested, Choice):
        return requested  # resolved once: not again
    if isinstance(requested, str) and requested.strip().lower() == AUTO:
        spec, why = auto_spec(device)
        runs, dropped = _runnable(spec, device)  # AUTO_RULES pick runnable specs: no drops
        return Choice(AUTO, runs, tuple(dropped), why)
    spec = BackendSpec.parse(requested)
    runs, dropped = _runnable(spec, device)
    return Choice(str(spec), runs, tuple(dropped))


def fallback(spec: str | BackendSpec, device) -> tuple[BackendSpec, list[str]]:
    """`choose` as (spec that runs, a sentence per part dropped), for a caller with its own
    log (such as the node: no process-wide warning capture)."""
    choice = choose(spec, device)
    return choice.spec, choice.notes


def resolve(spec: str | BackendSpec, device) -> BackendSpec:
    """The spec this machine can run: unsupported parts dropped, each with a RuntimeWarning."""
    choice = choose(spec, device)
    for note in choice.notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return choice.spec


def _device_type(device) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


def _runnable(spec: BackendSpec, device) -> tuple[BackendSpec, list[str]]:
    """`spec` with what `device` cannot run dropped, and a clause per part dropped."""
    cuda = _device_type(device) == "cuda"
    notes = []
    if spec.dtype == "fp16" and not cuda:
        notes.append("fp16 needs CUDA (CPU fp16 kernels are slow): running fp32")
        spec = replace(spec, dtype="fp32")
    if spec.dtype == "bf16":
        if cuda and not cuda_has_bf16():
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
        spec = replace(spec, engine="eager", int8=False, split=False)
    if spec.engine == "openvino" and not openvino_available():
        split = " (split is OpenVINO's: dropped)" if spec.split else ""
        notes.append(f"openvino is not importable: using onnxruntime{split}")
        spec = replace(spec, engine="onnxruntime", split=False)
    if spec.engine == "onnxruntime" and not onnxruntime_available():
        notes.append("onnxruntime is not importable: using eager")
        spec = replace(spec, engine="eager", int8=False)
    if spec.engine == "onnxruntime" and (spec.dtype != "fp32" or spec.channels_last):
        notes.append("ONNX Runtime runs the graph in fp32 NCHW: dtype and channels_last ignored")
        spec = replace(spec, dtype="fp32", channels_last=False)
    if spec.engine == "openvino" and spec.channels_last:
        notes.append("openvino picks its own layouts: channels_last ignored")
        spec = replace(spec, channels_last=False)
    return spec, notes
