"""The evaluators every tool scores with (training.evaluate, SIL, replay, the demo): one
``reset`` / ``update`` / ``compute`` interface per task, one class-name rule, one latency
percentile set.

- Class names match case-insensitively after stripping spaces (``ClassNames``): ground truth
  and predictions that name their classes are scored by name wherever they come from.
- Detection: pycocotools' COCOeval over in-memory arrays (``coco_from_arrays``). The gt
  ``area`` that splits APs/APm/APl is the BOX area (arrays carry no masks), where COCO's own
  json uses the mask area: small/medium/large figures from arrays are not comparable with
  COCO's. With ``min_box_height`` (KITTI's rule) AP follows it and the every-box figures are
  reported beside it (``..._all_sizes``).
- Segmentation: a confusion matrix over every pixel; mIoU over the classes the ground truth
  can label that occur in the ground truth or the prediction.
- Scene: top-k accuracy.
- Latency: count, mean, p50, p90, p95, p99 and max of milliseconds (``latency_stats``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pvt_mtl_ros.conventions import IGNORE_INDEX

from .classification import TopKAccuracy
from .detection import coco_evaluate, coco_from_arrays
from .segmentation import ConfusionMatrix

PERCENTILES = (50, 90, 95, 99)


def latency_stats(values_ms: Sequence[float]) -> dict[str, float | int]:
    """count, mean, p50/p90/p95/p99 and max of milliseconds (``{"count": 0}`` when empty)."""
    if not len(values_ms):
        return {"count": 0}
    arr = np.asarray(values_ms, np.float64)
    out: dict[str, float | int] = {"count": int(arr.size), "mean": float(arr.mean())}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES).tolist()):
        out[f"p{p}"] = v
    out["max"] = float(arr.max())
    return out


class ClassNames:
    """Class name -> contiguous id, the one matching rule (case-insensitive, stripped), ids in
    order of first appearance."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []
        for name in names:
            self.id(name)

    @staticmethod
    def key(name: str) -> str:
        return str(name).strip().lower()

    def id(self, name: str) -> int:
        """The name's id, a new one for a new name."""
        key = self.key(name)
        if key not in self.ids:
            self.ids[key] = len(self.names)
            self.names.append(str(name))
        return self.ids[key]

    def get(self, name: str) -> int | None:
        return self.ids.get(self.key(name))


class DetectionEvaluator:
    """Boxes of many images -> COCO AP. Labels are class ids into ``class_names`` or names
    (matched by ``ClassNames``)."""

    def __init__(self, class_names: Sequence[str] = (), min_box_height: float = 0.0) -> None:
        self.class_names = list(class_names)
        self.min_box_height = min_box_height
        self.reset()

    def reset(self) -> None:
        self.names = ClassNames(self.class_names)
        self.frames: list[tuple[np.ndarray, ...]] = []

    def _labels(self, labels: Any) -> np.ndarray:
        if isinstance(labels, list | tuple) and labels and isinstance(labels[0], str):
            return np.array([self.names.id(n) for n in labels], np.int64)
        return np.asarray(labels, np.int64).reshape(-1)

    def update(self, gt_boxes, gt_labels, pred_boxes, pred_scores, pred_labels) -> None:
        """One image: gt boxes ``[N, 4]`` XYXY pixels and labels; predicted boxes, scores and
        labels."""
        self.frames.append(
            (
                np.asarray(gt_boxes, np.float64).reshape(-1, 4),
                self._labels(gt_labels),
                np.asarray(pred_boxes, np.float64).reshape(-1, 4),
                np.asarray(pred_scores, np.float64).reshape(-1),
                self._labels(pred_labels),
            )
        )

    def compute(
        self, per_class: bool = False, last: int | None = None, ap50_only: bool = False
    ) -> dict[str, Any]:
        """AP, AP50, AP75, APs/m/l over every image (or the ``last`` ones); ``per_class`` adds
        AP50 and AP per known class (nan for a class without ground truth) and the gt box
        count of each class that has some. ``ap50_only``: AP50 (per class: AP50) at the
        minimum box height alone, the same figure for a fraction of the work (a live line)."""
        frames = self.frames[-last:] if last else self.frames
        if not frames:
            return {"frames": 0, "AP": float("nan"), "AP50": float("nan")}
        gb, gl, pb, ps, pl = (list(x) for x in zip(*frames))
        names = list(self.names.names)
        out: dict[str, Any] = {"frames": len(frames), "min_box_height": self.min_box_height}
        counts = {
            name: n for c, name in enumerate(names) if (n := int(sum((g == c).sum() for g in gl)))
        }
        heights = {"": self.min_box_height}
        if self.min_box_height > 0 and not ap50_only:
            heights["_all_sizes"] = 0.0
        for suffix, min_height in heights.items():
            gt, results = coco_from_arrays(
                gb, gl, pb, ps, pl, class_names=names, min_height=min_height
            )
            ap = coco_evaluate(gt, results, per_class=per_class, ap50_only=ap50_only)
            if not suffix:
                out.update({k: v for k, v in ap.items() if not k.endswith("_per_class")})
                out["num_detections"] = len(results)
            else:
                out["AP50" + suffix] = ap["AP50"]
            if per_class:  # COCOeval matches each class on its own: one run gives them all
                keys = (
                    ("AP50_per_class",)
                    if suffix or ap50_only
                    else ("AP50_per_class", "AP_per_class")
                )
                for key in keys:
                    out[key + suffix] = dict(ap[key])
        if per_class:
            out["gt_boxes_per_class"] = counts
        return out


