r"""Evaluate a checkpoint on the config's ``data.val`` datasets; write JSON and Markdown.

    python -m training.evaluate --checkpoint runs/joint_cpu/checkpoint.pt \
        --config training/configs/joint_cpu.yaml [--output DIR] [--device cuda]

The model sees ORIGINAL images through ``predict`` (letterbox in, results mapped back),
so the numbers are those of the deployed path:

- detection: a COCO results json (contiguous labels mapped back with the dataset's
  ``contiguous_to_cat_id``, boxes in original pixels) scored by pycocotools' COCOeval: AP, AP50,
  AP75, APs, APm, APl;
- segmentation: mIoU, per-class IoU, pixel and mean accuracy from a confusion matrix over the
  whole split (255 = ignore);
- classification: top-1 / top-5;
- the model: parameters and FLOPs at the input size (``pvt-mtl-info``'s ``summarize``) and the
  latency of ``predict`` on one input-size image.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvt_mtl_ros.inference import predict
from pvt_mtl_ros.inference.backends import Predictor
from pvt_mtl_ros.metrics import (
    DetectionEvaluator,
    SceneEvaluator,
    SegmentationEvaluator,
    coco_evaluate,
)
from pvt_mtl_ros.metrics.serialize import json_safe
from pvt_mtl_ros.model import CheckpointError, MultiTaskNet, load_checkpoint
from pvt_mtl_ros.model.info import summarize
from training.config import TrainConfig, TrainConfigError, load_config
from training.data import Source, build_source
from training.logs import log, setup_console

DETECTION_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _plain_image(image: torch.Tensor) -> torch.Tensor:
    return image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else image


def _batches(source: Source, count: int, batch_size: int):
    for start in range(0, count, batch_size):
        items = [source.dataset[i] for i in source.indices[start : min(start + batch_size, count)]]
        yield [_plain_image(im) for im, _ in items], [t for _, t in items]


def evaluate_source(
    model: MultiTaskNet,
    source: Source,
    out_dir: Path,
    batch_size: int,
    max_images: int | None,
    score_thresh: float | None = None,
    min_box_height: float = 0.0,
) -> dict[str, Any]:
    """Metrics of one dataset for the tasks it labels and the model has."""
    tasks = tuple(t for t in source.tasks if t in model.tasks)
    count = len(source) if max_images is None else min(max_images, len(source))
    row: dict[str, Any] = {"tasks": list(tasks), "images": count}
    for task in tasks:
        head = getattr(model.cfg, task)
        if len(head.classes) != len(source.classes(task)):
            raise TrainConfigError(
                f"{source.where} ({source.name}) has {len(source.classes(task))} {task} classes "
                f"but the model's head has {len(head.classes)}"
            )
    detections: list[dict] = []  # COCO results of a dataset with a COCO json
    image_ids: list[int] = []
    # Datasets without a COCO json (the simulator) are scored from in-memory arrays.
    coco = getattr(source.dataset, "coco", None)
    boxes = (
        DetectionEvaluator(source.classes("detection"), min_box_height)
        if "detection" in tasks and coco is None
        else None
    )
    masks = (
        SegmentationEvaluator(source.classes("segmentation"), model.cfg.segmentation.ignore_index)
        if "segmentation" in tasks
        else None
    )
    scene = SceneEvaluator(topk=(1, 5)) if "classification" in tasks else None
    named: set[int] = set()  # top-1 classes seen: one for every frame means a dead classifier
    truth: collections.Counter[int] = collections.Counter()  # true classes: the prior's share
    kwargs = {"score_thresh": score_thresh} if score_thresh is not None else {}
    for images, targets in _batches(source, count, batch_size):
        results = predict(model, images, tasks=tasks, **kwargs)
        for result, target in zip(results, targets):
            if boxes is not None:
                boxes.update(
                    target["boxes"], target["labels"], result.boxes, result.scores, result.labels
                )
            elif "detection" in tasks:
                image_id = int(target["image_id"])
                image_ids.append(image_id)
                for box, score, label in zip(result.boxes, result.scores, result.labels):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    detections.append(
                        {
                            "image_id": image_id,
                            "category_id": int(source.dataset.contiguous_to_cat_id[int(label)]),
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score),
                        }
                    )
            if masks is not None:
                masks.update(result.mask, np.asarray(target["mask"]))
        if scene is not None:
            scores = np.stack([r.class_probs for r in results])
            labels = [int(t["label"]) for t in targets]
            scene.update(scores, np.array(labels))
            named.update(scores.argmax(axis=1).tolist())
            truth.update(labels)
    if boxes is not None:
        row["detection"] = boxes.compute(per_class=True)
        if min_box_height <= 0:
            row["detection"].pop("min_box_height")
    elif "detection" in tasks:
        path = out_dir / f"detections_{source.name}.json"
        path.write_text(json.dumps(detections))
        row["detection"] = coco_evaluate(coco, detections, image_ids=image_ids)
        row["detection"]["results_json"] = path.name
        row["detection"]["num_detections"] = len(detections)
    if masks is not None:
        m = masks.compute()
        row["segmentation"] = {k: m[k] for k in ("mIoU", "pixel_accuracy", "mean_accuracy", "IoU")}
    if scene is not None:
        row["classification"] = {k: v for k, v in scene.compute().items() if k != "frames"}
        row["classification"]["predicted_classes"] = len(named)
        # top-1 of always naming the split's most common class: a classifier no better has
        # learned nothing from the image
        row["classification"]["majority_top1"] = max(truth.values()) / sum(truth.values())
    return row


def latency_probe(model: MultiTaskNet, backend: str = "eager") -> tuple[Predictor, Any]:
    """The model behind ``backend`` and a function that times one ``predict`` (ms) of one
    random image of the model's input size, batch 1. The study's side-by-side re-measure
    interleaves several models' probes; ``measure_latency`` runs one."""
    h, w = model.cfg.input_size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    device = model.mean.device
    predictor = Predictor(model, backend)

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        predictor.predict([image])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) * 1000

    return predictor, once


