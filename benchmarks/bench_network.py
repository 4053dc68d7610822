"""Network cost per backbone and size, one network vs three, and the inference backends.

Latency and throughput per backbone and size, the multi-task network vs the three single-task
ones, and each inference backend vs eager FP32. Prints Markdown; writes JSON + Markdown to --out.

    python benchmarks/bench_network.py                      # everything (long on a CPU)
    python benchmarks/bench_network.py --quick              # B0 @512 only, < 2 min
    python benchmarks/bench_network.py --backbones b2 --sizes 512x512 --sections ratio

Timings are medians of calls interleaved round-robin between the things compared (so that
load from other processes falls on all of them alike), after warm-up calls. The network
is timed from normalised input to raw outputs (no letterbox, no decoding); sizes are camera
W x H, fed at the letterboxed shape (H and W rounded up to multiples of 32).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from machine import cpu_name

from pvt_mtl_ros.inference.backends import (
    BackendSpec,
    Predictor,
    cpu_has_bf16,
    make_backend,
    resolve,
)
from pvt_mtl_ros.model import build_model, load_checkpoint, preset
from pvt_mtl_ros.model.info import summarize
from pvt_mtl_ros.model.multitask import flatten
from pvt_mtl_ros.sim.calibration import calibration_frames

# short name -> the multi-task preset (the rivals are multi-task presets of their own)
BACKBONES = {
    "b0": "mtl_pvt_v2_b0",
    "b1": "mtl_pvt_v2_b1",
    "b2": "mtl_pvt_v2_b2",
    "swinmtl": "swinmtl_tiny",
    "hydranet": "hydranet_regnety_032",
}
SIZES = ("512x512", "640x480", "1280x720")
SECTIONS = ("peak", "models", "ratio", "backends", "decode")
CPU_BACKENDS = (
    "eager",
    "channels_last",
    "bf16",
    "bf16+channels_last",
    "onnxruntime",
    "onnxruntime+int8",
    "openvino",
    "openvino+bf16",
    "openvino+int8+bf16",
    "compile",
    "compile+bf16",
)
CUDA_BACKENDS = ("eager", "fp16", "bf16", "fp16+cuda_graph", "compile+fp16", "onnxruntime")


# -- measuring ---------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """ms per call of each function; rounds go through all functions in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": ordered[min(len(ms) - 1, int(0.9 * len(ms)))],
        "min_ms": ordered[0],
        "n": len(ms),
    }


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """Achieved GFLOP/s of a large square matmul (best call): the ceiling the network is
    measured against. main() takes the better of a measurement at the start and the end."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_interleaved({"mm": lambda: a @ b}, repeats, 2, device)["mm"]
    return 2 * n**3 / (min(ms) / 1e3) / 1e9


_TORCH_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' (camera W x H) -> the letterboxed network input (H, W), multiples of 32."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h + (-h % 32), w + (-w % 32)


# -- machine ----------------------------------------------------------------------------------


def machine(device: torch.device, threads: int) -> dict:
    import timm
    import torchvision

    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_bf16(),
        "device": str(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    for mod in ("onnx", "onnxruntime", "onnxscript", "openvino", "torch_tensorrt"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


# -- models -----------------------------------------------------------------------------------


def build(name: str, device: torch.device, neck_channels: int | None, num_convs: int | None):
    """A preset with random weights, optionally with other head widths (what-if runs)."""
    cfg = preset(name)
    if neck_channels:
        cfg = cfg.replace(neck_channels=neck_channels)
    if num_convs and cfg.detection is not None:
        cfg.detection.num_convs = num_convs
    torch.manual_seed(0)
    return build_model(cfg).to(device).eval()


def backend_for(model, spec):
    """make_backend, int8 calibrated on simulator frames of the model's input size (what the
    node calibrates on)."""
    runs = resolve(spec, model.mean.device)
    if not runs.int8:
        return make_backend(model, runs)
    return make_backend(model, runs, calibration=calibration_frames(*model.cfg.input_size))


def network_fn(model, spec: str, x: torch.Tensor):
    """A no-argument callable running the network (all heads) through a backend."""
    backend = backend_for(model, spec)
    return lambda: backend(x)


def section_models(args, device) -> list[dict]:
    """Per preset and size: params/FLOPs per part, batch-1 latency, N-camera throughput."""
    rows = []
    for key in args.backbones:
        name = BACKBONES.get(key, key)
        model = build(name, device, args.neck_channels, args.num_convs)
        for size_text in args.sizes:
            size = parse_size(size_text)
            info = summarize(model.cpu(), size)
            model.to(device)
            x1 = torch.randn(1, 3, *size, device=device)
            xn = torch.randn(args.cameras, 3, *size, device=device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fns = {
                    "b1": network_fn(model, args.model_backend, x1),
                    "bn": network_fn(model, args.model_backend, xn),
                }
            t = time_interleaved(fns, args.repeats, args.warmup, device)
            b1, bn = summary(t["b1"]), summary(t["bn"])
            rows.append(
                {
                    "model": name,
                    "camera": size_text,
                    "input": list(size),
                    "backend": args.model_backend,
                    "params": info["params"],
                    "params_total": info["params_total"],
                    "flops": info["flops"],
                    "flops_total": info["flops_total"],
                    "batch1": b1,
                    "cameras": args.cameras,
                    "batchN": bn,
                    "fps_batch1": 1e3 / b1["median_ms"],
                    "images_per_s_batchN": args.cameras * 1e3 / bn["median_ms"],
                    "achieved_gflops": info["flops_total"] / b1["median_ms"] / 1e6,
                }
            )
            print(f"  models: {name} @{size_text} {b1['median_ms']:.1f} ms", file=sys.stderr)
        del model
        gc.collect()
    return rows


def section_ratio(args, device) -> list[dict]:
    """MTL vs cls + det + seg single-task nets run one after the other, same process."""
    rows = []
    for key in args.backbones:
        backbone = preset(BACKBONES.get(key, key)).backbone
        if not backbone.startswith("pvt_v2"):
            continue  # the rivals have no single-task twins among the presets
        names = {k: f"{k}_{backbone}" for k in ("mtl", "cls", "det", "seg")}
        models = {k: build(n, device, args.neck_channels, args.num_convs) for k, n in names.items()}
        for size_text in args.sizes:
            size = parse_size(size_text)
            x = torch.randn(1, 3, *size, device=device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = {k: network_fn(m, args.model_backend, x) for k, m in models.items()}

            def singles(run=run):
                run["cls"]()
                run["det"]()
                run["seg"]()

            t = time_interleaved({"mtl": run["mtl"], "singles": singles}, *_rw(args), device)
            flops = {k: summarize(m.cpu(), size)["flops_total"] for k, m in models.items()}
            for m in models.values():
                m.to(device)
            mtl, seq = summary(t["mtl"]), summary(t["singles"])
            ratio = mtl["median_ms"] / seq["median_ms"]
            # of the least disturbed calls: on a shared machine, load comes in bursts
            ratio_min = mtl["min_ms"] / seq["min_ms"]
            flop_ratio = flops["mtl"] / (flops["cls"] + flops["det"] + flops["seg"])
            rows.append(
                {
                    "backbone": backbone,
                    "camera": size_text,
                    "input": list(size),
                    "backend": args.model_backend,
                    "mtl": mtl,
                    "singles": seq,
                    "ratio": ratio,
                    "ratio_min": ratio_min,
                    "flops": flops,
                    "flop_ratio": flop_ratio,
                    "neck_channels": models["mtl"].cfg.neck_channels,
                    "num_convs": models["mtl"].cfg.detection.num_convs,
                }
            )
            print(f"  ratio: {backbone} @{size_text} {ratio:.3f}", file=sys.stderr)
        del models
        gc.collect()
    return rows


def _rw(args) -> tuple[int, int]:
    return args.repeats, args.warmup


def section_backends(args, device) -> list[dict]:
    """Each backend vs eager FP32 on one model and size at batch 1 (default MTL B0 @512, or
    --checkpoint's trained model). With --predict, each call is a whole camera frame through
    `Predictor.predict` (letterbox, network, decoding: boxes and the class-id mask), for
    --tasks (default all): what the node pays per frame, a skipped head included."""
    size = parse_size(args.backend_size)
    checkpoint = getattr(args, "checkpoint", None)  # gpu_check passes a namespace without it
    if checkpoint:
        model = load_checkpoint(checkpoint, map_location=device).eval()
        model.cfg.input_size = size
    else:
        model = build(args.backend_model, device, args.neck_channels, args.num_convs)
    flops = summarize(model.cpu(), size)["flops_total"]
    model.to(device)
    x = torch.randn(1, 3, *size, device=device)
    frame = calibration_frames(*size, count=1)[0]  # a simulator frame of the camera's size
    tasks = tuple(getattr(args, "tasks", None) or ()) or None
    whole_frames = getattr(args, "predict", False)
    with torch.inference_mode():
        ref = model.forward_flat(x)
        ref_mask = Predictor(model, "eager").predict(frame)[0].mask
    fns, built, flops_of = {}, {}, {}
    for text in args.backends:
        spec_text, path_model, path_x = text, model, x
        if "@" in text:  # SPEC@WxH: this path letterboxes the camera into a smaller input
            spec_text, _, input_text = text.partition("@")
            path_model = copy.deepcopy(model)
            path_model.cfg.input_size = parse_size(input_text)
            path_x = torch.randn(1, 3, *path_model.cfg.input_size, device=device)
            flops_of[text] = summarize(path_model.cpu(), path_model.cfg.input_size)["flops_total"]
            path_model.to(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spec = resolve(spec_text, device)
            start = time.perf_counter()
            try:
                backend = backend_for(path_model, spec)
                backend(path_x)  # export / compile / capture happen here
            except Exception as err:  # report and go on: one broken path must not end the run
                built[text] = {"error": f"{type(err).__name__}: {err}"[:300]}
                print(f"  backends: {text} failed: {err}", file=sys.stderr)
                continue
            setup = time.perf_counter() - start
        # the raw outputs the backend returns (openvino+split: no segmentation logits); at
        # another input size only the mask (at the camera's resolution) compares
        err = None
        if path_x is x:
            out = flatten(backend(x))
            err = max((a.float() - b.float()).abs().max().item() for a, b in zip(out, ref))
        predictor = Predictor(path_model, backend)
        with torch.inference_mode():
            mask = predictor.predict(frame)[0].mask
        built[text] = {
            "runs_as": str(spec),
            "input": "x".join(str(v) for v in path_model.cfg.input_size),
            "setup_s": setup,
            "max_abs_diff": err,
            "mask_agreement": float((mask == ref_mask).mean()),
            "warnings": [str(w.message) for w in caught if "backend" in str(w.message)],
        }
        if whole_frames:
            fns[text] = lambda p=predictor: p.predict(frame, tasks=tasks)
        else:
            fns[text] = lambda b=backend, v=path_x: b(v, tasks=tasks)
        print(f"  backends: {text} ready in {setup:.1f} s", file=sys.stderr)
    with torch.inference_mode():
        t = time_interleaved(fns, *_rw(args), device) if fns else {}
    first = args.backends[0]
    base = statistics.median(t[first]) if first in t else None
    rows = []
    for text in args.backends:
        row = {
            "backend": text,
            "model": checkpoint or args.backend_model,
            "camera": args.backend_size,
            "timed": "Predictor.predict (frame -> results)" if whole_frames else "network",
            "tasks": list(tasks or model.tasks),
            "baseline": first,
        }
        row.update(built[text])
        if text in t:
            row.update(summary(t[text]))
            row["speedup_vs_first"] = base / row["median_ms"] if base else None
            row["achieved_gflops"] = flops_of.get(text, flops) / row["median_ms"] / 1e6
        rows.append(row)
    return rows


def section_decode(args, device) -> list[dict]:
    """The detection post-processing alone (score threshold, top-k, box decoding, NMS) on
    one frame's raw outputs, from none to every candidate passing the threshold: how far
    the weights can move a latency (the network before it costs the same whatever they are;
    the study's --latency times models without a checkpoint from their initial weights)."""
    name = BACKBONES.get(args.backbones[0], args.backbones[0])
    model = build(name, device, args.neck_channels, args.num_convs)
    head = model.heads["detection"]
    size = parse_size(args.sizes[0])
    out = model(torch.randn(1, 3, *size, device=device), tasks=("detection",))["detection"]
    cases = {"no candidate": 1.01, "initial weights": None, "every candidate": -1.0}
    fns = {k: (lambda t=t: head.decode(out, [size], score_thresh=t)) for k, t in cases.items()}
    t = time_interleaved(fns, args.repeats, args.warmup, device)
    scores = head.candidate_scores(out, 0)
    rows = []
    for case, thresh in cases.items():
        thresh = head.score_thresh if thresh is None else thresh
        passing = int((scores > thresh).sum())
        rows.append(
            {
                "model": name,
                "camera": args.sizes[0],
                "case": case,
                "score_thresh": thresh,
                "into_nms": min(passing, head.topk_candidates),
                "boxes_out": len(fns[case]()[0]["boxes"]),
                **summary(t[case]),
            }
        )
    return rows


# -- report -----------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Network benchmark ({m['device']}, {report['threads']} threads)",
        "",
        f"`{report['command']}`",
        "",
        f"Machine: {m.get('gpu') or m['cpu']}, {m['cpu_count']} CPUs, {m['platform']}; "
        f"torch {m['torch']}, torchvision {m['torchvision']}, timm {m['timm']}, "
        f"onnxruntime {m['onnxruntime']}, openvino {m.get('openvino')}, onnx {m['onnx']}; load "
        f"average at start "
        f"{m['load_avg']}; {m['date']}.",
        "",
    ]
    if "peak" in report:
        p = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in report["peak"].items())
        lines += [f"Measured matmul peak: {p}.", ""]
    if report.get("models"):
        peak = report.get("peak", {}).get("fp32")
        n = report["models"][0]["cameras"]
        lines += [
            "## Latency, throughput, parameters and FLOPs",
            "",
            f"| model | camera | params M (bb/neck/cls/det/seg) | GFLOPs (bb/neck/cls/det/seg) "
            f"| batch 1 ms (p90) | fps | {n} cams img/s | GFLOP/s | % of fp32 peak |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["models"]:
            parts = ("backbone", "neck", "classification", "detection", "segmentation")
            pm = "/".join(f"{r['params'][k] / 1e6:.1f}" for k in parts)
            gf = "/".join(f"{r['flops'][k] / 1e9:.1f}" for k in parts)
            pct = f"{100 * r['achieved_gflops'] / peak:.0f}%" if peak else "-"
            lines.append(
                f"| {r['model']} | {r['camera']} | {r['params_total'] / 1e6:.1f} ({pm}) "
                f"| {r['flops_total'] / 1e9:.1f} ({gf}) | {r['batch1']['median_ms']:.1f} "
                f"({r['batch1']['p90_ms']:.1f}) | {r['fps_batch1']:.1f} "
                f"| {r['images_per_s_batchN']:.1f} | {r['achieved_gflops']:.0f} | {pct} |"
            )
        lines.append("")
    if report.get("ratio"):
        lines += [
            "## One multi-task network vs three single-task networks (batch 1)",
            "",
            "| backbone | camera | neck ch / det convs | MTL ms | cls+det+seg ms | ratio "
            "| ratio of min | FLOP ratio | target <= 0.40 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["ratio"]:
            ok = "met" if r["ratio"] <= 0.40 else f"missed by {r['ratio'] - 0.40:.2f}"
            lines.append(
                f"| {r['backbone']} | {r['camera']} | {r['neck_channels']} / {r['num_convs']} "
                f"| {r['mtl']['median_ms']:.1f} | {r['singles']['median_ms']:.1f} "
                f"| {r['ratio']:.3f} | {r['ratio_min']:.3f} | {r['flop_ratio']:.3f} | {ok} |"
            )
        lines.append("")
    if report.get("backends"):
        r0 = report["backends"][0]
        peaks = report.get("peak") or {}
        lines += [
            f"## Backends: {r0['model']} @{r0['camera']}, batch 1, timed: {r0['timed']}, "
            f"tasks {'+'.join(r0['tasks'])}",
            "",
            f"| backend | runs as | median ms (p90, min) | speed-up vs {r0['baseline']} | GFLOP/s "
            "| % of peak (same dtype) | max abs diff | mask = eager | setup s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["backends"]:
            if "median_ms" not in r:
                lines.append(f"| {r['backend']} | failed: {r.get('error', '')[:80]} ||||||||")
                continue
            sp = r.get("speedup_vs_first")
            dtype = BackendSpec.parse(r["runs_as"]).dtype
            peak = peaks.get(dtype)
            pct = f"{100 * r['achieved_gflops'] / peak:.0f}%" if peak else "-"
            diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
            lines.append(
                f"| {r['backend']} | {r['runs_as']} | {r['median_ms']:.1f} ({r['p90_ms']:.1f}, "
                f"{r['min_ms']:.1f}) | {f'{sp:.2f}x' if sp else '-'} "
                f"| {r['achieved_gflops']:.0f} | {pct} | {diff} "
                f"| {100 * r['mask_agreement']:.2f}% | {r['setup_s']:.1f} |"
            )
        lines.append("")
    if report.get("decode"):
        r0 = report["decode"][0]
        lines += [
            f"## Detection post-processing: {r0['model']} @{r0['camera']}, one frame",
            "",
            "| case | score threshold | boxes into NMS | boxes out | median ms (p90) |",
            "|---|---|---|---|---|",
        ]
        for r in report["decode"]:
            lines.append(
                f"| {r['case']} | {r['score_thresh']:g} | {r['into_nms']} | {r['boxes_out']} "
                f"| {r['median_ms']:.2f} ({r['p90_ms']:.2f}) |"
            )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (and ORT's)")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), help=", ".join(BACKBONES))
    p.add_argument("--sizes", nargs="+", default=list(SIZES), help="camera W x H")
    p.add_argument("--cameras", type=int, default=4, help="batch size for the N-camera run")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per thing compared")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--model-backend", default="eager", help="backend for models/ratio")
    p.add_argument(
        "--backends",
        nargs="+",
        help="backend specs (default: all for the device); SPEC@WxH runs that path at a smaller "
        "network input (the camera letterboxed into W x H, masks still at the camera's size)",
    )
    p.add_argument("--backend-model", default="mtl_pvt_v2_b0")
    p.add_argument("--backend-size", default="512x512", help="camera W x H for backends")
    p.add_argument(
        "--checkpoint", help="backends: this trained model (e.g. the shipped one) at --backend-size"
    )
    p.add_argument(
        "--predict",
        action="store_true",
        help="backends: time whole frames through Predictor.predict, not the network alone",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=("classification", "detection", "segmentation"),
        help="backends: run only these heads (a skipped head, as per-task scheduling does)",
    )
    p.add_argument("--neck-channels", type=int, help="what-if: FPN width for every preset")
    p.add_argument("--num-convs", type=int, help="what-if: FCOS tower depth")
    p.add_argument(
        "--quick", action="store_true", help="B0 @512, 3 repeats, no torch.compile (< 2 min)"
    )
    p.add_argument("--out", default="outputs/bench", help="folder for the JSON and Markdown")
    p.add_argument("--tag", default="network", help="file name stem in --out")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.backends is None:
        args.backends = list(CUDA_BACKENDS if cuda else CPU_BACKENDS)
    if args.quick:
        args.backbones, args.sizes, args.cameras = ["b0"], ["512x512"], 2
        args.repeats, args.warmup = min(args.repeats, 3), 1
        if not cuda:  # export and compile take minutes on two cores
            args.backends = ["eager", "bf16+channels_last", "onnxruntime", "onnxruntime+int8"]
    for spec in [*args.backends, args.model_backend]:
        spec, _, size = spec.partition("@")
        if spec != "auto":
            BackendSpec.parse(spec)  # fail early on a typo
        if size:
            parse_size(size)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True
    report = {
        "command": " ".join(["python", "benchmarks/bench_network.py", *(argv or sys.argv[1:])]),
        "threads": torch.get_num_threads(),
        "machine": machine(device, torch.get_num_threads()),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    start = time.perf_counter()
    if "peak" in args.sections:
        report["peak"] = {"fp32": matmul_peak(device, torch.float32)}
        if device.type == "cuda" or cpu_has_bf16():
            report["peak"]["bf16"] = matmul_peak(device, torch.bfloat16)
        if device.type == "cuda":
            report["peak"]["fp16"] = matmul_peak(device, torch.float16)
    with torch.inference_mode():
        if "models" in args.sections:
            report["models"] = section_models(args, device)
        if "ratio" in args.sections:
            report["ratio"] = section_ratio(args, device)
        if "decode" in args.sections:
            report["decode"] = section_decode(args, device)
    if "backends" in args.sections:
        report["backends"] = section_backends(args, device)
    if "peak" in report:  # again at the end: the better figure is the less disturbed one
        for name in report["peak"]:
            again = matmul_peak(device, getattr(torch, _TORCH_DTYPE[name]))
            report["peak"][name] = max(report["peak"][name], again)
    report["seconds"] = time.perf_counter() - start
    text = markdown(report)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.tag}_{device.type}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (out / f"{stem}.md").write_text(text + "\n")
    print(f"wrote {out / stem}.json and .md ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