class SegmentationEvaluator:
    """Class-id masks -> mIoU, per-class IoU, pixel and mean accuracy. ``gt_classes`` name the
    ground truth's ids when they differ from the model's ``classes`` (matched by name; gt
    classes the model lacks are ignored and listed in ``missing``)."""

    def __init__(
        self,
        classes: Sequence[str],
        ignore_index: int = IGNORE_INDEX,
        gt_classes: Sequence[str] = (),
    ) -> None:
        self.classes, self.ignore_index = list(classes), ignore_index
        model = ClassNames(self.classes)
        gt = list(gt_classes) or self.classes
        self.lut = np.full(65536, ignore_index, np.int64)
        self.scored: list[int] = []  # model ids the ground truth can label
        self.missing: list[str] = []
        for gt_id, name in enumerate(gt):
            model_id = model.get(name)
            if model_id is None:
                self.missing.append(name)
            else:
                self.lut[gt_id] = model_id
                self.scored.append(model_id)
        self.lut[ignore_index] = ignore_index
        self.matrix = ConfusionMatrix(len(self.classes), ignore_index, self.classes)
        self.reset()

    def reset(self) -> None:
        self.matrix.reset()
        self.frames = 0

    def update(self, pred: Any, target: Any) -> None:
        """``pred`` model class ids, ``target`` ground-truth ids (``ignore_index`` ignored)."""
        target = np.asarray(target).astype(np.int64)
        self.matrix.update(np.asarray(pred), self.lut[target])
        self.frames += 1

    def compute(self) -> dict[str, Any]:
        if not self.frames:
            return {"frames": 0, "mIoU": float("nan")}
        result = self.matrix.compute()
        iou = result["IoU"]
        scored = [i for i in dict.fromkeys(self.scored) if not math.isnan(iou[i])]
        return {
            "frames": self.frames,
            "mIoU": float(np.mean(iou[scored])) if scored else float("nan"),
            "pixel_accuracy": result["pixel_accuracy"],
            "mean_accuracy": result["mean_accuracy"],
            "IoU": {self.classes[i]: float(iou[i]) for i in dict.fromkeys(self.scored)},
        }


class SceneEvaluator:
    """Scene labels -> top-k accuracy; scores per class id, or (name, score) pairs."""

    def __init__(self, class_names: Sequence[str] = (), topk: Sequence[int] = (1, 5)) -> None:
        self.class_names, self.topk = list(class_names), tuple(topk)
        self.reset()

    def reset(self) -> None:
        self.names = ClassNames(self.class_names)
        self.accuracy = TopKAccuracy(self.topk)

    @property
    def count(self) -> int:
        return self.accuracy.count

    def update(self, scores: Any, targets: Any) -> None:
        """``scores`` ``[N, K]`` with ``targets`` ``[N]`` ids, or one image's list of
        ``(name, score)`` pairs with its true class name."""
        if isinstance(targets, str):
            target = self.names.id(targets)
            for name, _ in scores:
                self.names.id(name)
            row = np.full((1, len(self.names.names)), -1.0, np.float32)
            for name, score in scores:
                i = self.names.get(name)
                row[0, i] = max(row[0, i], score)
            self.accuracy.update(row, [target])
        else:
            self.accuracy.update(scores, targets)

    def compute(self) -> dict[str, Any]:
        return {"frames": self.count, **self.accuracy.compute()}
