"""ONNX export of the whole multi-task network (every head the model has, in one graph).

The graph is `MultiTaskNet.forward_flat`: the raw head outputs in `output_names` order; the
FCOS points ("anchors") depend on the input size alone, so `model.multitask.anchors_for`
rebuilds them after ONNX Runtime and the usual torch decoding (score filter, top-k, NMS) runs
on them. Batch and H/W are dynamic (H, W multiples of 32, as the letterbox makes them).

python -m pvt_mtl_ros.inference.export --checkpoint model.pt --out model.onnx
python -m pvt_mtl_ros.inference.export --preset mtl_pvt_v2_b0 --out model.onnx
python -m pvt_mtl_ros.inference.export --checkpoint model.pt --out model_int8.onnx --int8 \
    --calibration frames/     # int8 convolutions, calibrated on those frames

`cached_export` keeps exports in a folder under a digest of the weights, the config and the
code that builds the graph, so a node restarted with the same checkpoint skips the export.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model import ModelConfig, build_model, load_checkpoint
from ..model.multitask import SIZE_DIVISOR, FlatForward
from ..model.necks import DETECTION_LEVELS, LEVELS, SEGMENTATION_LEVELS
from .preprocess import letterbox_batch

INPUT_NAME = "images"
CONFIG_KEY = "pvt_mtl_ros.config"  # metadata: the model config as JSON (classes, sizes, ...)
FEATURE_PREFIX = "feature."  # the split export's extra outputs: the neck's levels, by name


class FlatWithFeatures(nn.Module):
    """`forward_flat` plus the neck's levels that the detection and segmentation heads read,
    as extra outputs named FEATURE_PREFIX + level: the graph that `graph_engines` cuts into a
    trunk (backbone, neck, classification) and one graph per dense head ("split")."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        tasks = model.tasks
        wanted = set(DETECTION_LEVELS if "detection" in tasks else ())
        wanted |= set(SEGMENTATION_LEVELS if "segmentation" in tasks else ())
        self.levels = [k for k in LEVELS if k in wanted]
        self.names = [*model.output_names, *(FEATURE_PREFIX + k for k in self.levels)]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pyramid: dict = {}
        # the neck's output as the heads see it, from the one forward pass (not a second one)
        hook = self.model.neck.register_forward_hook(lambda _m, _i, out: pyramid.update(out))
        try:
            flat = self.model.forward_flat(images)
        finally:
            hook.remove()
        return (*flat, *(pyramid[k] for k in self.levels))


