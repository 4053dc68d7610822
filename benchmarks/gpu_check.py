"""One prepared run for a GPU machine (under 5 minutes): the network benchmarks on CUDA, the
8-camera serving simulation and the backend parity tests. Writes JSON + Markdown to --out.

    python benchmarks/gpu_check.py --out "${OUT:-outputs/gpu_check}"

Steps in this order, each skipped (and said so) when the time budget is spent:
  1. backends on MTL B2 @512, batch 1: frames/s per path (target >= 300 on an H100);
  2. eight 640x480 cameras at 30 Hz into the whole predictor (pinned copies, letterbox on the
     GPU, decoding): per-frame latency from arrival to results (target p99 <= 50 ms);
  3. pytest -k parity (CPU and CUDA backends against eager FP32);
  4. latency / throughput / FLOP/s per backbone at 512x512 and 640x480, and the MTL-vs-three
     ratio at 512x512 (fp16 autocast);
  5. with --study-seconds S: the GPU version of the H1 study for S seconds (a second call,
     `--budget 0 --study-seconds 540`, fits a 10-minute window).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_network as bench  # noqa: E402

from pvt_mtl_ros.inference.backends import Predictor, tensorrt_available  # noqa: E402

PEAK_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
GPU_BACKENDS = [
    "eager",
    "fp16",
    "bf16",
    "fp16+channels_last",
    "fp16+cuda_graph",
    "fp16+channels_last+cuda_graph",
]


def camera_simulation(
    preset: str,
    backend: str,
    cameras: int = 8,
    hz: float = 30.0,
    seconds: float = 10.0,
    size: tuple[int, int] = (480, 640),
    stagger: bool = False,
    device: str = "cuda",
) -> dict:
    """Frames arrive on a fixed clock (all cameras together, or spread over the period);
    each serving call takes every frame that has arrived (at most `cameras`). Latency is
    arrival -> results as numpy, so it includes queueing when the GPU falls behind."""
    model = bench.build(preset, torch.device(device), None, None)
    model.cfg.input_size = size
    predictor = Predictor(model, backend)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(cameras)]
    period = 1.0 / hz
    offsets = [i * period / cameras if stagger else 0.0 for i in range(cameras)]
    for n in range(1, cameras + 1) if stagger else (cameras,):  # capture / tune every batch
        for _ in range(3):
            predictor.predict(frames[:n])
    bench.sync(torch.device(device))
    ticks = int(seconds * hz)
    arrivals = sorted(
        (k * period + off, cam) for k in range(ticks) for cam, off in enumerate(offsets)
    )
    start = time.perf_counter() + 0.05
    latencies, batches, i = [], [], 0
    while i < len(arrivals):
        now = time.perf_counter() - start
        if arrivals[i][0] > now:
            time.sleep(max(0.0, arrivals[i][0] - now))
            continue
        j = i
        while j < len(arrivals) and arrivals[j][0] <= now and j - i < cameras:
            j += 1
        batch = arrivals[i:j]
        predictor.predict([frames[cam] for _, cam in batch])
        done = time.perf_counter() - start
        latencies += [(done - t) * 1e3 for t, _ in batch]
        batches.append(len(batch))
        i = j
    lat = np.array(latencies)
    return {
        "preset": preset,
        "backend": str(predictor.spec),
        "cameras": cameras,
        "hz": hz,
        "seconds": seconds,
        "input": list(size),
        "stagger": stagger,
        "frames": len(lat),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "mean_batch": float(np.mean(batches)),
        "served_fps": len(lat) / (time.perf_counter() - start),
    }


def run_parity(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-k", "parity", "test/test_backends.py"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 10)
        )
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        return {"rc": proc.returncode, "tail": tail, "seconds": time.perf_counter() - start}
    except subprocess.TimeoutExpired:
        return {"rc": None, "tail": [f"timed out after {timeout:.0f} s"], "seconds": timeout}


def run_study(seconds: float, out: Path) -> dict:
    """The GPU version of the H1 study (training/configs/study_h1_gpu.yaml) for ``seconds``:
    no run starts after ~70 % of it, a cut-short grid resumes on the next call; the per-run
    JSONs and the table go to ``out``/h1_gpu."""
    results = out / "h1_gpu"
    cfg = "training/configs/study_h1_gpu.yaml"
    cmd = [sys.executable, "-m", "training.experiments", "--config", cfg]
    cmd += ["--results-dir", str(results.resolve()), "--time-limit", f"{0.7 * seconds:.0f}"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-40:]
    except subprocess.TimeoutExpired:
        rc, tail = None, [f"timed out after {seconds:.0f} s (finished runs are kept)"]
    table = [sys.executable, "-m", "training.experiments", "--config", cfg, "--table"]
    table += ["--results-dir", str(results.resolve())]
    if list(results.glob("*.json")):
        got = subprocess.run(table, cwd=ROOT, capture_output=True, text=True, timeout=120)
        tail = got.stdout.strip().splitlines() or tail
    return {"rc": rc, "tail": tail, "seconds": time.perf_counter() - start}


def markdown(report: dict) -> str:
    lines = [bench.markdown(report["bench"]), "## Cameras", ""]
    for c in report.get("cameras", []):
        if "error" in c:
            lines.append(f"- failed: {c['error']}")
            continue
        ok = "met" if c["p99_ms"] <= 50 else "missed"
        lines.append(
            f"- {c['cameras']} x {c['input'][1]}x{c['input'][0]} @ {c['hz']:.0f} Hz, "
            f"{c['preset']}, {c['backend']}{', staggered' if c['stagger'] else ''}: "
            f"p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms (target <= 50: {ok}), "
            f"max {c['max_ms']:.1f} ms, {c['served_fps']:.0f} frames/s served, "
            f"mean batch {c['mean_batch']:.1f}"
        )
    b2 = [r for r in report["bench"].get("backends", []) if "median_ms" in r]
    if b2:
        best = min(b2, key=lambda r: r["median_ms"])
        fps = 1e3 / best["median_ms"]
        lines += [
            "",
            f"Fastest MTL B2 @512 batch-1 path: {best['backend']}, {fps:.0f} frames/s "
            f"(target >= 300: {'met' if fps >= 300 else 'missed'}).",
        ]
    p = report.get("parity")
    if p:
        lines += ["", "## Parity tests (pytest -k parity)", "", "```", *p["tail"], "```"]
    if report.get("study"):
        st = report["study"]
        lines += ["", f"## H1 study on the GPU (rc {st['rc']}, {st['seconds']:.0f} s)", ""]
        lines += st["tail"]
    for s in report.get("skipped", []):
        lines.append(f"- skipped: {s}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "outputs/gpu_check")
    p.add_argument("--budget", type=float, default=280.0, help="seconds for everything")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--with-compile", action="store_true", help="also time torch.compile")
    p.add_argument("--stagger", action="store_true", help="cameras spread over the period")
    p.add_argument(
        "--study-seconds",
        type=float,
        default=0.0,
        help="then run the GPU H1 study for this long (study_h1_gpu.yaml; 0: not at all)",
    )
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 2
    start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.set_num_threads(min(16, os.cpu_count() or 1))  # FLOP counting runs on the CPU
    backends = list(GPU_BACKENDS)
    if tensorrt_available():
        backends.append("tensorrt+fp16")
    if args.with_compile:
        backends.append("compile+fp16")
    settings = SimpleNamespace(
        device="cuda",
        threads=torch.get_num_threads(),
        backbones=["b0", "b1", "b2", "swinmtl", "hydranet"],
        sizes=["512x512", "640x480"],
        cameras=8,
        repeats=args.repeats,
        warmup=3,
        model_backend="fp16",
        backends=backends,
        backend_model="mtl_pvt_v2_b2",
        backend_size="512x512",
        neck_channels=None,
        num_convs=None,
    )
    rep = {
        "command": "python benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "machine": bench.machine(device, torch.get_num_threads()),
        "settings": {k: v for k, v in vars(settings).items()},
    }
    report = {"bench": rep, "skipped": []}

    def step(name: str, need: float, fn):
        if left() < need:
            report["skipped"].append(f"{name} ({left():.0f} s left, needs ~{need:.0f})")
            return None
        t = time.perf_counter()
        try:
            return fn()
        except Exception as err:  # one failing step must not lose the others' figures
            traceback.print_exc()
            return [{"error": f"{type(err).__name__}: {err}"[:300]}]
        finally:
            print(f"gpu_check: {name} took {time.perf_counter() - t:.0f} s", file=sys.stderr)

    rep["peak"] = step(
        "matmul peak",
        5,
        lambda: {k: bench.matmul_peak(device, getattr(torch, v)) for k, v in PEAK_DTYPES.items()},
    )
    rep["backends"] = step("backends", 40, lambda: bench.section_backends(settings, device))
    cams = []
    for backend in ("fp16+channels_last+cuda_graph", "fp16"):
        got = step(
            f"cameras ({backend})",
            75,
            lambda b=backend: camera_simulation("mtl_pvt_v2_b2", b, stagger=args.stagger),
        )
        if got:
            cams += got if isinstance(got, list) else [got]
    report["cameras"] = cams
    gc.collect()
    torch.cuda.empty_cache()  # the parity tests run in a child process on the same GPU
    report["parity"] = step("parity tests", 100, lambda: run_parity(min(150, left() - 60)))
    settings.repeats = min(settings.repeats, 10)
    with torch.inference_mode():  # the broad tables last: they are the first to go
        rep["models"] = step("models", 40, lambda: bench.section_models(settings, device))
        settings.sizes = ["512x512"]
        rep["ratio"] = step("ratio", 15, lambda: bench.section_ratio(settings, device))
    for key in ("peak", "backends", "models", "ratio"):
        if isinstance(rep.get(key), list) and rep[key] and "error" in rep[key][0]:
            report["skipped"].append(f"{key}: {rep[key][0]['error']}")
            rep[key] = None
    rep = {k: v for k, v in rep.items() if v is not None}
    report["bench"] = rep
    if args.study_seconds > 0:
        gc.collect()
        torch.cuda.empty_cache()  # the study trains in a child process on the same GPU
        report["study"] = run_study(args.study_seconds, Path(args.out))
    report["seconds"] = time.perf_counter() - start
    text = markdown(report)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(text)
    print(f"gpu_check: wrote {out}/gpu_check.json and .md in {report['seconds']:.0f} s")
    if args.study_seconds > 0 and report["study"]["rc"] not in (0, None):
        return 1
    parity = report.get("parity")
    return 0 if parity is None or parity.get("rc") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
