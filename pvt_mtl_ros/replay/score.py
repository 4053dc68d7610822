"""Scoring replayed frames against ground truth with the package's evaluators
(pvt_mtl_ros.metrics: one class-name rule, pycocotools AP, confusion-matrix mIoU, top-k
accuracy), per topic and overall."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from pvt_mtl_ros.inference.predictor import PredictionResult
from pvt_mtl_ros.metrics import ClassNames, SceneEvaluator, SegmentationEvaluator, coco_evaluate

from .ground_truth import GroundTruth

OVERALL = "overall"
SEG_IGNORE = -1  # model ids are 0..C-1; -1 never collides, whatever C is
RANK_NAMES = {"segmentation": "mIoU", "detection": "AP50", "classification": "p(true scene)"}


class Scorer:
    """Feed it every frame's prediction; `compute()` gives the metrics.

    Ground-truth classes are matched to the model's by NAME (`ClassNames`: case-insensitive,
    stripped); mismatches become warnings. Boxes are scored by pycocotools on the ground
    truth's own COCO json (its areas and crowd regions); masks and scenes by the
    segmentation and scene evaluators.
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
        self.seg: dict[str, SegmentationEvaluator] = {}
        self.cls: dict[str, SceneEvaluator] = {}
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
        gt_names = ClassNames(gt.det_categories)
        categories = list(gt.det_categories.values())
        self.det_lut = {
            i: categories[j]
            for i, n in enumerate(self.det_names or ())
            if (j := gt_names.get(n)) is not None
        }
        if self.det_names is not None and gt.det_images:
            model = ClassNames(self.det_names)
            missing = sorted(n for n in gt.det_categories if model.get(n) is None)
            if missing:
                self.warnings.append(
                    f"detection classes in the ground truth that the model lacks (AP 0 for "
                    f"them): {missing[:20]}"
                )
        self.seg_known = np.zeros(max(65536, len(gt.seg_classes) + 1), dtype=bool)
        self.seg_known[: len(gt.seg_classes)] = True
        if gt.ignore_index < self.seg_known.size:
            self.seg_known[gt.ignore_index] = True
        if self.seg_names is not None:
            # gt mask id -> model id by name; gt classes the model lacks become ignored pixels
            self.frame_seg = self._seg_evaluator()
            if gt.masks and self.frame_seg.missing:
                self.warnings.append(
                    f"segmentation classes in the ground truth that the model lacks (their "
                    f"pixels are ignored): {self.frame_seg.missing[:20]}"
                )
        self.scene_ids = ClassNames(self.cls_names or ())

    def _seg_evaluator(self) -> SegmentationEvaluator:
        return SegmentationEvaluator(self.seg_names, SEG_IGNORE, self.gt.seg_classes)

    def seg_target(self, raw: np.ndarray) -> np.ndarray:
        """A gt mask in model ids (SEG_IGNORE where unlabelled or of no model class): what
        the overlays draw."""
        return self.frame_seg.lut[self._gt_ids(raw)]

    def _gt_ids(self, raw: np.ndarray) -> np.ndarray:
        """gt ids with the gt's ignore_index as SEG_IGNORE (which the evaluator ignores)."""
        ids = raw.astype(np.int64)
        ids[raw == self.gt.ignore_index] = SEG_IGNORE
        return ids

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
        known = self.seg_known[raw.astype(np.int64)]
        if not known.all():
            bad = np.unique(raw[~known])[:10].tolist()
            self._warn(f"{topic} stamp {stamp}: gt mask ids {bad} are no class; ignored")
        target = self._gt_ids(raw)
        for name in (topic, OVERALL):
            if name not in self.seg:
                self.seg[name] = self._seg_evaluator()
            self.seg[name].update(result.mask, target)
        self.frame_seg.reset()
        self.frame_seg.update(result.mask, target)
        return self.frame_seg.compute()["mIoU"]

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
        return coco_evaluate(self.gt.coco, frame, image_ids=[image_id], ap50_only=True)["AP50"]

    def _add_scene(self, topic: str, stamp: int, result: PredictionResult) -> float | None:
        label = self.gt.scene(topic, stamp)
        if label is None:
            return None
        self.matched["classification"].add(self._key(self.gt.scenes, topic, stamp))
        target = self.scene_ids.get(label)
        if target is None:
            self._warn(f"{topic} stamp {stamp}: scene label {label!r} is no model class")
            return None
        for name in (topic, OVERALL):
            if name not in self.cls:
                self.cls[name] = SceneEvaluator(self.cls_names, (1, 5))
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
                    "frames": seg["frames"],
                    "mIoU": seg["mIoU"],
                    "pixel_accuracy": seg["pixel_accuracy"],
                    "mean_accuracy": seg["mean_accuracy"],
                    "IoU_per_class": seg["IoU"],
                }
            if name in self.cls:
                metrics["classification"] = self.cls[name].compute()
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
