"""The replay report: JSON (machine) + Markdown (people) + overlay PNGs of the best and worst
frames. The report is a plain dict built by the replay modes; this module only formats it."""

from __future__ import annotations

import heapq
import itertools
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvt_mtl_ros.metrics.serialize import json_safe

from ..visualize import overlay, palette

FORMAT = "pvt_mtl_ros/replay-report-v1"
OVERLAY_MAX_SIDE = 960  # keeps the PNGs small for 4K cameras


def draw(
    rgb: np.ndarray,
    mask: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    labels: list[str] | None = None,
    num_classes: int = 0,
    caption: str = "",
) -> np.ndarray:
    """Frame with a class-id mask blended in (ids outside 0..C-1 left clear) and boxes."""
    colours = palette(num_classes + 1)[1:] if num_classes else None  # skip black
    return overlay(
        rgb, mask=mask, mask_colours=colours, boxes=boxes, box_texts=labels, caption=caption
    )


def save_png(path: Path, rgb: np.ndarray) -> None:
    scale = OVERLAY_MAX_SIDE / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


class OverlayPicker:
    """Keeps the k best and k worst frames by score (or the first k without ground truth)."""

    def __init__(self, k: int = 3) -> None:
        self.k = k
        self.best: list = []  # min-heap of (score, seq, item): the k largest
        self.worst: list = []  # min-heap of (-score, seq, item): the k smallest
        self.samples: list = []
        self.seq = itertools.count()

    def offer(self, score: float | None, item: Any) -> None:
        if self.k <= 0:
            return
        seq = next(self.seq)
        if score is None or math.isnan(score):
            if len(self.samples) < self.k:
                self.samples.append(item)
            return
        for heap, value in ((self.best, score), (self.worst, -score)):
            entry = (value, seq, item)
            if len(heap) < self.k:
                heapq.heappush(heap, entry)
            elif entry[:2] > heap[0][:2]:
                heapq.heapreplace(heap, entry)

    def picks(self) -> list[tuple[str, float | None, Any]]:
        """[(kind, score, item)]: worst first (lowest score first), then best, then samples
        when nothing was scored; a frame appears once."""
        worst = sorted(self.worst, key=lambda e: (-e[0], e[1]))
        best = sorted(self.best, key=lambda e: (-e[0], e[1]))
        out, seen = [], set()
        for kind, entries, sign in (("worst", worst, -1), ("best", best, 1)):
            for value, seq, item in entries:
                if seq not in seen:
                    seen.add(seq)
                    out.append((kind, sign * value, item))
        if not out:
            out = [("sample", None, item) for item in self.samples]
        return out


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.1f}" if pct else f"{value:.1f}"
    return str(value)


def metrics_rows(name: str, metrics: dict) -> list[str]:
    rows = []
    det, seg, cls = (metrics.get(t) for t in ("detection", "segmentation", "classification"))
    if det:
        rows.append(
            f"| {name} | detection | {det['frames']} | AP {_fmt(det['AP'], True)}, "
            f"AP50 {_fmt(det['AP50'], True)}, AP75 {_fmt(det['AP75'], True)} |"
        )
    if seg:
        rows.append(
            f"| {name} | segmentation | {seg['frames']} | mIoU {_fmt(seg['mIoU'], True)}, "
            f"pixel acc {_fmt(seg['pixel_accuracy'], True)} |"
        )
    if cls:
        rows.append(
            f"| {name} | classification | {cls['frames']} | top-1 "
            f"{_fmt(cls['top1'], True)}, top-5 {_fmt(cls['top5'], True)} |"
        )
    return rows


def _backend(r: dict) -> str:
    """'backend: X, ' (with what was asked for where X is a fallback), or '' if unknown."""
    ran, asked = r.get("backend"), r.get("backend_requested")
    if not ran:
        return ""
    return f"backend: {ran}{f' (asked for {asked})' if asked and asked != ran else ''}, "


