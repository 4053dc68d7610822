"""The SIL report: a plain dict (written as JSON) and its text form (printed), plus the
one-line live status printed while the loop runs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..metrics.serialize import json_safe
from .gates import Gate

FORMAT = "pvt_mtl_ros/sil-report-v1"
TALLY_KEYS = ("frames_in", "completed", "dropped", "incomplete", "missing_gt",
              "unmatched_outputs", "late_outputs", "outside_window")  # fmt: skip


def totals(cameras: dict[str, dict]) -> dict[str, int]:
    return {k: sum(c[k] for c in cameras.values()) for k in TALLY_KEYS}


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def live_line(elapsed: float, cams: dict[str, dict], metrics: dict[str, Any]) -> str:
    """`[ 12.0 s] in 118 scored 112 dropped 4 | AP50 0.41 mIoU 0.58 scene 0.80 | ...`
    (AP50 over the latest frames, see scoring.LIVE_AP_FRAMES; the rest over all so far)."""
    t = totals(cams)
    lat = metrics["latency_ms"]["all"]
    rates = [c["output_hz"] for c in cams.values() if c["output_hz"] is not None]
    return (
        f"[{elapsed:6.1f} s] in {t['frames_in']} scored {t['completed']} "
        f"dropped {t['dropped'] + t['incomplete']} unmatched {t['unmatched_outputs']} | "
        f"AP50 {_num(metrics['detection']['AP50'])} mIoU {_num(metrics['segmentation']['mIoU'])}"
        f" scene {_num(metrics['scene']['accuracy'])} | latency p50 {_num(lat.get('p50'), 0)} "
        f"p95 {_num(lat.get('p95'), 0)} p99 {_num(lat.get('p99'), 0)} ms | "
        f"out {_num(sum(rates) if rates else None, 1)} Hz"
    )


def attach_gates(report: dict[str, Any], gates: list[Gate]) -> dict[str, Any]:
    report["gates"] = [asdict(g) for g in gates]
    if report.get("status") in (None, "complete"):
        report["status"] = "pass" if all(g.passed for g in gates) else "fail"
    return report


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **json_safe(report)}, indent=1) + "\n")
    tmp.replace(path)
    return path


def text(report: dict[str, Any]) -> str:
    r = report
    lines = [
        f"SIL scenario '{r['scenario']}' (source {r['source']}, {len(r['cameras'])} camera(s), "
        f"{_num(r.get('duration_s'), 1)} s of frames, latency by {r['latency_mode']})",
        f"perception: {r.get('checkpoint') or 'external node'} on {r.get('device', '?')}"
        + (f", backend {r['backend']}" if r.get("backend") else ""),
        "",
        f"{'camera':<12}{'in':>6}{'scored':>8}{'dropped':>9}{'incompl':>9}{'unmatch':>9}"
        f"{'in Hz':>8}{'out Hz':>8}{'p50':>8}{'p95':>8}{'p99 ms':>9}",
    ]
    lat = r["metrics"]["latency_ms"]
    rows = [(name, c, lat.get(name, {})) for name, c in r["cameras"].items()]
    for name, c, lt in rows:
        lines.append(
            f"{name:<12}{c['frames_in']:>6}{c['completed']:>8}{c['dropped']:>9}"
            f"{c['incomplete']:>9}{c['unmatched_outputs']:>9}{_num(c['input_hz'], 1):>8}"
            f"{_num(c['output_hz'], 1):>8}{_num(lt.get('p50'), 1):>8}{_num(lt.get('p95'), 1):>8}"
            f"{_num(lt.get('p99'), 1):>9}"
        )
    t, la = r["totals"], lat["all"]
    if len(rows) > 1:
        lines.append(
            f"{'all':<12}{t['frames_in']:>6}{t['completed']:>8}{t['dropped']:>9}"
            f"{t['incomplete']:>9}{t['unmatched_outputs']:>9}{'':>8}{'':>8}"
            f"{_num(la.get('p50'), 1):>8}{_num(la.get('p95'), 1):>8}{_num(la.get('p99'), 1):>9}"
        )
    extra = {k: t[k] for k in ("missing_gt", "late_outputs", "outside_window") if t[k]}
    if extra:
        lines.append("also: " + ", ".join(f"{k} {v}" for k, v in extra.items()))
    m = r["metrics"]
    det, seg, scene = m["detection"], m["segmentation"], m["scene"]
    rule = f", boxes >= {det['min_box_height']:g} px tall" if det.get("min_box_height") else ""
    lines += ["", f"AP50            {_num(det['AP50'])}  ({det['frames']} frames{rule})"]
    if det.get("AP50_per_class"):
        per = ", ".join(
            f"{n} {_num(v)} ({det['gt_boxes_per_class'][n]} boxes)"
            for n, v in det["AP50_per_class"].items()
        )
        lines.append(f"  per class     {per}")
    if "AP50_all_sizes" in det:
        per = ", ".join(
            f"{n} {_num(v)}" for n, v in det.get("AP50_per_class_all_sizes", {}).items()
        )
        lines.append(
            f"  every size    {_num(det['AP50_all_sizes'])}" + (f" ({per})" if per else "")
        )
    lines.append(f"mIoU            {_num(seg['mIoU'])}  ({seg['frames']} frames)")
    if seg.get("IoU_per_class"):
        per = ", ".join(f"{n} {_num(v)}" for n, v in seg["IoU_per_class"].items())
        lines.append(f"  per class     {per}")
    lines.append(f"scene accuracy  {_num(scene['accuracy'])}  ({scene['frames']} frames)")
    st = m.get("streaming")
    if st:
        lines.append(
            f"streaming       AP50 {_num(st['detection']['AP50'])}  mIoU "
            f"{_num(st['segmentation']['mIoU'])}  scene {_num(st['scene']['accuracy'])}  (every "
            "frame in, by the prediction in force at its time: docs/SIL.md)"
        )
        counts = ", ".join(
            f"{task} {c.get('own', 0)}/{c.get('older', 0)}/{c.get('none', 0)}"
            for task, c in st["in_force"].items()
        )
        if counts:
            lines.append(f"  in force      own/older/none: {counts}")
    lines.append(
        f"latency (ms)    p50 {_num(la.get('p50'), 1)}  p95 {_num(la.get('p95'), 1)}  "
        f"p99 {_num(la.get('p99'), 1)}  max {_num(la.get('max'), 1)}  ({la['count']} frames)"
    )
    nl = r.get("node_latency_ms") or {}
    if nl.get("count"):
        lines.append(
            f"  in the node   p50 {_num(nl['p50'], 1)}  p95 {_num(nl['p95'], 1)}  "
            f"p99 {_num(nl['p99'], 1)}  (stamp to publish, last {nl['count']} frames)"
        )
    node = r.get("node_counts")
    if node:
        per = "; ".join(
            f"{cam}: received {c['received']}, processed {c['processed']}, "
            f"superseded {c['superseded']}, bad {c['bad']}"
            for cam, c in node.items()
        )
        lines.append(f"perception node {per}")
    if r.get("warnings"):
        lines += ["", "warnings:"] + [f"  - {w}" for w in r["warnings"]]
    gates = r.get("gates", [])
    if gates:
        lines += ["", "thresholds:"]
        for g in gates:
            gate = Gate(**g)
            lines.append(f"  {'PASS' if gate.passed else 'FAIL'}  {gate.describe()}")
    failed = [g for g in gates if not g["passed"]]
    status = r.get("status", "?")
    if status == "pass":
        verdict = f"RESULT: PASS ({len(gates)} threshold(s) met)"
    elif status == "fail":
        verdict = f"RESULT: FAIL ({len(failed)} of {len(gates)} threshold(s) missed)"
    else:
        verdict = f"RESULT: {status.upper()}" + (f": {r['error']}" if r.get("error") else "")
    return "\n".join([*lines, "", verdict]) + "\n"