def export_onnx(
    model: nn.Module,
    path: str | Path,
    size: tuple[int, int] | None = None,
    batch: int | None = None,
    dynamic: bool = True,
    opset: int = 18,
    features: bool = False,
) -> Path:
    """Write `model` (all its heads) to `path` as one self-contained ONNX file.

    `size` is the example input (default: the config's input size, rounded up to /32). With
    `dynamic`, batch and H/W (multiples of 32) are free; otherwise the graph is fixed at
    `batch` (default 1). A dynamic export's example batch is 2 (default) or more, as
    torch.export specialises a dimension of size 1. `features` adds the neck's levels as
    outputs (`FlatWithFeatures`, for the split graph engine).
    """
    batch = batch or (2 if dynamic else 1)
    if dynamic and batch < 2:
        raise ValueError("a dynamic batch needs an example batch of at least 2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = tuple(size or model.cfg.input_size)
    size = (size[0] + (-size[0] % SIZE_DIVISOR), size[1] + (-size[1] % SIZE_DIVISOR))
    flat = (FlatWithFeatures(model) if features else FlatForward(model)).eval()
    example = torch.zeros(batch, 3, *size, device=next(model.parameters()).device)
    dynamic_shapes = None
    if dynamic:
        d = torch.export.Dim
        # H and W as 32 x a free integer, so the exporter knows no padding is needed
        dynamic_shapes = (
            {
                0: d("batch", min=1, max=64),
                2: SIZE_DIVISOR * d("h32", min=2, max=128),
                3: SIZE_DIVISOR * d("w32", min=2, max=128),
            },
        )
    with torch.inference_mode(False), torch.no_grad(), _quiet():
        program = torch.onnx.export(
            flat,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=flat.names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
        program.model.metadata_props[CONFIG_KEY] = json.dumps(model.cfg.to_dict())
        program.save(str(path), external_data=False)
    return path


def check_calibration(images) -> None:
    """A clear error where int8 calibration images are missing (the caller provides them)."""
    if images is None or not len(images):
        raise ValueError(
            "int8 calibration needs at least one image (HxWx3 uint8 RGB, like the camera's); "
            "simulator frames: pvt_mtl_ros.sim.calibration.calibration_frames"
        )


def calibration_inputs(model: nn.Module, images) -> list[np.ndarray]:
    """Normalised network inputs [1,3,H,W] for int8 calibration from `images` (HxWx3 uint8
    RGB, what the camera will see), letterboxed to the model's input size as `predict` does."""
    check_calibration(images)
    out = []
    device = model.mean.device
    for im in images:
        x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).to(device)
        batch, _ = letterbox_batch([x], tuple(model.cfg.input_size))
        out.append(model.normalize(batch).float().cpu().numpy())
    return out


def quantize_int8(src: str | Path, dst: str | Path, inputs: list[np.ndarray]) -> Path:
    """Static int8 quantisation of the exported graph's convolutions (QDQ, per-channel int8
    weights, uint8 activations calibrated on `inputs`). Attention and norms stay fp32: the
    convolutions are most of the FLOPs, and VNNI CPUs run them several times faster in int8."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(inputs)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {INPUT_NAME: x}

    dst = Path(dst)
    prepared = dst.with_suffix(".prepared.onnx")  # shapes inferred + graph optimised first
    with _quiet():
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"],
        )
    prepared.unlink()
    return dst


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/pvt_mtl_ros/onnx, or ~/.cache/pvt_mtl_ros/onnx."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "pvt_mtl_ros" / "onnx"


CACHE_KEEP = 8  # exports kept per folder, the most recently used


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """The source of everything that shapes the graph: a change to a head's forward (or timm's
    backbones, or torch's exporter) must not reuse an export made by the old code, even for
    the same weights."""
    import timm

    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"torch {torch.__version__} timm {timm.__version__}".encode())
    for path in sorted([*(package / "model").rglob("*.py"), Path(__file__).resolve()]):
        h.update(path.read_bytes())
    return h.hexdigest()


def export_digest(
    model: nn.Module, int8: bool = False, calibration=None, features: bool = False
) -> str:
    """A digest of what an export of `model` depends on: weights, config, code, quantisation,
    and whether the neck's levels are outputs too (`features`, the split engine's graph)."""
    h = hashlib.sha256(_code_digest().encode())
    if features:
        h.update(b"features")
    h.update(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    if int8:
        import onnxruntime

        h.update(f"int8 onnxruntime {onnxruntime.__version__}".encode())
        for im in calibration if calibration is not None else ():
            im = np.ascontiguousarray(im)
            h.update(f"{im.shape}{im.dtype}".encode() + im.tobytes())
    return h.hexdigest()[:32]


def cached_export(
    model: nn.Module,
    cache_dir: str | Path,
    int8: bool = False,
    calibration=None,
    features: bool = False,
) -> Path:
    """The export of `model` (with `int8`, quantised as `quantize_int8` does, calibrated on
    the `calibration` images; with `features`, the neck's levels as outputs too) from
    `cache_dir`, made and stored there first if it is not. A stored file that cannot be read,
    or holds another config, is exported again."""
    if int8:
        check_calibration(calibration)
    if int8 and features:
        raise ValueError("the split graph is not quantised: int8 and features do not combine")
    cache_dir = Path(cache_dir).expanduser()
    suffix = "_int8" if int8 else "_split" if features else ""
    path = cache_dir / f"{export_digest(model, int8, calibration, features)}{suffix}.onnx"
    if path.is_file():
        try:
            ours = read_metadata(path) == json.dumps(model.cfg.to_dict())
            problem = None if ours else "holds another model"
        except Exception as err:  # truncated or not ONNX: onnx raises several kinds
            problem = f"is unreadable ({err})"
        if problem is None:
            os.utime(path)  # recently used: the last to be pruned
            return path
        warnings.warn(f"cached export {path} {problem}: exporting again", stacklevel=2)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".export_") as tmp:
        out = export_onnx(model.eval(), Path(tmp) / "model.onnx", features=features)
        if int8:
            inputs = calibration_inputs(model, calibration)
            out = quantize_int8(out, Path(tmp) / "model_int8.onnx", inputs)
        os.replace(out, path)  # atomic: another process never reads half a file
    for old in sorted(cache_dir.glob("*.onnx"), key=lambda p: p.stat().st_mtime)[:-CACHE_KEEP]:
        old.unlink(missing_ok=True)
    return path


def read_images(folder: Path) -> list[np.ndarray]:
    """Every .png/.jpg under `folder` as RGB uint8."""
    import cv2

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"--calibration {folder}: no .png or .jpg images there")
    images = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"--calibration: cannot read {f}")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


def read_metadata(path: str | Path) -> str | None:
    """The model config (JSON) stored in an exported file, or None for a file from elsewhere."""
    import onnx

    meta = onnx.load(str(path), load_external_data=False).metadata_props
    return next((p.value for p in meta if p.key == CONFIG_KEY), None)


def read_config(path: str | Path):
    """The ModelConfig stored in an exported file, or None for a file from elsewhere."""
    stored = read_metadata(path)
    return None if stored is None else ModelConfig.from_dict(json.loads(stored))


@contextlib.contextmanager
def _quiet():
    """The exporter logs every step and warns about things done here on purpose."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pvt_mtl_ros.inference.export", description=__doc__.splitlines()[0]
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a pvt_mtl_ros checkpoint (weights + config)")
    src.add_argument("--preset", help="a preset name, random weights (for benchmarks)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="example input")
    parser.add_argument("--batch", type=int, help="example batch: 2 if dynamic, else 1")
    parser.add_argument("--static", action="store_true", help="fixed batch and size")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--check", action="store_true", help="compare with torch via ORT")
    parser.add_argument("--int8", action="store_true", help="int8 convolutions (static, QDQ)")
    parser.add_argument(
        "--calibration", help="folder of images for --int8, frames like the camera's"
    )
    args = parser.parse_args(argv)
    if args.int8 and not args.calibration:
        parser.error("--int8 needs --calibration FOLDER (images like the camera's)")
    images = read_images(Path(args.calibration)) if args.int8 else None  # before the export
    model = load_checkpoint(args.checkpoint) if args.checkpoint else build_model(args.preset)
    model.eval()
    size = tuple(args.size) if args.size else None
    path = export_onnx(model, args.out, size, args.batch, not args.static, args.opset)
    if args.int8:
        fp32 = path.with_suffix(".fp32.onnx")
        path.replace(fp32)
        quantize_int8(fp32, path, calibration_inputs(model, images))
        fp32.unlink()
    mb = path.stat().st_size / 2**20
    print(f"wrote {path} ({mb:.1f} MiB): outputs {model.output_names}")
    if args.check:
        from .graph_engines import OnnxRuntimeBackend

        h, w = size or model.cfg.input_size
        x = torch.randn(args.batch or 1, 3, h + (-h % SIZE_DIVISOR), w + (-w % SIZE_DIVISOR))
        with torch.inference_mode():
            ref = model.forward_flat(x)
        got = OnnxRuntimeBackend(model, path).run_raw(x)
        for name, a, b in zip(model.output_names, ref, got):
            print(f"{name}: max |onnx - torch| = {(a - b).abs().max().item():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
