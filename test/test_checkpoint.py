"""Checkpoints (weights + config in one file) and official PVT v2 ImageNet weights."""

import re

import pytest
import timm
import torch
from test_model import small_config

from pvt_mtl_ros.model import (
    CheckpointError,
    build_model,
    load_checkpoint,
    load_pretrained_backbone,
    save_checkpoint,
)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model(small_config()).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, extra={"step": 7})
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(a["segmentation"], b["segmentation"], rtol=0, atol=0)
    torch.testing.assert_close(a["classification"], b["classification"], rtol=0, atol=0)
    torch.testing.assert_close(
        a["detection"]["cls_logits"], b["detection"]["cls_logits"], rtol=0, atol=0
    )


def test_half_checkpoint_is_smaller_and_close(tmp_path):
    model = build_model(small_config()).eval()
    full = save_checkpoint(tmp_path / "f.pt", model)
    half = save_checkpoint(tmp_path / "h.pt", model, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x)["classification"], model(x)["classification"], atol=1e-2, rtol=1e-2
        )


def test_missing_and_truncated_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint not found: {tmp_path}/x")):
        load_checkpoint(tmp_path / "x.pt")
    path = save_checkpoint(tmp_path / "m.pt", build_model(small_config()))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pvt_mtl_ros checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_mismatched_checkpoint_names_the_mismatch(tmp_path):
    model = build_model(small_config())
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)

    # weights of a 5-class segmentation head under a 3-class config
    payload["state_dict"]["heads.segmentation.classifier.weight"] = torch.zeros(5, 32, 1, 1)
    del payload["state_dict"]["heads.classification.fc.bias"]
    payload["state_dict"]["heads.extra.weight"] = torch.zeros(1)
    del payload["digest"]  # edited by hand: the stored digest no longer applies
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err, pytest.warns(UserWarning, match="no integrity"):
        load_checkpoint(tmp_path / "bad.pt")
    msg = str(err.value)
    assert (
        "heads.segmentation.classifier.weight: checkpoint (5, 32, 1, 1) vs model (3, 32, 1, 1)"
        in msg
    )
    assert "1 missing" in msg and "heads.classification.fc.bias" in msg
    assert "1 unexpected" in msg and "heads.extra.weight" in msg

    # asked for another config than the file holds
    other = small_config(backbone="pvt_v2_b1")
    with pytest.raises(CheckpointError, match="backbone: expected 'pvt_v2_b1'.*'pvt_v2_b0'"):
        load_checkpoint(path, config=other)


def _timm_to_original(state: dict) -> dict:
    """timm's PVT v2 key names -> the original whai362/PVT release's (inverse of timm's filter)."""
    out = {}
    for k, v in state.items():
        k = k.replace("patch_embed.", "patch_embed1.")
        k = re.sub(r"stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", k)
        k = re.sub(r"stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}.", k)
        k = re.sub(r"stages\.(\d)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", k)
        k = k.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
        out[k] = v
    return out


@pytest.mark.parametrize("fmt", ["original", "timm"])
def test_official_pvt_v2_weights_load_into_the_backbone(tmp_path, fmt):
    torch.manual_seed(3)
    reference = timm.create_model("pvt_v2_b0")  # stands in for the ImageNet release
    state = reference.state_dict()
    if fmt == "original":
        state = _timm_to_original(state)
        assert "block1.0.attn.q.weight" in state and "patch_embed2.proj.weight" in state
    torch.save({"model": state}, tmp_path / "pvt_v2_b0.pth")

    model = build_model(small_config())
    report = load_pretrained_backbone(model.backbone, tmp_path / "pvt_v2_b0.pth")
    assert report.missing == []
    assert report.unexpected == []
    assert report.ignored_classifier == ["head.bias", "head.weight"]
    assert report.loaded == len(model.backbone.state_dict())
    ours = model.backbone.body
    torch.testing.assert_close(
        ours.stages_1.downsample.proj.weight, reference.stages[1].downsample.proj.weight
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x)[-1], reference.forward_features(x))


