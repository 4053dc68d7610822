"""Live scores of matched frames with the package's metric code (pycocotools AP50,
confusion-matrix mIoU, top-k accuracy), plus latency percentiles and rates.

Classes are matched by NAME (pvt_mtl_ros.metrics.ClassNames: case-insensitive) between the
ground truth and the model (the perception node's detections and scene carry names; its
segmentation ids are named by its latched label_info).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pvt_mtl_ros.conventions import IGNORE_INDEX
from pvt_mtl_ros.metrics import (
    DetectionEvaluator,
    SceneEvaluator,
    SegmentationEvaluator,
    latency_stats,
)

from .matching import Frame

# Live lines score boxes over the latest frames only: COCOeval over every frame so far would
# take seconds of a core (and of the GIL the nodes share) on long runs. The report uses all.
LIVE_AP_FRAMES = 100


class Rate:
    """Events per second between the first and the last event."""

    def __init__(self) -> None:
        self.n, self.first, self.last = 0, None, None

    def add(self, t: float) -> None:
        self.n += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)

    def hz(self) -> float | None:
        if self.n < 2 or self.last <= self.first:
            return None
        return (self.n - 1) / (self.last - self.first)


class Scores:
    """Feed it every matched frame (`add`); read the metrics at any time (`metrics`)."""

    def __init__(
        self, gt_seg_classes: Sequence[str], latency: str = "stamp", min_box_height: float = 0.0
    ) -> None:
        self.gt_seg_classes = list(gt_seg_classes)
        self.latency_mode = latency
        self.min_box_height = min_box_height  # see coco_from_arrays(min_height=)
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self.det = DetectionEvaluator(min_box_height=min_box_height)
        self.seg: SegmentationEvaluator | None = None
        self.scene = SceneEvaluator(topk=(1,))
        self.latency_ms: dict[str, list[float]] = defaultdict(list)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    def set_model_seg_classes(self, names: Sequence[str]) -> None:
        """The model's segmentation classes (label_info): maps ground-truth ids onto them."""
        self.seg = SegmentationEvaluator(list(names), IGNORE_INDEX, self.gt_seg_classes)
        if self.seg.missing:
            self.warn_once(
                "seg-missing",
                f"ground-truth segmentation classes the model lacks (ignored): {self.seg.missing}",
            )

    # -- frames ------------------------------------------------------------------------------

    def add(self, frame: Frame) -> None:
        t_done = max(frame.t_out.values())
        start = frame.stamp / 1e9 if self.latency_mode == "stamp" else frame.t_image
        if start is not None:
            self.latency_ms[frame.camera].append(1000.0 * (t_done - start))
        if "detections" in frame.out and "detections" in frame.gt:
            self._add_detections(frame.gt["detections"], frame.out["detections"])
        if "segmentation" in frame.out and "segmentation" in frame.gt:
            self._add_mask(frame)
        if "scene" in frame.out and frame.gt.get("scene"):
            self._add_scene(frame.gt["scene"], frame.out["scene"])

    def _add_detections(self, gt: tuple, out: tuple) -> None:
        gt_boxes, gt_names = gt
        boxes, scores, names = out
        self.det.update(gt_boxes, list(gt_names), boxes, scores, list(names))

    def _add_mask(self, frame: Frame) -> None:
        if self.seg is None:
            self.warn_once(
                "seg-names",
                "no segmentation label_info from the perception node: masks not scored "
                "(enable its outputs.label_info)",
            )
            return
        gt, pred = frame.gt["segmentation"], frame.out["segmentation"]
        if gt.shape != pred.shape:
            self.warn_once(
                f"seg-shape:{frame.camera}",
                f"{frame.camera}: predicted mask {pred.shape} differs from the ground truth "
                f"{gt.shape}; those frames are not scored",
            )
            return
        try:
            self.seg.update(pred, gt)
        except ValueError as err:  # ids beyond the model's classes
            self.warn_once(f"seg-ids:{frame.camera}", f"{frame.camera}: {err}")

    def _add_scene(self, truth: str, results: list[tuple[str, float]]) -> None:
        self.scene.update(results, truth)

    # -- metrics -----------------------------------------------------------------------------

    def detection(
        self, per_class: bool = False, last: int | None = None, ap50_only: bool = False
    ) -> dict[str, Any]:
        """AP50 over every scored frame, or over the `last` ones (see DetectionEvaluator); per
        class only those with ground truth (a class only predicted has nothing to measure)."""
        out = self.det.compute(per_class, last, ap50_only)
        for key in [k for k in out if k.startswith("AP") and "_per_class" in k]:
            out[key] = {n: v for n, v in out[key].items() if n in out["gt_boxes_per_class"]}
        return out

    def segmentation(self) -> dict[str, Any]:
        """mIoU over the classes the ground truth can label: a source that labels 3 classes is
        not charged for the model's other 8."""
        if self.seg is None or not self.seg.frames:
            return {"frames": 0, "mIoU": float("nan")}
        out = self.seg.compute()
        iou = out.pop("IoU")
        out["IoU_per_class"] = {n: v for n, v in iou.items() if not math.isnan(v)}
        return out

    def scene_accuracy(self) -> dict[str, Any]:
        result = self.scene.compute()
        return {"frames": result["frames"], "accuracy": result["top1"]}

    def latency(self) -> dict[str, dict]:
        every = [v for values in self.latency_ms.values() for v in values]
        out = {"all": latency_stats(every)}
        out.update({c: latency_stats(v) for c, v in sorted(self.latency_ms.items())})
        return out

    def metrics(self, per_class: bool = False, live: bool = False) -> dict[str, Any]:
        return {
            # the live line's AP50 is recomputed every report_period, beside the node on
            # the same cores: the latest frames only, matched at IoU .5 only
            "detection": self.detection(per_class, LIVE_AP_FRAMES if live else None, live),
            "segmentation": self.segmentation(),
            "scene": self.scene_accuracy(),
            "latency_ms": self.latency(),
        }
