"""End-to-end latency of the perception node, and its overhead beyond the network's own time.

    .venv/bin/python benchmarks/bench_node.py [--checkpoint PATH] [--frames 30] [--visuals]

One process: the node (as `python -m pvt_mtl_ros.ros.perception_node` would run it) and a probe
node on one executor thread, in a private rclpy context. One 640x480 frame in flight at a
time: latency = the probe publishing it -> the probe holding every output (detections,
segmentation, scene; with --visuals also the colour map and the debug image). The network's
own time is the node's predictor (its --backend) on the same decoded frame in the same
process, so

    overhead = end-to-end - network   (transport, conversion, queueing, message building).

The probe takes the outputs serialized (`raw=True`) and reads the header stamp and the box
count straight from the CDR bytes, so the end-to-end time stops when the node's outputs have
arrived, not after Python has rebuilt a hundred Detection2D objects (2.6 ms for 100 boxes on
the 2-core CPU: a cost of a Python subscriber, not of the node). `--deserialize` puts that
cost back in, as an rclpy subscriber sees it.

`--schedule N` also measures per-task scheduling: the same frames again with
`schedule.every.segmentation: N` (set live), after the every-frame pass; a frame whose
segmentation head is not due waits only for its detections and scene. It reports both
passes' in-node inference and end-to-end times and the saving.

Without --checkpoint it uses the shipped demo model when present, else a random-weight
`mtl_pvt_v2_b0` (same architecture and class counts; random weights give other box counts).
Prints JSON, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Classification, Detection2DArray

from pvt_mtl_ros.ros.image_conversion import (
    array_to_compressed_msg,
    array_to_image_msg,
    msg_to_array,
)
from pvt_mtl_ros.ros.inprocess import InProcess, wait_for
from pvt_mtl_ros.ros.lifecycle import start
from pvt_mtl_ros.ros.perception_node import PACKAGE_DIR, PerceptionNode

DEMO = PACKAGE_DIR / "weights" / "demo_mtl_b0.pt"
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def scene_image(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth synthetic road scene (JPEG-friendly; content does not change the timing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([120 + 60 * (y > h // 2), 150 - y * 80 // h, 200 - (x * 50 // w)])
    for _ in range(6):  # a few boxes as "cars"
        x0, y0 = int(rng.integers(0, w - 80)), int(rng.integers(h // 2, h - 50))
        img[y0 : y0 + 40, x0 : x0 + 80] = rng.integers(0, 255, 3)
    return img.astype(np.uint8)


def cdr_stamp_ns(data: bytes) -> int:
    """header.stamp, in ns, of a serialized message whose first field is a std_msgs/Header:
    4 bytes of CDR encapsulation, then int32 sec and uint32 nanosec (little-endian by the
    encapsulation id)."""
    order = "little" if data[1] & 1 else "big"
    sec = int.from_bytes(data[4:8], order, signed=True)
    return sec * 1_000_000_000 + int.from_bytes(data[8:12], order)


def cdr_stamp_sec(data: bytes) -> int:
    """header.stamp.sec of a serialized message (see cdr_stamp_ns)."""
    return cdr_stamp_ns(data) // 1_000_000_000


def cdr_detection_count(data: bytes) -> int:
    """len(detections) of a serialized Detection2DArray: after the header's stamp (8 bytes)
    and frame_id (uint32 length incl. NUL, the bytes), the sequence length, 4-aligned."""
    order = "little" if data[1] & 1 else "big"
    length = int.from_bytes(data[12:16], order)
    offset = 16 + length
    offset += -(offset - 4) % 4  # CDR aligns from the end of the encapsulation header
    return int.from_bytes(data[offset : offset + 4], order)


def checkpoint_path(arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given"
    if DEMO.is_file():
        return DEMO, "demo model"
    from pvt_mtl_ros.model import build_model, save_checkpoint

    model = build_model("mtl_pvt_v2_b0").eval()
    return save_checkpoint(tmp / "mtl_pvt_v2_b0_random.pt", model), "random-weight mtl_pvt_v2_b0"


def stats_ms(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        "median": round(1000 * statistics.median(v), 1),
        "mean": round(1000 * statistics.fmean(v), 1),
        "p90": round(1000 * v[min(len(v) - 1, int(0.9 * len(v)))], 1),
        "min": round(1000 * v[0], 1),
    }


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    ckpt, origin = checkpoint_path(args.checkpoint, tmp)
    ros = InProcess()
    ns = f"/bench_{uuid.uuid4().hex[:8]}"
    params = {
        "checkpoint": str(ckpt),
        "device": args.device,
        "backend": args.backend,
        "cpu_threads": args.threads,
        "camera_names": ["raw", "jpeg"],
        "cameras.raw.transport": "raw",
        "cameras.jpeg.transport": "compressed",
        "cameras.raw.reliability": "reliable",
        "cameras.jpeg.reliability": "reliable",
        "score_threshold": args.score_threshold
        if args.score_threshold is not None
        else (0.05 if origin.startswith("random") else 0.3),
        "max_detections": args.max_detections,
    }
    node = PerceptionNode(
        context=ros.context,
        namespace=ns,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    probe = ros.node("bench_probe", namespace=ns)
    outputs = {"detections": Detection2DArray, "segmentation": Image, "scene": Classification}
    if args.visuals:
        outputs.update({"segmentation/color": Image, "debug_image": Image})
    arrivals: dict[tuple[str, int], dict[str, float]] = {}
    detections: list[int] = []
    complete = threading.Event()  # the frame in flight has all its outputs
    needed = {"outputs": set(outputs)}  # what the frame in flight will get

    def on_output(camera: str, out: str):
        def callback(msg) -> None:
            now = time.perf_counter()
            raw = isinstance(msg, bytes)
            sec = cdr_stamp_sec(msg) if raw else msg.header.stamp.sec
            got = arrivals.setdefault((camera, sec), {})
            got[out] = now
            if out == "detections":
                detections.append(cdr_detection_count(msg) if raw else len(msg.detections))
            if needed["outputs"] <= set(got):
                complete.set()

        return callback

    pubs = {
        "raw": probe.create_publisher(Image, "raw/image_raw", QOS),
        "jpeg": probe.create_publisher(CompressedImage, "jpeg/image_raw/compressed", QOS),
    }
    for camera in pubs:
        for out, kind in outputs.items():
            probe.create_subscription(
                kind, f"{camera}/{out}", on_output(camera, out), QOS, raw=not args.deserialize
            )
    ros.spin(node, probe)
    try:
        t0 = time.perf_counter()
        if not start(node):
            raise SystemExit(f"the node did not start: {node.last_error}")
        configure_s = time.perf_counter() - t0
        image = scene_image()
        messages = {
            "raw": array_to_image_msg(image, "rgb8"),
            "jpeg": array_to_compressed_msg(image, "jpeg", quality=90),
        }
        wait_for(
            lambda: all(p.get_subscription_count() for p in pubs.values()),
            30,
            "the node to subscribe to the probe's frames",
            SystemExit,
        )

        # the network alone, on the same frame, same process, same settings; interleaved
        # with the node's frames so that both see the same machine load
        model, predictor, live = node.model, node.predictor, node._live()
        kwargs = {
            "tasks": node._tasks,
            "score_thresh": live["score_threshold"],
            "nms_iou": live["nms_iou"],
            "max_detections": live["max_detections"],
        }
        decoded = msg_to_array(messages["raw"])
        network: list[float] = []

        def network_time(i: int) -> None:
            """In a fresh thread, as the node's worker runs it: on a busy machine the
            scheduler treats a thread that slept differently from the polling main thread."""

            def run_once() -> None:
                t = time.perf_counter()
                predictor.predict([decoded], **kwargs)
                if i >= args.warmup:
                    network.append(time.perf_counter() - t)

            thread = threading.Thread(target=run_once)
            thread.start()
            thread.join()

        cams = {c.name: c for c in node.cameras}
        seg_outputs = {"segmentation", "segmentation/color", "debug_image"}
        stamp = 0

        def measure(timed_network: bool) -> tuple[dict, dict, dict]:
            nonlocal stamp
            latency = {camera: [] for camera in messages}
            own = {camera: [] for camera in messages}
            in_node = {camera: [] for camera in messages}  # conversion, messages, publish
            every = node.p("schedule.every.segmentation")
            for i in range(args.warmup + args.frames):
                if timed_network:
                    network_time(i)
                for camera, msg in messages.items():
                    stamp += 1
                    msg.header.stamp.sec, msg.header.frame_id = stamp, "bench"
                    due = cams[camera].frames % every == 0  # as the node's _schedule decides
                    needed["outputs"] = set(outputs) - (set() if due else seg_outputs)
                    one_frame(camera, msg, i, latency, own, in_node)
            return latency, own, in_node

        def one_frame(camera, msg, i, latency, own, in_node) -> None:
            before = node.stats.snapshot()["batches"]
            complete.clear()
            sent = time.perf_counter()
            pubs[camera].publish(msg)
            if not complete.wait(60):
                raise SystemExit(f"no outputs for {camera} frame {stamp} in 60 s")
            limit = time.monotonic() + 10
            while node.stats.snapshot()["batches"] == before:  # its stats come last
                if time.monotonic() > limit:
                    raise SystemExit("the node's batch statistics did not update")
                time.sleep(0.001)
            if i >= args.warmup:
                latency[camera].append(max(arrivals[camera, stamp].values()) - sent)
                inference, cycle = node.stats.snapshot()["batch_times"][before + 1]
                own[camera].append(inference)
                in_node[camera].append(cycle - inference)

        latency, own, in_node = measure(timed_network=True)
        schedule = None
        if args.schedule > 1:
            (ok,) = node.set_parameters(
                [Parameter("schedule.every.segmentation", value=args.schedule)]
            )
            if not ok.successful:
                raise SystemExit(f"--schedule {args.schedule}: {ok.reason}")
            lat_s, own_s, _ = measure(timed_network=False)
            both = {
                "every_frame": (latency, own),
                f"segmentation_every_{args.schedule}": (lat_s, own_s),
            }
            schedule = {
                name: {
                    camera: {"end_to_end_ms": stats_ms(lat[camera]),
                             "inference_in_node_ms": stats_ms(inf[camera])}
                    for camera in messages
                }
                for name, (lat, inf) in both.items()
            }  # fmt: skip
            mean = [
                statistics.fmean(v for c in messages for v in inf[c]) for _, inf in both.values()
            ]
            schedule["inference_saving_pct"] = round(100 * (1 - mean[1] / mean[0]), 1)
        results = {}
        for camera in messages:
            results[camera] = {
                "end_to_end_ms": stats_ms(latency[camera]),
                "inference_in_node_ms": stats_ms(own[camera]),
                "overhead_vs_network_ms": stats_ms(
                    [lat - statistics.median(network) for lat in latency[camera]]
                ),
                "overhead_vs_own_inference_ms": stats_ms(
                    [lat - inf for lat, inf in zip(latency[camera], own[camera])]
                ),
                "in_node_besides_inference_ms": stats_ms(in_node[camera]),
            }
        import torch

        return {
            "image": "640x480",
            "checkpoint": f"{ckpt.name} ({origin})",
            "input_size": list(model.cfg.input_size),
            "device": node.device,
            "backend": node.backend_spec,
            "torch_threads": torch.get_num_threads(),
            "outputs": list(outputs),
            "frames": args.frames,
            "probe": "deserializes" if args.deserialize else "serialized (raw=True)",
            "mean_detections": round(statistics.fmean(detections), 1) if detections else 0,
            "configure_s": round(configure_s, 2),
            "network_ms": stats_ms(network),
            "transports": results,
            "schedule": schedule,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, torch {torch.__version__}",
        }
    finally:
        ros.close()


def markdown(r: dict) -> str:
    net = r["network_ms"]
    lines = [
        f"Perception node at {r['image']}, {r['checkpoint']}, input {r['input_size']}, "
        f"{r['device']} {r['backend']}, {r['torch_threads']} torch threads, "
        f"{r['frames']} frames, outputs: {', '.join(r['outputs'])}, {r['mean_detections']} "
        f"boxes a frame; the probe takes them {r['probe']}.",
        "",
        "| input | end-to-end median (p90) ms | network alone median ms "
        "| in-node inference median ms | overhead vs network median ms "
        "| overhead vs own inference median (p90) ms | of it in the node's worker median ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for camera, t in r["transports"].items():
        kind = "sensor_msgs/Image rgb8" if camera == "raw" else "CompressedImage JPEG"
        e2e, own = t["end_to_end_ms"], t["overhead_vs_own_inference_ms"]
        lines.append(
            f"| {kind} | {e2e['median']} ({e2e['p90']}) | {net['median']} "
            f"| {t['inference_in_node_ms']['median']} | {t['overhead_vs_network_ms']['median']} "
            f"| {own['median']} ({own['p90']}) | {t['in_node_besides_inference_ms']['median']} |"
        )
    sched = r.get("schedule")
    if sched:
        every, scheduled = (k for k in sched if k != "inference_saving_pct")
        lines += ["", "| in-node inference median ms | " + " | ".join(r["transports"]) + " |",
                  "| --- |" + " --- |" * len(r["transports"])]  # fmt: skip
        for name in (every, scheduled):
            cells = " | ".join(
                str(t["inference_in_node_ms"]["median"]) for t in sched[name].values()
            )
            lines.append(f"| {name.replace('_', ' ')} | {cells} |")
        lines.append(f"\nPer-task scheduling saves {sched['inference_saving_pct']} % of the "
                     "in-node inference time (mean over both inputs).")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="default: the demo model, else random mtl b0")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--backend", default="eager", help="the node's backend spec, e.g. bf16+channels_last"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: default")
    parser.add_argument(
        "--score-threshold",
        type=float,
        help="default: the node's 0.3; 0.05 with random weights, which score everything low",
    )
    parser.add_argument("--max-detections", type=int, default=100)
    parser.add_argument("--visuals", action="store_true", help="also colour map + debug image")
    parser.add_argument(
        "--deserialize",
        action="store_true",
        help="the probe deserializes every output before it notes the arrival",
    )
    parser.add_argument(
        "--schedule",
        type=int,
        default=0,
        metavar="N",
        help="also time the frames again with schedule.every.segmentation N (e.g. 2)",
    )
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
