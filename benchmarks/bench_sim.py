"""Simulator throughput on one CPU core: frames per second at a given size (default 640x480).

    python benchmarks/bench_sim.py [--frames 300] [--width 640 --height 480]

Prints one JSON object and one Markdown table row. OpenCV runs single-threaded and the
process is pinned to one core where the OS allows it; torch is not involved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from machine import cpu_name

from pvt_mtl_ros.sim import SimConfig, render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    args = ap.parse_args()

    cv2.setNumThreads(1)
    pinned = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        pinned = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {pinned})
    cfg = SimConfig(width=args.width, height=args.height)
    for seed in range(3):  # warm-up: imports, noise tables
        render(args.first_seed + seed, cfg)

    per_scene = defaultdict(list)
    times = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for seed in range(args.first_seed, args.first_seed + args.frames):
        t = time.perf_counter()
        frame = render(seed, cfg)
        dt = time.perf_counter() - t
        times.append(dt)
        per_scene[frame.scene].append(dt)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu_start  # less sensitive to other load on the machine

    fps = args.frames / total
    result = {
        "benchmark": "sim_render",
        "width": args.width,
        "height": args.height,
        "frames": args.frames,
        "seconds": round(total, 3),
        "frames_per_s": round(fps, 1),
        "cpu_seconds": round(cpu, 3),
        "frames_per_cpu_s": round(args.frames / cpu, 1),
        "ms_per_frame": {
            "mean": round(1000 * float(np.mean(times)), 2),
            "p50": round(1000 * float(np.percentile(times, 50)), 2),
            "p95": round(1000 * float(np.percentile(times, 95)), 2),
        },
        "ms_per_scene": {
            k: round(1000 * float(np.mean(v)), 2) for k, v in sorted(per_scene.items())
        },
        "machine": {
            "cpu": cpu_name(),
            "cpus_visible": os.cpu_count(),
            "pinned_core": pinned,
            "opencv_threads": cv2.getNumThreads(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "platform": platform.platform(),
        },
    }
    print(json.dumps(result, indent=2))
    print(
        f"| sim render {args.width}x{args.height} | {fps:.1f} frames/s "
        f"({result['frames_per_cpu_s']} per CPU-second) | {result['ms_per_frame']['p95']} ms p95 | "
        f"1 core of {result['machine']['cpu']} |"
    )


if __name__ == "__main__":
    main()
