"""The README's main job, shortened: simulated camera -> perception node -> demo outputs."""

import json
from pathlib import Path

import ros_required  # noqa: F401
import cv2
import pytest

from pvt_mtl_ros.demo import main as demo_main
from pvt_mtl_ros.model import load_checkpoint

SHIPPED = Path(__file__).resolve().parents[1] / "pvt_mtl_ros" / "weights" / "demo_mtl_b0.pt"


def test_shipped_demo_model_is_small_and_complete():
    assert SHIPPED.stat().st_size < 20e6
    model = load_checkpoint(SHIPPED)
    assert model.tasks == ("classification", "detection", "segmentation")
    assert {"car", "person"} <= set(model.cfg.detection.classes)
    assert len(model.cfg.segmentation.classes) == 11  # CamVid's class set


@pytest.mark.slow
def test_short_demo_writes_every_output(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo_main(["--duration", "4", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and str(out.resolve()) in printed
    frames = sorted((out / "frames").glob("*.png"))
    assert frames
    frame = cv2.imread(str(frames[0]))
    assert frame.shape == (480, 640, 3)  # the camera's own size: drawn by the node
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[1] == 3 * 640 and sheet.shape[0] % 480 == 0
    assert (out / "demo.mp4").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_scored"] > 0 and summary["annotated_frames"] == len(frames)
    for key in ("AP50", "AP50_all_sizes", "mIoU", "scene_accuracy", "latency_ms"):
        assert key in summary
    # the demo scores AP with KITTI's 25-px rule and says so, with AP over every box beside it
    assert summary["min_box_height"] == 25
    # the demo scenario asks for openvino+bf16 (plain openvino on a CPU without native bf16;
    # ONNX Runtime where openvino is not installed): the summary names what ran
    assert summary["backend"].split("+")[0] in ("openvino", "onnxruntime")
    assert ">= 25 px tall" in (out / "summary.md").read_text()
    assert "contact_sheet.png" in (out / "summary.md").read_text()