def measure_latency(
    model: MultiTaskNet, runs: int, warmup: int, backend: str = "eager"
) -> dict[str, Any]:
    """``predict`` on one random image of the model's input size, batch 1, through the
    inference backend ``backend`` (a fallback, where the machine lacks it, is reported)."""
    device = model.mean.device
    predictor, once = latency_probe(model, backend)
    for _ in range(warmup):
        once()
    times = [once() for _ in range(runs)]
    return {
        "latency_ms": statistics.median(times) if times else float("nan"),
        "latency_ms_mean": statistics.fmean(times) if times else float("nan"),
        "latency_runs": len(times),
        "latency_backend": str(predictor.spec),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
    }


def evaluate_model(
    model: MultiTaskNet, cfg: TrainConfig, out_dir: Path, checkpoint: str = ""
) -> dict[str, Any]:
    """Every ``data.val`` dataset the model has a head for, plus size, FLOPs and latency."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device = model.mean.device
    info = summarize(model.to("cpu"), tuple(model.cfg.input_size))
    model.to(device).eval()
    report: dict[str, Any] = {
        "checkpoint": checkpoint,
        "model": {
            "name": info["name"],
            "backbone": info["backbone"],
            "neck": info["neck"],
            "tasks": info["tasks"],
            "input_size": info["input_size"],
            "params": info["params"],
            "params_total": info["params_total"],
            "flops": info["flops"],
            "flops_total": info["flops_total"],
            **measure_latency(
                model, cfg.eval.latency_runs, cfg.eval.latency_warmup, cfg.eval.latency_backend
            ),
        },
        "datasets": {},
    }
    for i, d in enumerate(cfg.data.val):
        source = build_source(d, f"data.val[{i}]", role="val")
        if not set(source.tasks) & set(model.tasks):
            log.info("skipping %s: the model has no head for %s", d.name, "+".join(source.tasks))
            continue
        t0 = time.perf_counter()
        report["datasets"][d.name] = evaluate_source(
            model,
            source,
            out_dir,
            cfg.eval.batch_size,
            cfg.eval.max_images,
            cfg.eval.score_thresh,
            cfg.eval.min_box_height,
        )
        log.info("evaluated %s in %.1f s", d.name, time.perf_counter() - t0)
    report["summary"] = summary(report)
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(report), indent=2))
    (out_dir / "metrics.md").write_text(markdown(report))
    log.info("wrote %s and %s", out_dir / "metrics.json", out_dir / "metrics.md")
    return report


def summary(report: dict[str, Any]) -> dict[str, float | None]:
    """One number per metric for tables: the first dataset evaluated for each task."""
    out: dict[str, float | None] = {
        "top1": None,
        "top5": None,
        **dict.fromkeys(DETECTION_KEYS),
        "mIoU": None,
        "pixel_accuracy": None,
    }
    for row in report["datasets"].values():
        for task, keys in (
            ("classification", ("top1", "top5")),
            ("detection", DETECTION_KEYS),
            ("segmentation", ("mIoU", "pixel_accuracy")),
        ):
            if task in row:
                for k in keys:
                    if out[k] is None:
                        out[k] = row[task][k]
    m = report["model"]
    out["params_M"] = m["params_total"] / 1e6
    out["gflops"] = m["flops_total"] / 1e9
    out["latency_ms"] = m["latency_ms"]
    return out


def fmt(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["model"]
    size = "x".join(str(v) for v in m["input_size"])
    source = f" ({report['checkpoint']})" if report["checkpoint"] else ""
    lines = [
        f"# Evaluation of {m['name']}{source}",
        "",
        f"| model | backbone | tasks | params (M) | GFLOPs @{size} | latency (ms, {m['device']}) |",
        "|---|---|---|---|---|---|",
        f"| {m['name']} | {m['backbone']} | {'+'.join(m['tasks'])} | {m['params_total'] / 1e6:.2f} "
        f"| {m['flops_total'] / 1e9:.2f} | {fmt(m['latency_ms'])} |",
        "",
        "| dataset | images | task | metrics (%) |",
        "|---|---|---|---|",
    ]
    per_class = []
    for name, row in report["datasets"].items():
        if "classification" in row:
            c = row["classification"]
            text = f"top-1 {fmt(c['top1'], 100)}, top-5 {fmt(c['top5'], 100)}"
            lines.append(f"| {name} | {row['images']} | classification | {text} |")
        if "detection" in row:
            d = row["detection"]
            text = ", ".join(f"{k} {fmt(d[k], 100)}" for k in DETECTION_KEYS)
            if d.get("min_box_height"):
                text += f" (boxes >= {d['min_box_height']:g} px; every box: AP50 "
                text += f"{fmt(d['AP50_all_sizes'], 100)})"
            lines.append(f"| {name} | {row['images']} | detection | {text} |")
            if d.get("AP50_per_class"):
                per_class += ["", f"AP50 (%) per class, {name}:", "", "| class | AP50 |"]
                per_class += ["|---|---|"]
                per_class += [f"| {c} | {fmt(v, 100)} |" for c, v in d["AP50_per_class"].items()]
        if "segmentation" in row:
            s = row["segmentation"]
            text = (
                f"mIoU {fmt(s['mIoU'], 100)}, pixel acc. {fmt(s['pixel_accuracy'], 100)}, "
                f"mean acc. {fmt(s['mean_accuracy'], 100)}"
            )
            lines.append(f"| {name} | {row['images']} | segmentation | {text} |")
            per_class += ["", f"IoU (%) per class, {name}:", "", "| class | IoU |", "|---|---|"]
            per_class += [f"| {c} | {fmt(v, 100)} |" for c, v in s["IoU"].items()]
    return "\n".join(lines + per_class) + "\n"


def evaluate_checkpoint(
    checkpoint: str | Path,
    cfg: TrainConfig,
    out_dir: Path,
    device: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """``input_size`` overrides the checkpoint's letterbox size (test-time resolution)."""
    kind = device or (
        "cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    model = load_checkpoint(checkpoint, map_location=kind)
    if input_size is not None:
        if len(input_size) != 2 or min(input_size) <= 0:
            raise TrainConfigError(f"--input-size must be two lengths > 0, got {input_size}")
        model.cfg.input_size = (int(input_size[0]), int(input_size[1]))
    return evaluate_model(model, cfg, out_dir, str(checkpoint))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--checkpoint", required=True, help="a model checkpoint (.pt)")
    parser.add_argument("--config", required=True, help="the YAML whose data.val is used")
    parser.add_argument("--output", help="folder for metrics.json / metrics.md")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: as the config says")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="letterbox size to run at (default: the checkpoint's)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    setup_console()
    try:
        cfg = load_config(args.config, args.set)
        out = Path(args.output) if args.output else Path(args.checkpoint).resolve().parent / "eval"
        report = evaluate_checkpoint(args.checkpoint, cfg, out, args.device, args.input_size)
    except (TrainConfigError, FileNotFoundError, CheckpointError) as e:
        log.error("%s", e)
        return 2
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
