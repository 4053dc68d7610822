"""Scoring replayed frames against ground truth with the training module's metric code
(pycocotools AP, confusion-matrix mIoU, top-k accuracy), per topic and overall."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from pvt_mtl_ros.inference.predictor import PredictionResult
from pvt_mtl_ros.metrics import ConfusionMatrix, TopKAccuracy, coco_evaluate

from .ground_truth import GroundTruth

OVERALL = "overall"
SEG_IGNORE = -1  # model ids are 0..C-1; -1 never collides, whatever C is
RANK_NAMES = {"segmentation": "mIoU", "detection": "AP50", "classification": "p(true scene)"}


class Scorer:
    """Feed it every frame's prediction; `compute()` gives the metrics.

    Ground-truth classes are matched to the model's by NAME; mismatches become warnings.
    """

    def __init__(
        self,
        gt: GroundTruth | None,
        det_names: Sequence[str] | None,
        seg_names: Sequence[str] | None,
        cls_names: Sequence[str] | None,
    ) -> None:
        self.gt = gt
        self.det_names, self.seg_names, self.cls_names = det_names, seg_names, cls_names
        self.warnings: list[str] = []
        self.seen: set[tuple[str, int]] = set()
        self.matched: dict[str, set] = defaultdict(set)
        self.det_results: dict[str, list[dict]] = defaultdict(list)
        self.det_images: dict[str, list[int]] = defaultdict(list)
        self.det_owner: dict[int, str] = {}
        self.seg: dict[str, ConfusionMatrix] = {}
        self.seg_frames: dict[str, int] = defaultdict(int)
        self.cls: dict[str, TopKAccuracy] = {}
        if gt is None:
            return
        if gt.det_images and det_names is None:
            self.warnings.append("ground truth has boxes but the model has no detection head")
        if gt.masks and seg_names is None:
            self.warnings.append("ground truth has masks but the model has no segmentation head")
        if gt.scenes and cls_names is None:
            self.warnings.append(
                "ground truth has scene labels but the model has no classification head"
            )
        self._match_classes()

    def _match_classes(self) -> None:
        gt = self.gt
        # Model detection label -> gt category id; predictions of other classes are not scored.
        self.det_lut = {
            i: gt.det_categories[n]
            for i, n in enumerate(self.det_names or ())
            if n in gt.det_categories
        }
        if self.det_names is not None and gt.det_images:
            missing = sorted(set(gt.det_categories) - set(self.det_names))
            if missing:
                self.warnings.append(
                    f"detection classes in the ground truth that the model lacks (AP 0 for "
                    f"them): {missing[:20]}"
                )
        # gt mask id -> model id; gt classes the model lacks become ignored pixels.
        size = max(65536, len(gt.seg_classes) + 1)
        self.seg_lut = np.full(size, SEG_IGNORE, dtype=np.int64)
        model_ids = {n: i for i, n in enumerate(self.seg_names or ())}
        for i, name in enumerate(gt.seg_classes):
            self.seg_lut[i] = model_ids.get(name, SEG_IGNORE)
        self.seg_known = np.zeros(size, dtype=bool)
        self.seg_known[: len(gt.seg_classes)] = True
        if gt.ignore_index < size:
            self.seg_known[gt.ignore_index] = True
            self.seg_lut[gt.ignore_index] = SEG_IGNORE
        if self.seg_names is not None and gt.masks:
            missing = [n for n in gt.seg_classes if n not in model_ids]
            if missing:
                self.warnings.append(
                    f"segmentation classes in the ground truth that the model lacks (their "
                    f"pixels are ignored): {missing[:20]}"
                )

    def _warn(self, message: str) -> None:
        self.warnings.append(message)

    def add(
        self, topic: str, stamp: int, result: PredictionResult
    ) -> tuple[bool, float | None, str]:
        """Score one frame. Returns (had ground truth, ranking score, its name): the frame's
        mIoU, else its AP50, else the probability of the true scene class; None if none."""
        if self.gt is None:
            return False, None, ""
        if (topic, stamp) in self.seen:
            self._warn(f"{topic}: a second frame with stamp {stamp}; scored only the first")
            return False, None, ""
        self.seen.add((topic, stamp))
        had = any(
            self._key(table, topic, stamp) in table
            for table in (self.gt.masks, self.gt.det_images, self.gt.scenes)
        )
        scores = {}
        if self.seg_names is not None and result.mask is not None:
            scores["segmentation"] = self._add_mask(topic, stamp, result)
        if self.det_names is not None and result.boxes is not None:
            scores["detection"] = self._add_boxes(topic, stamp, result)
        if self.cls_names is not None and result.class_probs is not None:
            scores["classification"] = self._add_scene(topic, stamp, result)
        for task, name in RANK_NAMES.items():
            value = scores.get(task)
            if value is not None and not math.isnan(value):
                return had, value, name
        return had, None, ""

    def _add_mask(self, topic: str, stamp: int, result: PredictionResult) -> float | None:
        raw = self.gt.mask(topic, stamp)
        if raw is None:
            return None
        self.matched["segmentation"].add(self._key(self.gt.masks, topic, stamp))
        if raw.shape != result.mask.shape:
            self._warn(
                f"{topic} stamp {stamp}: gt mask {raw.shape} differs from the frame "
                f"{result.mask.shape}; segmentation not scored"
            )
            return None
        raw = raw.astype(np.int64)
        if not self.seg_known[raw].all():
            bad = np.unique(raw[~self.seg_known[raw]])[:10].tolist()
            self._warn(f"{topic} stamp {stamp}: gt mask ids {bad} are no class; ignored")
        target = self.seg_lut[raw]
        for name in (topic, OVERALL):
            if name not in self.seg:
                self.seg[name] = ConfusionMatrix(len(self.seg_names), SEG_IGNORE, self.seg_names)
            self.seg[name].update(result.mask, target)
            self.seg_frames[name] += 1
        frame = ConfusionMatrix(len(self.seg_names), SEG_IGNORE)
        frame.update(result.mask, target)
        return frame.compute()["mIoU"]

    def _add_boxes(self, topic: str, stamp: int, result: PredictionResult) -> float | None:
        image_id = self.gt.det_image_id(topic, stamp)
        if image_id is None:
            return None
        owner = self.det_owner.setdefault(image_id, topic)
        if owner != topic:
            self._warn(
                f"gt image {image_id} (stamp {stamp}) matches frames of {owner} and {topic}; "
                f"scored only for {owner}"
            )
            return None
        self.matched["detection"].add(self._key(self.gt.det_images, topic, stamp))
        frame = []
        for box, score, label in zip(
            result.boxes.tolist(), result.scores.tolist(), result.labels.tolist()
        ):
            if label in self.det_lut:
                x1, y1, x2, y2 = box
                frame.append(
                    {
                        "image_id": image_id,
                        "category_id": self.det_lut[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score),
                    }
                )
        self.det_results[topic].extend(frame)
        self.det_images[topic].append(image_id)
        return coco_evaluate(self.gt.coco, frame, image_ids=[image_id])["AP50"]

    def _add_scene(self, topic: str, stamp: int, result: PredictionResult) -> float | None:
        label = self.gt.scene(topic, stamp)
        if label is None:
            return None
        self.matched["classification"].add(self._key(self.gt.scenes, topic, stamp))
        if label not in self.cls_names:
            self._warn(f"{topic} stamp {stamp}: scene label {label!r} is no model class")
            return None
        target = self.cls_names.index(label)
        for name in (topic, OVERALL):
            if name not in self.cls:
                self.cls[name] = TopKAccuracy((1, 5))
            self.cls[name].update(result.class_probs[None], [target])
        return float(result.class_probs[target])

    @staticmethod
    def _key(table: dict, topic: str, stamp: int) -> tuple:
        return (topic, stamp) if (topic, stamp) in table else (None, stamp)

    def compute(self) -> dict[str, Any]:
        """{"overall": {task: metrics}, "topics": {topic: {task: metrics}}, "unmatched_gt"}."""
        names = sorted(set(self.det_images) | set(self.seg) | set(self.cls)) + [OVERALL]
        out: dict[str, dict] = {}
        for name in dict.fromkeys(names):
            metrics = {}
            images = (
                [i for v in self.det_images.values() for i in v]
                if name == OVERALL
                else self.det_images.get(name, [])
            )
            if images:
                results = (
                    [r for v in self.det_results.values() for r in v]
                    if name == OVERALL
                    else self.det_results[name]
                )
                ap = coco_evaluate(self.gt.coco, results, image_ids=images, per_class=True)
                metrics["detection"] = {"frames": len(images), **ap}
            if name in self.seg:
                seg = self.seg[name].compute()
                metrics["segmentation"] = {
                    "frames": self.seg_frames[name],
                    "mIoU": seg["mIoU"],
                    "pixel_accuracy": seg["pixel_accuracy"],
                    "mean_accuracy": seg["mean_accuracy"],
                    "IoU_per_class": dict(zip(self.seg_names, seg["IoU"].tolist())),
                }
            if name in self.cls:
                metrics["classification"] = {
                    "frames": self.cls[name].count,
                    **self.cls[name].compute(),
                }
            out[name] = metrics
        overall = out.pop(OVERALL, {})
        unmatched = {}
        if self.gt is not None:
            for task, keys in self.gt.entries().items():
                missing = sorted(keys - self.matched[task], key=lambda k: (k[0] or "", k[1]))
                if missing and task in ("detection", "segmentation", "classification"):
                    unmatched[task] = {
                        "count": len(missing),
                        "examples": [{"topic": t, "stamp": s} for t, s in missing[:5]],
                    }
        return {"overall": overall, "topics": out, "unmatched_gt": unmatched}
