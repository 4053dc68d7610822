"""The camera rate the perception node keeps: paths side by side in one run.

    .venv/bin/python benchmarks/bench_rate.py \
        --path backend=openvino+bf16,inference_streams=1 \
        --path backend=openvino+bf16+split,inference_streams=2,input_size=416x544

One process: a probe publishes one 640x480 camera (sensor_msgs/Image, a simulator frame) at
--rate and subscribes to every output (detections, segmentation, scene), taking them serialized
and reading the stamp from the CDR bytes (as bench_node does: a subscriber's own
deserialisation is not the node's cost). Each --path is a perception node of its own (node
parameters, `key=value` joined by commas; `input_size=HxW`), started once; the rounds run the
paths in turn, --rounds times, so that load from other processes falls on all of them alike.
Per path it reports the output rate (frames whose three outputs all arrived, per second), the
share of input frames the node superseded, and the end-to-end latency of the frames served
(publish -> last output). The first path is the baseline of the ratios. Prints JSON, then a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
import uuid
from pathlib import Path

import yaml
from bench_node import cdr_stamp_ns
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Classification, Detection2DArray

from pvt_mtl_ros.ros.image_conversion import array_to_image_msg
from pvt_mtl_ros.ros.inprocess import InProcess, wait_for
from pvt_mtl_ros.ros.lifecycle import start
from pvt_mtl_ros.ros.perception_node import PACKAGE_DIR, PerceptionNode
from pvt_mtl_ros.sim.calibration import calibration_frames

DEMO = PACKAGE_DIR / "weights" / "demo_mtl_b0.pt"
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
OUTPUTS = {"detections": Detection2DArray, "segmentation": Image, "scene": Classification}


def parse_path(text: str) -> dict:
    """'backend=openvino+bf16,input_size=416x544,outputs.scene=false' -> node parameters."""
    params: dict = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--path {text!r}: {item!r} is not key=value")
        if key == "input_size":
            params[key] = [int(v) for v in value.lower().split("x")]
        else:  # typed as YAML reads it: 2, 0.4, false, openvino+bf16
            params[key] = yaml.safe_load(value)
    return params


class NodePath:
    """One configured perception node and what the probe saw of it."""

    def __init__(self, ros: InProcess, label: str, params: dict, checkpoint: Path) -> None:
        self.label, self.ns = label, f"/rate_{uuid.uuid4().hex[:8]}"
        values = {"checkpoint": str(checkpoint), "camera_names": ["cam"],
                  "cameras.cam.reliability": "reliable", **params}  # fmt: skip
        self.node = PerceptionNode(
            context=ros.context,
            namespace=self.ns,
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
        self.probe = ros.node("rate_probe", namespace=self.ns)
        self.pub = self.probe.create_publisher(Image, "cam/image_raw", QOS)
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}  # stamp ns -> publish time
        self.got: dict[int, dict[str, float]] = {}  # stamp ns -> output -> arrival time
        for out, kind in OUTPUTS.items():
            self.probe.create_subscription(kind, f"cam/{out}", self._on(out), QOS, raw=True)
        self.rounds: list[dict] = []

    def _on(self, out: str):
        def callback(msg) -> None:
            with self.lock:
                self.got.setdefault(cdr_stamp_ns(msg), {})[out] = time.perf_counter()

        return callback

    def run_round(self, msg: Image, rate: float, seconds: float, stamp0: int) -> None:
        """Publish at `rate` for `seconds`, wait for the last outputs, keep the round's figures."""
        with self.lock:
            self.sent.clear()
            self.got.clear()
        period, n = 1.0 / rate, int(rate * seconds)
        before = self.node.stats.snapshot()["cameras"]["cam"]
        t0 = time.perf_counter()
        for i in range(n):
            ns = stamp0 + i * int(period * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            with self.lock:
                self.sent[ns] = time.perf_counter()
            self.pub.publish(msg)
            time.sleep(max(0.0, t0 + (i + 1) * period - time.perf_counter()))
        elapsed = time.perf_counter() - t0
        time.sleep(1.0)  # the frames in flight finish
        after = self.node.stats.snapshot()["cameras"]["cam"]
        with self.lock:
            done = {s: max(v.values()) for s, v in self.got.items() if len(v) == len(OUTPUTS)}
            latency = [done[s] - self.sent[s] for s in done if s in self.sent]
        received = after["received"] - before["received"]
        self.rounds.append({
            "sent": n,
            "served": len(done),
            "rate_hz": len(done) / elapsed,
            "superseded": (after["superseded"] - before["superseded"]) / max(1, received),
            "latency_ms": [1000 * v for v in latency],
        })  # fmt: skip

    def summary(self) -> dict:
        rates = [r["rate_hz"] for r in self.rounds]
        lat = sorted(v for r in self.rounds for v in r["latency_ms"])
        return {
            "path": self.label,
            "backend": self.node.backend_spec,
            "input_size": list(self.node.model.cfg.input_size),
            "inference_streams": self.node.streams,
            "rate_hz_median": statistics.median(rates),
            "rate_hz_rounds": [round(r, 2) for r in rates],
            "superseded": statistics.fmean(r["superseded"] for r in self.rounds),
            "latency_ms_p50": statistics.median(lat) if lat else None,
            "latency_ms_p90": lat[int(0.9 * (len(lat) - 1))] if lat else None,
        }


def run(args: argparse.Namespace) -> dict:
    checkpoint = Path(args.checkpoint) if args.checkpoint else DEMO
    ros = InProcess()
    paths = [NodePath(ros, text, parse_path(text), checkpoint) for text in args.path]
    for p in paths:
        ros.spin(p.node, p.probe)
    try:
        for p in paths:
            if not start(p.node):
                raise SystemExit(f"{p.label}: the node did not start: {p.node.last_error}")
            wait_for(lambda p=p: p.pub.get_subscription_count() > 0, 30, "subscription",
                     SystemExit)  # fmt: skip
        frame = calibration_frames(480, 640, count=1)[0]
        msg = array_to_image_msg(frame, "rgb8")
        stamp = time.time_ns()
        for p in paths:  # warm-up round, not kept
            p.run_round(msg, args.rate, 2.0, stamp)
            p.rounds.clear()
            stamp += 10**11
        for _ in range(args.rounds):
            for p in paths:
                p.run_round(msg, args.rate, args.seconds, stamp)
                stamp += 10**11
        rows = [p.summary() for p in paths]
    finally:
        ros.close()
    base = rows[0]["rate_hz_median"]
    for row in rows:
        row["vs_first"] = row["rate_hz_median"] / base if base else None
    import torch

    return {
        "camera": "640x480 rgb8, one camera",
        "input_rate_hz": args.rate,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "checkpoint": str(checkpoint),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, load average at end {os.getloadavg()[0]:.2f}",
        "paths": rows,
    }


def markdown(report: dict) -> str:
    lines = [
        f"Node rate, {report['camera']} at {report['input_rate_hz']} Hz in, "
        f"{report['rounds']} rounds of {report['seconds_per_round']} s per path; "
        f"{report['machine']}.",
        "",
        "| path | runs as | input | streams | output Hz (median of rounds) | vs first "
        "| superseded | latency p50 / p90 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["paths"]:
        h, w = r["input_size"]
        lat = "-" if r["latency_ms_p50"] is None else (
            f"{r['latency_ms_p50']:.0f} / {r['latency_ms_p90']:.0f}"
        )  # fmt: skip
        lines.append(
            f"| `{r['path']}` | {r['backend']} | {h}x{w} | {r['inference_streams']} "
            f"| {r['rate_hz_median']:.1f} ({', '.join(map(str, r['rate_hz_rounds']))}) "
            f"| {r['vs_first']:.2f}x | {100 * r['superseded']:.0f} % | {lat} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", action="append", required=True,
                   help="node parameters key=value,... (repeat: one node per path)")  # fmt: skip
    p.add_argument("--checkpoint", help="default: the shipped demo model")
    p.add_argument("--rate", type=float, default=30.0, help="input frames per second")
    p.add_argument("--seconds", type=float, default=8.0, help="per round and path")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="also write the JSON here")
    args = p.parse_args()
    report = run(args)
    print(json.dumps(report, indent=2))
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
