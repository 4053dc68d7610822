"""COCO box AP through pycocotools' COCOeval, from a json file or from per-image arrays.

Conventions of the returned numbers (the COCOeval ones, with -1 turned into nan):

- a metric whose range holds ground truth but no detection is 0.0 (nothing found);
- a metric whose range holds no ground truth at all is nan (e.g. ``APs`` when no gt box is
  small, or every metric when the gt has no non-crowd box): there is nothing to measure.

An empty result list is therefore not an error: AP is 0.0 wherever gt exists.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def load_coco(gt: str | Path | COCO | dict) -> COCO:
    """A ``COCO`` object from a json path, an existing ``COCO`` or an in-memory gt dict."""
    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, (str, Path)):
        if not Path(gt).is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {gt}")
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(gt))
    if isinstance(gt, dict):
        coco = COCO()
        # COCO.loadRes reads these keys unconditionally.
        coco.dataset = {"images": [], "annotations": [], "categories": [], **gt}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco
    raise TypeError(f"gt must be a path, a COCO object or a dict, got {type(gt).__name__}")


def _load_results(coco_gt: COCO, results: Sequence[dict]) -> COCO:
    if len(results) == 0:
        # loadRes indexes results[0]; an empty detection set is an index with no annotations.
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        return coco_dt
    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"results name image ids absent from the gt: {sorted(unknown)[:10]}")
    # loadRes writes ids and areas into the dicts it gets: give it copies.
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes([dict(r) for r in results])


def coco_evaluate(
    gt: str | Path | COCO | dict,
    results: Sequence[dict],
    *,
    image_ids: Sequence[int] | None = None,
    per_class: bool = False,
    ap50_only: bool = False,
) -> dict[str, Any]:
    """Box AP of COCO-format ``results`` against ``gt``.

    Args:
        gt: COCO instances json path, ``COCO`` object, or the same content as a dict.
        results: dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        image_ids: evaluate only these images (default: every gt image).
        per_class: also return ``"AP_per_class"`` and ``"AP50_per_class"``: category name →
            AP@[.5:.95] and AP@.5 (nan where the class has no gt).
        ap50_only: match at IoU 0.5 over the "all" area range only and return ``AP50`` (and
            ``AP50_per_class``): the same AP50, without the other nine thresholds and three
            area ranges COCOeval matches for the rest (a live figure, recomputed often).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` as floats in [0, 1] or nan (see module
        docstring), plus the per-class dicts when asked; ``{"AP50"}`` with ``ap50_only``.
    """
    coco_gt = load_coco(gt)
    coco_dt = _load_results(coco_gt, results)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if image_ids is not None:
        evaluator.params.imgIds = sorted(image_ids)
    if ap50_only:  # what summarize() reads for AP50: IoU .50, area "all" (first), 100 dets
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.areaRng = evaluator.params.areaRng[:1]
        evaluator.params.areaRngLbl = evaluator.params.areaRngLbl[:1]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        if not ap50_only:
            evaluator.summarize()
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall, classes, areas, dets]
    if ap50_only:
        p = precision[0, :, :, 0, -1]
        out: dict[str, Any] = {"AP50": float(p[p > -1].mean()) if (p > -1).any() else float("nan")}
    else:
        stats = [float("nan") if s < 0 else float(s) for s in evaluator.stats[: len(SUMMARY_KEYS)]]
        out = dict(zip(SUMMARY_KEYS, stats))
    if per_class:
        # IoU thresholds: every one, or .50 (the first); area "all" and maxDets 100 are index
        # 0 and -1, as in summarize()
        thresholds = {"AP_per_class": slice(None), "AP50_per_class": 0}
        if ap50_only:
            del thresholds["AP_per_class"]
        names = [coco_gt.cats[c].get("name", str(c)) for c in evaluator.params.catIds]
        for key, iou in thresholds.items():
            out[key] = {}
            for k, name in enumerate(names):
                p = precision[iou, :, k, 0, -1]
                p = p[p > -1]
                out[key][name] = float(p.mean()) if p.size else float("nan")
    return out


def _as_numpy(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape((-1, *shape_tail))


def coco_from_arrays(
    gt_boxes: Sequence[Any],
    gt_labels: Sequence[Any],
    pred_boxes: Sequence[Any],
    pred_scores: Sequence[Any],
    pred_labels: Sequence[Any],
    *,
    gt_iscrowd: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    min_height: float = 0.0,
) -> tuple[dict, list[dict]]:
    """An in-memory COCO gt dict and result list from per-image arrays.

    Every argument is a list with one entry per image (numpy arrays, torch tensors or lists):
    boxes ``[N, 4]`` XYXY pixels, labels ``[N]`` contiguous 0-based class ids, scores ``[N]``,
    ``gt_iscrowd`` ``[N]`` (crowd regions are ignored by COCOeval rather than missed).
    Image ``i`` gets ``image_id = i``; class ``c`` gets ``category_id = c + 1`` (named
    ``class_names[c]`` when given). The gt ``area`` is the box area (no polygons here), which is
    what decides APs/APm/APl. ``image_sizes`` ``(h, w)`` are only recorded in the image entries.

    ``min_height`` (pixels) applies KITTI's height rule: gt boxes lower than it become ignore
    regions (crowd: neither found nor missed) and predictions lower than it are dropped, so AP
    measures the objects that are large enough to be required. 0 keeps every box.

    Returns ``(gt, results)``, ready for :func:`coco_evaluate`.
    """
    n = len(gt_boxes)
    lengths = {len(gt_labels), len(pred_boxes), len(pred_scores), len(pred_labels)}
    if gt_iscrowd is not None:
        lengths.add(len(gt_iscrowd))
    if image_sizes is not None:
        lengths.add(len(image_sizes))
    if lengths != {n}:
        raise ValueError(f"per-image lists must all have {n} entries, got lengths {lengths}")

    images, annotations, results = [], [], []
    seen_labels: set[int] = set()
    for i in range(n):
        image = {"id": i}
        if image_sizes is not None:
            image["height"], image["width"] = (int(v) for v in image_sizes[i])
        images.append(image)

        boxes = _as_numpy(gt_boxes[i], np.float64, (4,))
        labels = _as_numpy(gt_labels[i], np.int64)
        crowd = (
            np.zeros(len(boxes), np.int64)
            if gt_iscrowd is None
            else _as_numpy(gt_iscrowd[i], np.int64)
        )
        if not len(boxes) == len(labels) == len(crowd):
            raise ValueError(f"image {i}: {len(boxes)} gt boxes but {len(labels)} labels")
        for box, label, is_crowd in zip(boxes, labels, crowd):
            w, h = box[2] - box[0], box[3] - box[1]
            is_crowd = is_crowd or h < min_height
            annotations.append(
                {
                    # ids start at 1: COCOeval treats a matched gt id of 0 as "unmatched".
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": int(is_crowd),
                }
            )
            seen_labels.add(int(label))

        boxes = _as_numpy(pred_boxes[i], np.float64, (4,))
        scores = _as_numpy(pred_scores[i], np.float64)
        labels = _as_numpy(pred_labels[i], np.int64)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image {i}: {len(boxes)} predicted boxes, {len(scores)} scores, "
                f"{len(labels)} labels"
            )
        for box, score, label in zip(boxes, scores, labels):
            if box[3] - box[1] < min_height:
                continue
            results.append(
                {
                    "image_id": i,
                    "category_id": int(label) + 1,
                    "bbox": [
                        float(box[0]),
                        float(box[1]),
                        float(box[2] - box[0]),
                        float(box[3] - box[1]),
                    ],
                    "score": float(score),
                }
            )
            seen_labels.add(int(label))

    if class_names is not None:
        if seen_labels and max(seen_labels) >= len(class_names):
            raise ValueError(
                f"label {max(seen_labels)} out of range for {len(class_names)} class names"
            )
        categories = [{"id": c + 1, "name": name} for c, name in enumerate(class_names)]
    else:
        categories = [{"id": c + 1, "name": str(c)} for c in sorted(seen_labels)]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results
