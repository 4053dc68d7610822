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
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
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