def test_pretrained_weights_of_another_model_fail_clearly(tmp_path):
    torch.save(timm.create_model("pvt_v2_b1").state_dict(), tmp_path / "b1.pth")
    model = build_model(small_config())
    with pytest.raises(ValueError, match="shapes differ"):
        load_pretrained_backbone(model.backbone, tmp_path / "b1.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained_backbone(model.backbone, tmp_path / "none.pth")


# -- integrity: digest, finite weights, hostile pickles (issue 17.1) ---------------------------


def flip_bytes(path, out, n=20, seed=0):
    """`n` bytes of the tensor data (the uncompressed zip members under data/) inverted."""
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        spans = []
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size > 64:
                # local header: 30 bytes + name + extra, then the stored bytes
                name_len = int.from_bytes(
                    data[info.header_offset + 26 : info.header_offset + 28], "little"
                )
                extra_len = int.from_bytes(
                    data[info.header_offset + 28 : info.header_offset + 30], "little"
                )
                start = info.header_offset + 30 + name_len + extra_len
                spans.append((start, info.file_size))
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        start, size = spans[int(torch.randint(len(spans), (1,), generator=g))]
        i = start + int(torch.randint(size, (1,), generator=g))
        data[i] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def nan_checkpoint(path, out):
    payload = torch.load(path, weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key] = payload["state_dict"][key].clone().fill_(float("nan"))
    from pvt_mtl_ros.model.checkpoint import DIGEST, tensor_digest

    # a digest that matches: the weights were NaN when saved (a diverged run), not damaged
    payload["digest"] = {"kind": DIGEST, "value": tensor_digest(payload["state_dict"])}
    torch.save(payload, out)
    return out


class Payload:
    """Runs a shell command when unpickled, as a hostile 'checkpoint' would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def pickle_checkpoint(out, marker):
    torch.save({"format": "pvt_mtl_ros/checkpoint-v1", "state_dict": Payload(marker)}, out)
    return out


def test_a_checkpoint_with_flipped_bytes_is_refused_in_one_line(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(small_config()))
    bad = flip_bytes(path, tmp_path / "flipped.pt")
    # torch itself reads it without complaint: the damage would run as another network
    torch.load(bad, weights_only=True)
    with pytest.raises(CheckpointError, match="flipped.pt is corrupt: its weights do not match"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value)


def test_nan_weights_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(small_config()))
    with pytest.raises(CheckpointError, match="hold NaN or infinite values"):
        load_checkpoint(nan_checkpoint(path, tmp_path / "nan.pt"))


def test_a_pickle_payload_is_refused_for_safety_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    bad = pickle_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    msg = str(err.value)
    assert "not a plain checkpoint" in msg and "refused for safety" in msg, msg
    assert "weights_only" not in msg and "\n" not in msg, msg
    assert not marker.exists()


def test_a_checkpoint_without_digest_loads_with_a_warning(tmp_path):
    from pvt_mtl_ros.model.checkpoint import UnverifiedCheckpointWarning

    model = build_model(small_config()).eval()
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    assert payload["digest"]["value"]
    del payload["digest"]  # as written before digests, or by another tool
    torch.save(payload, tmp_path / "old.pt")
    with pytest.warns(UnverifiedCheckpointWarning, match="no integrity digest"):
        old = load_checkpoint(tmp_path / "old.pt")
    assert torch.equal(old.state_dict()["heads.classification.fc.bias"],
                       model.state_dict()["heads.classification.fc.bias"])  # fmt: skip


def test_the_shipped_model_has_a_digest_and_loads_without_a_warning():
    import warnings
    from pathlib import Path

    import pvt_mtl_ros
    from pvt_mtl_ros.model.checkpoint import read_checkpoint, tensor_digest

    path = Path(pvt_mtl_ros.__file__).parent / "weights" / "demo_mtl_b0.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        payload = read_checkpoint(path)
    assert payload["digest"]["value"] == tensor_digest(payload["state_dict"])


def test_orphaned_temp_files_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    orphan = tmp_path / f".m.pt.pid{pid}.abc123.tmp"  # what a killed run leaves
    orphan.write_bytes(b"x" * 1000)
    live = tmp_path / f".m.pt.pid{__import__('os').getpid()}.def456.tmp"  # a live writer's
    live.write_bytes(b"y")
    save_checkpoint(tmp_path / "m.pt", build_model(small_config()))
    assert not orphan.exists()
    assert live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.pt", live.name])


def test_export_model_sets_the_default_input_and_keeps_the_weights(make_tiny_checkpoint, tmp_path):
    from pvt_mtl_ros.model.checkpoint import read_checkpoint
    from training import export_model

    source = make_tiny_checkpoint(["a", "b"], ["car"], ["road", "sky"], (128, 160))
    shipped = tmp_path / "shipped.pt"
    assert export_model.main([str(source), str(shipped), "--half"]) == 0
    again = tmp_path / "again.pt"  # a re-export of the shipped file, at another input
    assert export_model.main([str(shipped), str(again), "--half", "--input-size", "96", "128"]) == 0
    first, second = read_checkpoint(shipped), read_checkpoint(again)
    assert tuple(load_checkpoint(again).cfg.input_size) == (96, 128)
    assert tuple(load_checkpoint(shipped).cfg.input_size) == (128, 160)
    assert second["digest"] == first["digest"]  # the same FP16 tensors, bit for bit
    assert second["extra"]["exported_from"] == str(source)  # the training run, not the copy
    assert export_model.main([str(shipped), str(tmp_path / "x.pt"), "--input-size", "100", "128"])
    assert not (tmp_path / "x.pt").exists()
