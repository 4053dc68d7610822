"""Inference backends: every path this machine can run gives the eager FP32 results (parity)
within stated tolerances; the ONNX export keeps all heads with dynamic batch and size.

A tiny model (PVT v2-B0, 32-channel neck, one FCOS conv) at 128x160 keeps torch.compile and
the ONNX export within about a minute on two cores. Its FCOS classifier is re-initialised
with spread-out weights, so that detections have distinct scores instead of the prior's one.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from pvt_mtl_ros.inference import predict
from pvt_mtl_ros.inference import spec as S
from pvt_mtl_ros.inference.backends import (
    BackendSpec,
    Predictor,
    choose,
    cpu_has_bf16,
    make_backend,
    resolve,
)
from pvt_mtl_ros.inference.export import main as export_main
from pvt_mtl_ros.inference.export import read_config
from pvt_mtl_ros.model import SegmentationConfig, build_model, save_checkpoint
from pvt_mtl_ros.model.multitask import anchors_for, flatten, output_names
from pvt_mtl_ros.sim.calibration import calibration_frames

SCORE_THRESH = 0.65


# Tolerances against eager FP32, per numeric kind of path:
#   raw:    max |diff| of every raw output / max |eager output|
#   score:  |score diff| of matched detections; iou / px: their minimum box IoU, or their
#           maximum corner distance in pixels (boxes clipped flat at the padding have no IoU)
#   matched: share of confident eager detections (score > thresh + margin) found again
#   mask:   share of pixels with the same class; probs: max |class probability diff|
@pytest.fixture(scope="module")
def tolerances():
    fp32 = dict(raw=1e-4, score=1e-4, iou=0.999, px=0.01, matched=1.0, margin=1e-3, mask=0.999)
    low = dict(raw=5e-2, score=0.02, iou=0.9, px=1.0, matched=0.9, margin=0.02, mask=0.98)
    fp32["probs"], low["probs"] = 1e-5, 5e-3
    # int8 convolutions calibrated on simulator frames, run on these blocky test images
    # (measured on this model: raw 0.12, mask 0.979, every confident box within 2 px)
    int8 = dict(raw=0.2, score=0.05, iou=0.8, px=2.0, matched=0.8, margin=0.05, mask=0.95)
    int8["probs"] = 0.02
    # int8 convolutions and bf16 for the rest (OpenVINO): raw error measured 0.27, in the
    # centre-ness logits
    int8_bf16 = dict(int8, raw=0.35)
    return {"fp32": fp32, "bf16": low, "fp16": low, "int8": int8, "int8+bf16": int8_bf16}


def tiny_model(device="cpu"):
    model = tiny_models.tiny_model(
        ["a", "b", "c"],
        ["car", "person"],
        ["road", "sky", "car"],
        name="",
        max_detections=300,
        score_thresh=SCORE_THRESH,
    )
    head = model.heads["detection"].head
    torch.nn.init.normal_(head.classification_head.cls_logits.weight, std=0.5)
    torch.nn.init.zeros_(head.classification_head.cls_logits.bias)
    # boxes of a few strides around their points, instead of image-sized ones clipped flat
    torch.nn.init.normal_(head.regression_head.bbox_reg.weight, std=0.05)
    torch.nn.init.constant_(head.regression_head.bbox_reg.bias, 2.0)
    return model.to(device)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def images():
    """Blocky RGB images, one landscape and one portrait, neither a multiple of 32."""
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((150, 200), (100, 90)):
        blocks = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        out.append(np.kron(blocks, np.ones((16, 16, 1), np.uint8))[:h, :w].copy())
    return out


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def assert_results_close(ref, got, tol):
    for r, g in zip(ref, got):
        assert np.abs(r.class_probs - g.class_probs).max() <= tol["probs"]
        assert r.mask.shape == g.mask.shape and (r.mask == g.mask).mean() >= tol["mask"]
        for a, b in ((r, g), (g, r)):  # both ways: nothing lost, nothing new
            confident = a.scores > SCORE_THRESH + tol["margin"]
            assert confident.sum() > 0, "the test model should produce confident detections"
            found = 0
            for box, score, label in zip(
                a.boxes[confident], a.scores[confident], a.labels[confident]
            ):
                same = np.flatnonzero(b.labels == label)
                if not len(same):
                    continue
                best = same[np.abs(b.boxes[same] - box).max(axis=1).argmin()]
                near = np.abs(b.boxes[best] - box).max() <= tol["px"]
                near |= iou(box[None], b.boxes[best][None])[0, 0] >= tol["iou"]
                found += bool(near and abs(b.scores[best] - score) <= tol["score"])
            assert found / confident.sum() >= tol["matched"], f"{found}/{confident.sum()}"


def assert_raw_close(ref: dict, got: dict, tol: float):
    for name, a, b in zip(output_names(tuple(ref)), flatten(ref), flatten(got)):
        assert a.shape == b.shape, name
        err = (a.float() - b.float()).abs().max().item() / max(a.abs().max().item(), 1e-6)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol}"
    if "detection" in ref:
        torch.testing.assert_close(ref["detection"]["anchors"], got["detection"]["anchors"])


def assert_matches_eager(model, backend, shapes, tol: float = 1e-4):
    """`backend`'s raw outputs within `tol` of eager's on random inputs of these shapes."""
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.inference_mode():
            ref = model(x)
        assert_raw_close(ref, backend(x), tol)


# -- parity of the raw graph and the anchors ---------------------------------------------------


@pytest.mark.parametrize("size", [(128, 160), (200, 170)])
def test_flat_forward_and_anchors_parity_with_forward(model, size):
    """The export graph (forward_flat) is the forward minus the anchors; anchors_for rebuilds
    those. 200x170 pads to 224x192: P5 7x6, P6 4x3, P7 2x2 (odd sizes round up)."""
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        ref = model(x)
        flat = model.forward_flat(x)
    assert len(flat) == len(model.output_names) == 5
    for a, b in zip(flatten(ref), flat, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(anchors_for(size), ref["detection"]["anchors"])


# -- parity of each backend with eager FP32 ----------------------------------------------------

CPU_SPECS = ["channels_last", "bf16", "bf16+channels_last", "compile"]


@pytest.fixture(scope="module")
def reference(model):
    with torch.inference_mode():
        x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(1))
        return x, model(x), Predictor(model, "eager").predict(images())


def tolerance_key(spec: BackendSpec) -> str:
    if spec.int8:
        return "int8" if spec.dtype == "fp32" else f"int8+{spec.dtype}"
    return spec.dtype


def _check_backend(model, reference, spec, tolerances, **options):
    x, ref_raw, ref_results = reference
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent fallback in a parity test
        predictor = Predictor(model, spec, **options)
    tol = tolerances[tolerance_key(predictor.spec)]
    assert_raw_close(ref_raw, predictor.backend(x.to(model.mean.device)), tol["raw"])
    assert_results_close(ref_results, predictor.predict(images()), tol)
    return predictor


@pytest.mark.slow
@pytest.mark.parametrize("spec", CPU_SPECS)
def test_backend_parity_cpu(model, reference, tolerances, spec):
    if "bf16" in spec and not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    _check_backend(model, reference, spec, tolerances)


# A test on the module's ONNX export (onnx_file, int8_file) or a split export of its own pays
# for making it: slow, out of `make test-fast`.
needs_export = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    """Exported once through the console entry point, from a checkpoint, dynamic by default."""
    folder = tmp_path_factory.mktemp("onnx")
    ckpt = save_checkpoint(folder / "tiny.pt", model)
    path = folder / "tiny.onnx"
    assert export_main(["--checkpoint", str(ckpt), "--out", str(path)]) == 0
    return path


@pytest.mark.slow
def test_onnxruntime_parity(model, reference, tolerances, onnx_file):
    _check_backend(model, reference, "onnxruntime", tolerances, path=onnx_file)


@needs_export
def test_onnx_parity_dynamic_batch_and_size(model, onnx_file):
    backend = make_backend(model, "onnxruntime", path=onnx_file)
    assert_matches_eager(model, backend, ((3, 3, 96, 224), (1, 3, 256, 64)))
    only = backend(torch.randn(1, 3, 64, 64), tasks=("segmentation",))
    assert list(only) == ["segmentation"]


@needs_export
def test_a_bifpn_model_exports_and_matches_eager_at_odd_and_even_levels(tmp_path):
    """The BiFPN (HydraNet-style) neck downsamples between levels; its pooling must export
    and give eager's numbers whether a level's side is even or odd."""
    torch.manual_seed(0)
    model = tiny_models.tiny_model(["a", "b"], ["car"], ["road", "sky"], neck="bifpn")
    backend = make_backend(model, "onnxruntime", cache_dir=tmp_path)
    # P5 sides 4x5 and 5x6: P5 -> P6 pools an even and an odd side in each
    assert_matches_eager(model, backend, ((2, 3, 128, 160), (1, 3, 160, 192)))


@needs_export
def test_onnx_graph_has_every_head(onnx_file):
    import onnx

    graph = onnx.load(str(onnx_file)).graph
    assert [o.name for o in graph.output] == [
        "classification",
        "detection.cls_logits",
        "detection.bbox_regression",
        "detection.bbox_ctrness",
        "segmentation",
    ]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))


@needs_export
def test_onnx_file_knows_its_model(model, onnx_file):
    assert read_config(onnx_file) == model.cfg
    other = build_model(model.cfg.replace(segmentation=SegmentationConfig(classes=["x", "y", "z"])))
    with pytest.raises(ValueError, match="other classes/heads"):
        make_backend(other, "onnxruntime", path=onnx_file)


def _ops(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.slow
def test_onnxruntime_int8_parity(model, reference, tolerances):
    """The node's path: export, quantise on simulator frames, run; within int8 tolerances.
    The frames come from the caller, through a function called once, for the export."""
    calls = []

    def frames():
        calls.append(1)
        return calibration_frames(*model.cfg.input_size)

    predictor = _check_backend(model, reference, "onnxruntime+int8", tolerances,
                               calibration=frames)  # fmt: skip
    assert str(predictor.spec) == "onnxruntime+int8" and calls == [1]
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _ops(predictor.backend.path)


def test_int8_without_calibration_images_is_one_clear_error(model, tmp_path):
    """inference never renders frames itself: the caller gives them (before any export)."""
    with pytest.raises(ValueError, match="int8 calibration needs at least one image"):
        make_backend(model, "onnxruntime+int8", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="int8 calibration needs at least one image"):
        make_backend(model, "onnxruntime+int8", calibration=lambda: [])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def int8_file(model, tmp_path_factory):
    """An int8 graph made by the console entry point, calibrated on a folder of images."""
    import cv2

    folder = tmp_path_factory.mktemp("int8")
    ckpt = save_checkpoint(folder / "tiny.pt", model)
    frames = folder / "frames"
    frames.mkdir()
    for i, im in enumerate(images()):
        cv2.imwrite(str(frames / f"{i}.png"), im[..., ::-1])
    out = folder / "tiny_int8.onnx"
    args = ["--checkpoint", str(ckpt), "--out", str(out), "--int8", "--calibration", str(frames)]
    assert export_main(args) == 0
    return out


@pytest.mark.slow
def test_export_cli_writes_an_int8_graph_from_calibration_images(
    model, reference, tolerances, int8_file, tmp_path, capsys
):
    assert "QuantizeLinear" in _ops(int8_file)
    assert not int8_file.with_suffix(".fp32.onnx").exists()
    predictor = Predictor(model, "onnxruntime+int8", path=int8_file)
    assert_results_close(reference[2], predictor.predict(images()), tolerances["int8"])
    ckpt = int8_file.with_name("tiny.pt")
    args = ["--checkpoint", str(ckpt), "--out", str(tmp_path / "x.onnx"), "--int8"]
    with pytest.raises(SystemExit, match="no .png or .jpg"):
        export_main([*args, "--calibration", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit):  # argparse's error: --int8 needs --calibration
        export_main(args)
    assert "--int8 needs --calibration" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_export_cache_reuses_an_export_and_replaces_a_damaged_one(model, tmp_path, monkeypatch):
    """The node's restart: the same weights read the kept file instead of exporting again;
    other weights have another key; a damaged file is exported again, with a warning."""
    from pvt_mtl_ros.inference import export as E

    first = make_backend(model, "onnxruntime", cache_dir=tmp_path)
    assert first.path.parent == tmp_path and list(tmp_path.glob("*.onnx")) == [first.path]
    exports = []
    real_export = E.export_onnx
    monkeypatch.setattr(E, "export_onnx", lambda *a, **k: exports.append(a) or real_export(*a, **k))
    x = torch.randn(1, 3, 128, 160)
    again = make_backend(model, "onnxruntime", cache_dir=tmp_path)
    assert again.path == first.path and exports == []
    assert_raw_close(first(x), again(x), 0.0)

    other = tiny_model()
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert E.export_digest(other) != E.export_digest(model)
    assert E.export_digest(model, int8=True) != E.export_digest(model)

    first.path.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="is unreadable"):
        mended = make_backend(model, "onnxruntime", cache_dir=tmp_path)
    assert len(exports) == 1 and mended.path == first.path
    with torch.inference_mode():
        assert_raw_close(model(x), mended(x), 1e-4)


@needs_export
def test_export_cache_that_cannot_be_written_falls_back_to_a_temporary_export(
    model, onnx_file, tmp_path, monkeypatch
):
    from pvt_mtl_ros.inference import export as E

    def fake_export(model, path, **kwargs):  # a copy of the real export: no need to wait
        Path(path).write_bytes(onnx_file.read_bytes())
        return Path(path)

    monkeypatch.setattr(E, "export_onnx", fake_export)
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="cannot keep the export in"):
        backend = make_backend(model, "onnxruntime", cache_dir=not_a_folder)
    assert backend.path.is_file() and tmp_path not in backend.path.parents
    assert not_a_folder.read_text() == "a file where the folder should be"


# OpenVINO runs the same exported files; bf16 only where the CPU has it natively.
OPENVINO_SPECS = ["openvino", "openvino+bf16"]


@pytest.mark.parametrize("spec", OPENVINO_SPECS)
@needs_export
def test_openvino_parity(model, reference, tolerances, onnx_file, spec):
    pytest.importorskip("openvino", reason="openvino is not installed")
    if "bf16" in spec and not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    predictor = _check_backend(model, reference, spec, tolerances, path=onnx_file)
    assert str(predictor.spec) == spec
    # one compiled model per input shape, reused
    predictor.predict(images())
    assert len(predictor.backend._requests) == 1


@needs_export
def test_openvino_int8_bf16_parity(model, reference, tolerances, int8_file):
    pytest.importorskip("openvino", reason="openvino is not installed")
    spec = "openvino+int8+bf16" if cpu_has_bf16() else "openvino+int8"
    predictor = _check_backend(model, reference, spec, tolerances, path=int8_file)
    assert predictor.spec.int8


@needs_export
def test_openvino_refuses_another_models_file(model, onnx_file):
    pytest.importorskip("openvino", reason="openvino is not installed")
    other = build_model(model.cfg.replace(segmentation=SegmentationConfig(classes=["x", "y", "z"])))
    with pytest.raises(ValueError, match="other classes/heads"):
        make_backend(other, "openvino", path=onnx_file)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["openvino+split", "openvino+bf16+split"])
def test_openvino_split_parity_and_a_skipped_head_costs_nothing(
    model, reference, tolerances, spec, tmp_path
):
    """The graph cut into trunk + one graph per head, and the whole network as one graph for
    a call that runs every head: eager's results both ways (the mask's argmax now in the
    graph), a head not asked for is never compiled nor run, and the export is cached under
    its own key (the neck's levels are outputs of that graph only)."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    if "bf16" in spec and not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    x, ref_raw, ref_results = reference
    predictor = Predictor(model, spec, cache_dir=tmp_path)
    assert str(predictor.spec) == spec and predictor.backend.path.name.endswith("_split.onnx")
    tol = tolerances[tolerance_key(predictor.spec)]
    got = predictor.backend(x)
    assert "segmentation" not in got and got["segmentation_ids"].dtype == torch.uint8
    agree = (got["segmentation_ids"] == ref_raw["segmentation"].argmax(1)).float().mean()
    assert agree >= tol["mask"]
    ref_dense = {k: v for k, v in ref_raw.items() if k != "segmentation"}
    assert_raw_close(ref_dense, {k: got[k] for k in ref_dense}, tol["raw"])
    assert_results_close(ref_results, predictor.predict(images()), tol)
    assert {part for part, s in predictor.backend._requests} == {"all"}  # one graph, not three

    parts = predictor.backend(x, tasks=("detection", "segmentation"))  # trunk + both heads
    agree = (parts["segmentation_ids"] == ref_raw["segmentation"].argmax(1)).float().mean()
    assert agree >= tol["mask"]
    assert_raw_close({"detection": ref_raw["detection"]}, {"detection": parts["detection"]},
                     tol["raw"])  # fmt: skip
    assert {part for part, s in predictor.backend._requests} == {
        "all", "trunk", "detection", "segmentation"
    }  # fmt: skip

    shape = (1, 3, 96, 128)  # a new shape: only what is asked for gets compiled for it
    only = predictor.backend(torch.randn(*shape), tasks=("classification", "detection"))
    assert set(only) == {"classification", "detection"}
    compiled = {part for part, s in predictor.backend._requests if s == shape}
    assert compiled == {"trunk", "detection"}
    again = Predictor(model, spec, cache_dir=tmp_path)  # the same export, from the cache
    assert again.backend.path == predictor.backend.path
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_split_spec_parses_and_falls_back(monkeypatch):
    spec = BackendSpec.parse("openvino+split+bf16")
    assert spec == BackendSpec("openvino", "bf16", split=True)
    assert str(spec) == "openvino+bf16+split" and BackendSpec.parse(str(spec)) == spec
    for bad in ("onnxruntime+split", "split", "openvino+int8+split"):
        with pytest.raises(ValueError, match="split cuts the exported float graph"):
            BackendSpec.parse(bad)
    monkeypatch.setattr(S, "openvino_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="split is OpenVINO's: dropped"):
        assert resolve("openvino+bf16+split", "cpu") == BackendSpec("onnxruntime")
    with pytest.warns(RuntimeWarning, match="openvino runs on the CPU only"):
        assert resolve("openvino+split", "cuda") == BackendSpec("eager")


CUDA_SPECS = ["eager", "fp16", "bf16", "fp16+cuda_graph", "onnxruntime"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", CUDA_SPECS)
def test_backend_parity_cuda(tolerances, spec):
    model = tiny_model("cuda")
    with torch.inference_mode():
        x = torch.randn(2, 3, 128, 160, device="cuda")
        reference = (x, model(x), Predictor(model, "eager").predict(images()))
    predictor = _check_backend(model, reference, spec, tolerances)
    assert predictor.pinned
    again = predictor.predict(images())  # second call reuses the pinned buffers / graphs
    assert_results_close(reference[2], again, tolerances[tolerance_key(predictor.spec)])


# -- specs, fallbacks, the predictor -----------------------------------------------------------


def test_spec_strings_round_trip():
    spec = BackendSpec.parse("compile + BF16 + channels_last")
    assert spec == BackendSpec("compile", "bf16", channels_last=True)
    assert BackendSpec.parse(str(spec)) == spec
    assert BackendSpec.parse("fp16+cuda_graph") == BackendSpec("eager", "fp16", cuda_graph=True)
    assert BackendSpec.parse("onnxruntime+int8") == BackendSpec("onnxruntime", int8=True)
    spec = BackendSpec.parse("openvino+int8+bf16")
    assert spec == BackendSpec("openvino", "bf16", int8=True) and str(spec) == "openvino+bf16+int8"
    with pytest.raises(ValueError, match="int8 runs the quantised ONNX graph"):
        BackendSpec.parse("eager+int8")
    with pytest.raises(ValueError, match="unknown backend token 'int4'"):
        BackendSpec.parse("onnxruntime+int4")


def test_unsupported_specs_fall_back_with_a_warning(monkeypatch):
    with pytest.warns(RuntimeWarning) as caught:
        assert resolve("fp16+cuda_graph", "cpu") == BackendSpec()
    messages = " ".join(str(w.message) for w in caught)
    assert "fp16 needs CUDA" in messages and "cuda_graph needs CUDA" in messages
    with pytest.warns(RuntimeWarning, match="torch_tensorrt"):
        assert resolve("tensorrt", "cpu").engine == "compile"
    with pytest.warns(RuntimeWarning, match="openvino runs on the CPU only"):
        spec = resolve("openvino+int8", "cuda")
    assert spec == BackendSpec("eager")
    monkeypatch.setattr(S, "openvino_available", lambda: False)
    with pytest.warns(RuntimeWarning) as caught:
        assert resolve("openvino+bf16", "cpu") == BackendSpec("onnxruntime")
    messages = " ".join(str(w.message) for w in caught)
    assert "openvino is not importable" in messages and "dtype and channels_last" in messages
    monkeypatch.setattr(S, "cpu_has_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert resolve("bf16+channels_last", "cpu") == BackendSpec(channels_last=True)


def test_predictor_is_a_drop_in_for_predict(model):
    predictor = Predictor(model, "channels_last")
    assert predictor.cfg is model.cfg and predictor.tasks == model.tasks
    (only,) = predictor.predict(images()[0], tasks=("detection",), score_thresh=0.9)
    assert only.mask is None and only.class_probs is None and only.boxes is not None
    ref = predict(model, images(), tasks=("segmentation",))
    got = predictor.predict(images(), tasks=("segmentation",))
    assert all((a.mask == b.mask).all() for a, b in zip(ref, got))
    assert next(model.parameters()).is_contiguous()  # the caller's model keeps its layout


# -- backend "auto" ----------------------------------------------------------------------------

AUTO_CASES = [
    # cpu flags, openvino, onnxruntime, torch_tensorrt installed, device -> the spec auto runs
    ({"avx512f", "avx512_bf16"}, True, True, False, "cpu", "openvino+bf16+split"),
    ({"amx_bf16"}, True, True, False, "cpu", "openvino+bf16+split"),
    ({"avx512_bf16"}, False, True, False, "cpu", "eager+bf16+channels_last"),
    ({"bf16", "asimd"}, True, True, False, "cpu", "eager+bf16+channels_last"),  # Arm
    ({"avx512f", "avx2"}, True, True, False, "cpu", "openvino"),
    ({"avx2"}, False, True, False, "cpu", "onnxruntime"),
    ({"avx2"}, False, False, False, "cpu", "eager+channels_last"),
    ({"avx512_bf16"}, True, True, True, "cuda", "tensorrt+fp16"),
    ({"avx512_bf16"}, True, True, False, "cuda:1", "eager+fp16"),
]


def machine(monkeypatch, flags, openvino, onnxruntime, tensorrt):
    monkeypatch.setattr(S, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(S, "openvino_available", lambda: openvino)
    monkeypatch.setattr(S, "onnxruntime_available", lambda: onnxruntime)
    monkeypatch.setattr(S, "tensorrt_available", lambda: tensorrt)
    monkeypatch.setattr(S, "cuda_has_bf16", lambda: True)


@pytest.mark.parametrize("flags, openvino, onnxruntime, tensorrt, device, runs", AUTO_CASES)
def test_auto_picks_the_fastest_path_the_machine_has(
    monkeypatch, flags, openvino, onnxruntime, tensorrt, device, runs
):
    machine(monkeypatch, flags, openvino, onnxruntime, tensorrt)
    choice = choose(" AUTO ", device)
    assert str(choice.spec) == runs and choice.requested == "auto"
    assert choice.notes == []  # auto picks a spec the machine runs: nothing to drop
    assert choice.reason.startswith(f"backend {runs} (auto): ")
    bf16 = sorted(set(flags) & {"avx512_bf16", "amx_bf16"})
    if runs == "openvino+bf16+split":
        assert "/".join(bf16) in choice.reason and "OpenVINO is installed" in choice.reason
    if device.startswith("cuda"):
        assert "CUDA" in choice.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert resolve("auto", device) == choice.spec


def test_predictor_says_what_auto_chose_and_why(model, monkeypatch):
    machine(monkeypatch, {"avx2"}, False, False, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # auto never needs a fallback
        predictor = Predictor(model, "auto")
    assert predictor.spec == BackendSpec(channels_last=True)
    assert predictor.choice.requested == "auto"
    assert predictor.reason == (
        "backend eager+channels_last (auto): no native bf16 on this CPU and neither OpenVINO "
        "nor ONNX Runtime installed"
    )
    assert predictor.predict(images()[0])[0].mask is not None


def test_a_choice_is_resolved_once(model, monkeypatch):
    """A caller with its own log (the node) chooses, logs the notes, and hands the Choice on:
    the predictor neither resolves it again nor warns."""
    choice = choose("channels_last+cuda_graph", "cpu")
    note = "backend eager+channels_last+cuda_graph: cuda_graph needs CUDA: dropped"
    assert choice.notes == [note]
    assert choice.reason == (
        "backend eager+channels_last (asked for eager+channels_last+cuda_graph): cuda_graph "
        "needs CUDA: dropped"
    )
    assert choose("eager", "cpu").reason == "backend eager (as asked)"
    monkeypatch.setattr(S, "_runnable", lambda *a: pytest.fail("resolved a second time"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        predictor = Predictor(model, choice)
    assert predictor.choice is choice and predictor.spec == choice.spec
    with pytest.raises(ValueError, match="'auto' is a whole spec"):
        choose("auto+int8", "cpu")


def test_openvino_streams_compile_for_throughput_and_refuse_a_bad_count():
    from pvt_mtl_ros.inference.graph_engines import openvino_config

    one, two = openvino_config("bf16", 2), openvino_config("fp32", 2, streams=2)
    assert (one["PERFORMANCE_HINT"], one["NUM_STREAMS"]) == ("LATENCY", 1)
    assert (two["PERFORMANCE_HINT"], two["NUM_STREAMS"], two["INFERENCE_NUM_THREADS"]) == (
        "THROUGHPUT", 2, 2,
    )  # fmt: skip
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="streams must be an integer >= 1"):
            openvino_config("fp32", 2, streams=bad)


@pytest.mark.parametrize("spec", ["openvino", "openvino+split"])
@needs_export
def test_openvino_streams_give_each_thread_its_own_frame(model, onnx_file, spec, tmp_path):
    """Two threads calling one backend at once (the node's workers, streams=2) each get the
    outputs of their own input: the requests (whose buffers the outputs view) are per thread,
    the compiled model is shared. The split backend runs its parts (the trunk's levels handed
    to the heads' requests), not its whole-network graph."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    import threading

    path = onnx_file if spec == "openvino" else None
    predictor = Predictor(model, spec, path=path, cache_dir=tmp_path, streams=2)
    assert predictor.backend.streams == 2
    frames = [images(), [np.ascontiguousarray(im[::-1, ::-1]) for im in images()]]
    dense = {"tasks": ("detection", "segmentation")} if spec != "openvino" else {}
    alone = [predictor.predict(f, **dense) for f in frames]  # one after the other, here
    together: dict[int, list] = {}
    barrier = threading.Barrier(2)

    def run(i):
        barrier.wait()
        together[i] = [predictor.predict(frames[i], **dense) for _ in range(3)]

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(together) == [0, 1]
    for i in (0, 1):
        for got in together[i]:
            for a, b in zip(got, alone[i]):
                assert np.array_equal(a.mask, b.mask) and np.array_equal(a.scores, b.scores)
    assert not np.array_equal(alone[0][0].mask, alone[1][0].mask)  # the frames differ
    assert len(predictor.backend._requests) == (1 if spec == "openvino" else 3)
