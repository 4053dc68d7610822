"""The main job out of the box: simulated camera -> perception node over rclpy -> results.

    make demo                      # or: pvt-mtl-demo [--duration 20] [--out outputs/demo]

Runs the closed loop of `pvt-mtl-sil` (config/sil/demo.yaml) with the shipped demo model on
simulator seeds it never saw, records the node's own debug images (frame + boxes + mask +
scene label) and writes: frames/*.png, demo.mp4, contact_sheet.png, summary.json and
summary.md with AP50, mIoU, scene accuracy and latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent
SCENARIO = "config/sil/demo.yaml"
CONTACT_FRAMES = 6


def _scenario_path() -> Path:
    """config/sil/demo.yaml in the checkout, else in the installed share/pvt_mtl_ros."""
    candidate = PACKAGE_DIR.parent / SCENARIO
    if not candidate.is_file():
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory("pvt_mtl_ros")) / SCENARIO
    return candidate


def contact_sheet(frames: list[np.ndarray], columns: int = 3) -> np.ndarray:
    """Frames (same size, RGB) in a grid, evenly picked across the run."""
    pick = np.linspace(0, len(frames) - 1, min(CONTACT_FRAMES, len(frames))).round().astype(int)
    tiles = [frames[i] for i in pick]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> bool:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        return False
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path.is_file() and path.stat().st_size > 0


def summary(report: dict, seconds: float, frames: int) -> dict:
    m = report["metrics"]
    det = m["detection"]
    lat = m["latency_ms"]["all"]
    return {
        "checkpoint": report.get("checkpoint"),
        "device": report.get("device"),
        "backend": report.get("backend"),
        "frames_scored": report["totals"]["completed"],
        "frames_dropped": report["totals"]["dropped"],
        "annotated_frames": frames,
        "AP50": det.get("AP50"),
        "AP50_per_class": det.get("AP50_per_class", {}),
        "min_box_height": det.get("min_box_height", 0.0),
        "AP50_all_sizes": det.get("AP50_all_sizes", det.get("AP50")),
        "AP50_per_class_all_sizes": det.get(
            "AP50_per_class_all_sizes", det.get("AP50_per_class", {})
        ),
        "mIoU": m["segmentation"].get("mIoU"),
        "scene_accuracy": m["scene"].get("accuracy"),
        "latency_ms": {k: lat.get(k) for k in ("p50", "p95", "p99")},
        "wall_s": round(seconds, 1),
    }


def markdown(s: dict) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None or v != v else f"{v:.3f}"

    per_class = ", ".join(f"{k} {f(v)}" for k, v in s["AP50_per_class"].items())
    every = ", ".join(f"{k} {f(v)}" for k, v in s["AP50_per_class_all_sizes"].items())
    rule = f", boxes >= {s['min_box_height']:g} px tall" if s["min_box_height"] else ""
    lat = s["latency_ms"]
    return "\n".join([
        "# pvt_mtl_ros demo",
        "",
        f"- model: `{s['checkpoint']}` on {s['device']}, backend {s['backend']}",
        f"- frames scored: {s['frames_scored']} (dropped by latest-frame-wins: "
        f"{s['frames_dropped']})",
        f"- AP50: {f(s['AP50'])} ({per_class}{rule})",
        f"- AP50 over every box: {f(s['AP50_all_sizes'])} ({every})",
        f"- mIoU: {f(s['mIoU'])}",
        f"- scene accuracy: {f(s['scene_accuracy'])}",
        f"- end-to-end latency ms: p50 {f(lat['p50'])}, p95 {f(lat['p95'])}, p99 {f(lat['p99'])}",
        "",
        "![contact sheet](contact_sheet.png)",
        "",
    ])  # fmt: skip


def run(out: Path, duration: float, checkpoint: str | None, device: str | None) -> dict:
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from .ros.image_conversion import image_msg_to_array
    from .ros.inprocess import stamp_ns
    from .sil import harness
    from .sil.gates import check
    from .sil.report import attach_gates
    from .sil.scenario import load_scenario

    overrides = [("duration", duration)]
    if checkpoint:
        overrides.append(("perception.checkpoint", checkpoint))
    if device:
        overrides.append(("perception.device", device))
    scn = load_scenario(_scenario_path(), overrides)
    annotated: dict[int, np.ndarray] = {}
    lock = threading.Lock()

    class DemoLoop(harness.Loop):
        """The SIL loop, plus the node's debug image (drawn by the node, as a user sees it)."""

        def _perception_node(self):
            node = super()._perception_node()
            node.set_parameters([Parameter("outputs.debug_image", value=True)])
            return node

        def connect(self) -> None:
            super().connect()
            cam = self.scn.cameras[0].name

            def keep(msg) -> None:
                with lock:
                    annotated[stamp_ns(msg)] = image_msg_to_array(msg, "rgb8")

            self.probe.create_subscription(
                Image, self._topic(f"{cam}/debug_image"), keep, harness.INBOX_QOS
            )

    t0 = time.monotonic()
    loop = DemoLoop(scn, printer=lambda line: print(line, flush=True))
    try:
        loop.open()
        loop.connect()
        print(
            f"demo: {duration:g} s of simulated frames through the perception node "
            f"({scn.perception.checkpoint})",
            flush=True,
        )
        report = loop.run()
    finally:
        loop.close()
    report = attach_gates(report, check(scn.thresholds, report))

    frames = [annotated[k] for k in sorted(annotated)]
    if not frames:
        raise RuntimeError("the perception node published no debug image")
    out.mkdir(parents=True, exist_ok=True)
    (out / "frames").mkdir(exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(out / "frames" / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    sheet = contact_sheet(frames)
    cv2.imwrite(str(out / "contact_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    write_video(out / "demo.mp4", frames, fps=max(1.0, len(frames) / max(duration, 1e-3)))
    result = summary(report, time.monotonic() - t0, len(frames))
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvt-mtl-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of frames")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--checkpoint", help="a checkpoint other than the shipped demo model")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    args = parser.parse_args(argv)
    try:
        result = run(args.out, args.duration, args.checkpoint, args.device)
    except Exception as err:  # one clear line for a newcomer, not a traceback
        print(f"pvt-mtl-demo: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(markdown(result))
    out = args.out.resolve()
    print(f"outputs in {out}: contact_sheet.png, demo.mp4, frames/, summary.md, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
