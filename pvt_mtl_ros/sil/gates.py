"""Thresholds from the scenario checked against a finished run's figures: the release gate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .scenario import THRESHOLDS


@dataclass
class Gate:
    name: str  # the threshold key (ap50_per_class entries: "ap50[car]")
    value: float | None  # None: not measured in this run
    limit: float
    kind: str  # "min" or "max"
    passed: bool

    def describe(self) -> str:
        op = ">=" if self.kind == "min" else "<="
        shown = "not measured" if self.value is None else f"{self.value:.4g}"
        return f"{self.name}: {shown} (needs {op} {self.limit:g})"


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The value each threshold key reads from a report (see report.build)."""
    m, totals = report["metrics"], report["totals"]
    lat = m["latency_ms"]["all"]
    rates = [c["output_hz"] for c in report["cameras"].values()]
    return {
        "ap50": m["detection"].get("AP50"),
        "ap50_per_class": m["detection"].get("AP50_per_class", {}),
        "miou": m["segmentation"].get("mIoU"),
        "scene_accuracy": m["scene"].get("accuracy"),
        "latency_p50_ms": lat.get("p50"),
        "latency_p95_ms": lat.get("p95"),
        "latency_p99_ms": lat.get("p99"),
        # a camera without two complete frames has no rate: it fails a rate threshold
        "output_rate_hz": None if not rates or None in rates else min(rates),
        "dropped_frames": totals["dropped"] + totals["incomplete"],
        "dropped_fraction": (
            (totals["dropped"] + totals["incomplete"]) / totals["frames_in"]
            if totals["frames_in"]
            else None
        ),
        "unmatched_outputs": totals["unmatched_outputs"],
        "min_scored_frames": totals["completed"],
    }


def _measured(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def check(thresholds: dict[str, Any], report: dict[str, Any]) -> list[Gate]:
    """One Gate per threshold; a metric that was not measured fails (a gate never passes
    on missing evidence)."""
    values = figures(report)
    gates = []
    for key, limit in thresholds.items():
        kind = THRESHOLDS[key][0]
        per_class = {n.lower(): v for n, v in values["ap50_per_class"].items()}
        items = (
            [(f"ap50[{n}]", per_class.get(n.lower()), lim) for n, lim in limit.items()]
            if key == "ap50_per_class"
            else [(key, values[key], limit)]
        )
        for name, raw, lim in items:
            value = _measured(raw)
            ok = value is not None and (value >= lim if kind == "min" else value <= lim)
            gates.append(Gate(name, value, float(lim), kind, ok))
    return gates