def markdown(report: dict) -> str:
    r = report
    lines = [
        "# Replay report",
        "",
        f"- bag: `{r['bag']}` ({r.get('storage', '?')}), checkpoint: `{r['checkpoint']}`",
        f"- mode: {r['mode']}, device: {r.get('device', '?')}, {_backend(r)}"
        f"status: **{r['status']}**",
    ]
    if r.get("error"):
        lines.append(f"- error: {r['error']}")
    if r.get("output_bag"):
        lines.append(f"- predictions bag: `{r['output_bag']}`")
    lines += [
        "",
        "## Frames",
        "",
        "| topic | type | in bag | read | processed | undecodable | with gt |",
        "|---|---|---|---|---|---|---|",
    ]
    for topic, t in r["topics"].items():
        lines.append(
            f"| {topic} | {t['transport']} | {t['in_bag']} | {t['read']} | "
            f"{t['processed']} | {t['undecodable']} | {t['with_gt']} |"
        )
    f = r["frames"]
    lines.append(
        f"| **all** | | {f['in_bag']} | {f['read']} | {f['processed']} | "
        f"{f['undecodable']} | {f['with_gt']} |"
    )
    if r["mode"] == "realtime":
        lines.append(
            f"\nPlayed at {r.get('rate')}x the recorded rate: {r.get('published', 0)} frames "
            f"published, {r.get('dropped', 0)} dropped (no output; the node's latest-frame "
            f"policy: {sum(c['superseded'] for c in r.get('node_counts', {}).values())} "
            "superseded in its queue)."
        )
    st = r.get("streaming")
    if st:
        in_force = "; ".join(
            f"{task} " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            for task, counts in st.get("in_force", {}).items()
        )
        lines.append(
            f"\nStreaming (every frame with ground truth, scored by the prediction in force at "
            f"its time): AP50 {_fmt(st['detection']['AP50'], True)}, mIoU "
            f"{_fmt(st['segmentation']['mIoU'], True)}, scene top-1 "
            f"{_fmt(st['scene']['accuracy'], True)} (%); in force: {in_force or 'nothing'}. "
            "The metrics below score only the frames the node answered."
        )
    metrics = r.get("metrics", {})
    rows = metrics_rows("**overall**", metrics.get("overall", {}))
    for topic, m in metrics.get("topics", {}).items():
        rows += metrics_rows(topic, m)
    lines += ["", "## Metrics", ""]
    if rows:
        lines += ["| topic | task | frames | metrics (%) |", "|---|---|---|---|", *rows]
    else:
        lines.append("No frame had ground truth: latency only.")
    for task, miss in metrics.get("unmatched_gt", {}).items():
        lines.append(
            f"\n{miss['count']} {task} ground-truth entries matched no scored frame "
            f"(e.g. {miss['examples'][:2]})."
        )
    lines += [
        "",
        "## Speed",
        "",
        "| measure | count | mean | p50 | p90 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r.get("latency_ms", {}).items():
        if s.get("count"):
            lines.append(
                f"| {name} (ms) | {s['count']} | {_fmt(s['mean'])} | {_fmt(s['p50'])} | "
                f"{_fmt(s['p90'])} | {_fmt(s['p95'])} | {_fmt(s['p99'])} | {_fmt(s['max'])} |"
            )
    rates = [
        f"{label} {_fmt(r[key])} frames/s"
        for key, label in (
            ("throughput_fps", "throughput"),
            ("inference_fps", "inference only"),
            ("input_fps", "input rate"),
            ("output_fps", "output rate"),
        )
        if r.get(key) is not None
    ]
    if rates:
        lines += ["", "; ".join(rates) + "."]
    if r.get("overlays"):
        lines += ["", "## Overlays", ""]
        for o in r["overlays"]:
            score = "" if o["score"] is None else f", {o['score_name']} {_fmt(o['score'], True)}"
            lines.append(
                f"- {o['kind']}: {o['topic']} stamp {o['stamp']}{score}: "
                f"![{o['kind']}]({o['file']})"
            )
    if r.get("warning_count"):
        lines += ["", f"## Warnings ({r['warning_count']})", ""]
        lines += [f"- {w}" for w in r["warnings"]]
        if r["warning_count"] > len(r["warnings"]):
            lines.append(f"- ... {r['warning_count'] - len(r['warnings'])} more")
    if r.get("ignored_topics"):
        lines += [
            "",
            "Topics not replayed: "
            + ", ".join(f"{t} ({m})" for t, m in r["ignored_topics"].items()),
        ]
    return "\n".join(lines) + "\n"


def write(report: dict, folder: Path) -> tuple[Path, Path]:
    """report.json and report.md in `folder`, each written whole then renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    report = {"format": FORMAT, **json_safe(report)}
    paths = folder / "report.json", folder / "report.md"
    for path, text in zip(paths, (json.dumps(report, indent=1) + "\n", markdown(report))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
