"""Live scores of matched frames with the package's metric code (pycocotools AP50,
confusion-matrix mIoU, top-k accuracy), plus latency percentiles and rates.

Classes are matched by NAME, case-insensitively, between the ground truth and the model
(the perception node's detections and scene carry names; its segmentation ids are named by
its latched label_info).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from pvt_mtl_ros.metrics import ConfusionMatrix, TopKAccuracy, coco_evaluate, coco_from_arrays

from .matching import Frame

PERCENTILES = (50, 95, 99)
IGNORE = 255
# Live lines score boxes over the latest frames only: COCOeval over every frame so far would
# take seconds of a core (and of the GIL the nodes share) on long runs. The report uses all.
LIVE_AP_FRAMES = 100


def percentiles(values_ms: Sequence[float]) -> dict[str, float | int]:
    """count, mean, p50/p95/p99 and max of a list of milliseconds (count 0 when empty)."""
    if not len(values_ms):
        return {"count": 0}
    arr = np.asarray(values_ms, np.float64)
    out: dict[str, float | int] = {"count": int(arr.size), "mean": float(arr.mean())}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES).tolist()):
        out[f"p{p}"] = v
    out["max"] = float(arr.max())
    return out


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


class Names:
    """Class name -> contiguous id, case-insensitive, in order of first appearance."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []
        for name in names:
            self.id(name)

    def id(self, name: str) -> int:
        key = name.lower()
        if key not in self.ids:
            self.ids[key] = len(self.names)
            self.names.append(name)
        return self.ids[key]

    def get(self, name: str) -> int | None:
        return self.ids.get(name.lower())


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
        self.det_names = Names()
        self.det: list[tuple[np.ndarray, ...]] = []  # per frame: gt boxes/labels, predictions
        self.seg: ConfusionMatrix | None = None
        self.seg_lut: np.ndarray | None = None
        self.seg_scored: list[int] = []  # model ids of classes the ground truth labels
        self.seg_frames = 0
        self.scene_names = Names()
        self.scene = TopKAccuracy((1,))
        self.latency_ms: dict[str, list[float]] = defaultdict(list)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    def set_model_seg_classes(self, names: Sequence[str]) -> None:
        """The model's segmentation classes (label_info): maps ground-truth ids onto them."""
        model = Names(names)
        self.seg = ConfusionMatrix(len(model.names), IGNORE, list(names))
        self.seg_lut = np.full(65536, IGNORE, np.int64)
        missing = []
        for gt_id, name in enumerate(self.gt_seg_classes):
            model_id = model.get(name)
            if model_id is None:
                missing.append(name)
            else:
                self.seg_lut[gt_id] = model_id
                self.seg_scored.append(model_id)
        if missing:
            self.warn_once(
                "seg-missing",
                f"ground-truth segmentation classes the model lacks (ignored): {missing}",
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
        gt_labels = np.array([self.det_names.id(n) for n in gt_names], np.int64)
        labels = np.array([self.det_names.id(n) for n in names], np.int64)
        self.det.append((gt_boxes, gt_labels, boxes, scores, labels))

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
            self.seg.update(pred, self.seg_lut[gt.astype(np.int64)])
        except ValueError as err:  # ids beyond the model's classes
            self.warn_once(f"seg-ids:{frame.camera}", f"{frame.camera}: {err}")
            return
        self.seg_frames += 1

    def _add_scene(self, truth: str, results: list[tuple[str, float]]) -> None:
        target = self.scene_names.id(truth)
        for name, _ in results:
            self.scene_names.id(name)
        scores = np.full((1, len(self.scene_names.names)), -1.0, np.float32)
        for name, score in results:
            i = self.scene_names.get(name)
            scores[0, i] = max(scores[0, i], score)
        self.scene.update(scores, [target])

    # -- metrics -----------------------------------------------------------------------------

    def detection(self, per_class: bool = False, last: int | None = None) -> dict[str, Any]:
        """AP50 over every scored frame, or over the `last` ones.

        With a `min_box_height`, "AP50" and "AP50_per_class" follow that height rule and the
        same figures over every box are reported beside them ("..._all_sizes").
        """
        frames = self.det[-last:] if last else self.det
        if not frames:
            return {"frames": 0, "AP50": float("nan")}
        gb, gl, pb, ps, pl = (list(x) for x in zip(*frames))
        names = list(self.det_names.names)
        out: dict[str, Any] = {"frames": len(frames), "min_box_height": self.min_box_height}
        # classes predicted but never in the ground truth have nothing to measure
        counts = {
            name: n
            for c, name in enumerate(names)
            if (n := int(sum(int((labels == c).sum()) for labels in gl)))
        }
        heights = {"": self.min_box_height}
        if self.min_box_height > 0:
            heights["_all_sizes"] = 0.0
        for suffix, min_height in heights.items():
            gt, results = coco_from_arrays(
                gb, gl, pb, ps, pl, class_names=names, min_height=min_height
            )
            ap = coco_evaluate(gt, results, per_class=per_class)
            out["AP50" + suffix] = ap["AP50"]
            if per_class:  # COCOeval matches each class on its own: one run gives them all
                out["AP50_per_class" + suffix] = {n: ap["AP50_per_class"][n] for n in counts}
        if per_class:
            out["gt_boxes_per_class"] = counts
        return out

    def segmentation(self) -> dict[str, Any]:
        if self.seg is None or not self.seg_frames:
            return {"frames": 0, "mIoU": float("nan")}
        result = self.seg.compute()
        iou = result["IoU"]
        scored = [i for i in dict.fromkeys(self.seg_scored) if not math.isnan(iou[i])]
        return {
            "frames": self.seg_frames,
            # over the classes the ground truth can label: a source that labels 3 classes is
            # not charged for the model's other 8
            "mIoU": float(np.mean(iou[scored])) if scored else float("nan"),
            "pixel_accuracy": result["pixel_accuracy"],
            "IoU_per_class": {self.seg.class_names[i]: float(iou[i]) for i in scored},
        }

    def scene_accuracy(self) -> dict[str, Any]:
        return {"frames": self.scene.count, "accuracy": self.scene.compute()["top1"]}

    def latency(self) -> dict[str, dict]:
        every = [v for values in self.latency_ms.values() for v in values]
        out = {"all": percentiles(every)}
        out.update({c: percentiles(v) for c, v in sorted(self.latency_ms.items())})
        return out

    def metrics(self, per_class: bool = False, live: bool = False) -> dict[str, Any]:
        return {
            "detection": self.detection(per_class, LIVE_AP_FRAMES if live else None),
            "segmentation": self.segmentation(),
            "scene": self.scene_accuracy(),
            "latency_ms": self.latency(),
        }
