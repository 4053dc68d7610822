"""Metrics against pycocotools called directly and against hand-computed values."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pvt_mtl_ros.metrics import ConfusionMatrix, TopKAccuracy, coco_evaluate, coco_from_arrays


@pytest.fixture(scope="module")
def coco_json(shared_data):
    return shared_data / "coco128" / "annotations" / "instances.json"


@pytest.fixture(scope="module")
def jittered_results(coco_json):
    """Detections made from the gt: jittered boxes, random scores, some misses and a false
    positive per image, so AP is well inside (0, 1)."""
    rng = np.random.default_rng(0)
    data = json.loads(coco_json.read_text())
    results = []
    for ann in data["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        dx, dy, dw, dh = rng.normal(0, 0.08, 4) * [w, h, w, h]
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [x + dx, y + dy, max(w + dw, 1.0), max(h + dh, 1.0)],
                "score": float(rng.random()),
            }
        )
    for image in data["images"]:
        results.append(
            {"image_id": image["id"], "category_id": 1, "bbox": [5, 5, 50, 40], "score": 0.3}
        )
    return results


def _pycocotools_stats(coco_json, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_json))
        evaluator = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:6]


KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def test_coco_evaluate_equals_pycocotools(coco_json, jittered_results):
    expected = _pycocotools_stats(coco_json, jittered_results)
    assert 0.2 < expected[0] < 0.9
    data = json.loads(coco_json.read_text())
    for gt in (coco_json, str(coco_json), data):
        ours = coco_evaluate(gt, jittered_results)
        np.testing.assert_allclose([ours[k] for k in KEYS], expected, rtol=0, atol=1e-12)
    # our call leaves the caller's result dicts as they were (loadRes writes into them)
    assert "id" not in jittered_results[0] and "area" not in jittered_results[0]


def test_ap50_only_is_the_same_ap50_for_less_work(coco_json, jittered_results):
    """The live lines' shortcut (IoU .5 and the "all" area only) gives the full run's AP50,
    overall and per class, images restricted or not, and no figure it did not compute."""
    full = coco_evaluate(coco_json, jittered_results, per_class=True)
    quick = coco_evaluate(coco_json, jittered_results, per_class=True, ap50_only=True)
    assert set(quick) == {"AP50", "AP50_per_class"}
    assert quick["AP50"] == pytest.approx(full["AP50"], abs=1e-12) and 0.2 < quick["AP50"] < 1
    np.testing.assert_allclose(
        [quick["AP50_per_class"][n] for n in full["AP50_per_class"]],
        list(full["AP50_per_class"].values()), atol=1e-12,
    )  # fmt: skip
    some = [r["image_id"] for r in jittered_results][:3]
    assert coco_evaluate(coco_json, jittered_results, image_ids=some, ap50_only=True)[
        "AP50"
    ] == pytest.approx(coco_evaluate(coco_json, jittered_results, image_ids=some)["AP50"])
    assert coco_evaluate(coco_json, [], ap50_only=True)["AP50"] == 0.0  # gt, nothing found


def test_coco_from_arrays_matches_json(coco_json, jittered_results):
    data = json.loads(coco_json.read_text())
    cat_ids = sorted(c["id"] for c in data["categories"])
    names = {c["id"]: c["name"] for c in data["categories"]}
    image_ids = [im["id"] for im in data["images"]]

    def xyxy(bbox):
        x, y, w, h = bbox
        return [x, y, x + w, y + h]

    per_image = {i: {"gb": [], "gl": [], "gc": [], "pb": [], "ps": [], "pl": []} for i in image_ids}
    for ann in data["annotations"]:
        entry = per_image[ann["image_id"]]
        entry["gb"].append(xyxy(ann["bbox"]))
        entry["gl"].append(cat_ids.index(ann["category_id"]))
        entry["gc"].append(ann["iscrowd"])
    for res in jittered_results:
        entry = per_image[res["image_id"]]
        entry["pb"].append(xyxy(res["bbox"]))
        entry["ps"].append(res["score"])
        entry["pl"].append(cat_ids.index(res["category_id"]))
    lists = {k: [per_image[i][k] for i in image_ids] for k in ("gb", "gl", "gc", "pb", "ps", "pl")}
    gt, results = coco_from_arrays(
        lists["gb"],
        [torch.tensor(v, dtype=torch.int64) for v in lists["gl"]],  # torch accepted too
        lists["pb"],
        lists["ps"],
        lists["pl"],
        gt_iscrowd=lists["gc"],
        class_names=[names[c] for c in cat_ids],
    )
    ours = coco_evaluate(gt, results, per_class=True)
    expected = _pycocotools_stats(coco_json, jittered_results)
    # areas here are box areas, not polygon areas, so only the all-area metrics must agree
    np.testing.assert_allclose([ours["AP"], ours["AP50"], ours["AP75"]], expected[:3], atol=1e-12)
    assert len(ours["AP_per_class"]) == 80 and "person" in ours["AP_per_class"]


def _one_image(pred_boxes, pred_labels, scores=None, class_names=("a", "b", "c")):
    gt_boxes = [[10, 10, 60, 60], [100, 100, 300, 300]]
    scores = [0.9] * len(pred_boxes) if scores is None else scores
    return coco_from_arrays(
        [gt_boxes], [[0, 1]], [pred_boxes], [scores], [pred_labels], class_names=class_names
    )


def test_coco_perfect_empty_and_per_class():
    gt, results = _one_image([[10, 10, 60, 60], [100, 100, 300, 300]], [0, 1])
    out = coco_evaluate(gt, results, per_class=True)
    assert out["AP"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0)
    assert math.isnan(out["APs"])  # no gt box is small (area < 32²)
    assert out["AP_per_class"]["a"] == pytest.approx(1.0)
    assert math.isnan(out["AP_per_class"]["c"])  # class without gt

    # IoU 0.714 for class b: found at IoU .50 (AP50 1) but at 5 of the 10 COCO thresholds only
    gt, results = _one_image([[10, 10, 60, 60], [100, 100, 300, 380]], [0, 1])
    out = coco_evaluate(gt, results, per_class=True)
    assert out["AP50_per_class"]["b"] == pytest.approx(1.0)
    assert out["AP_per_class"]["b"] == pytest.approx(0.5)

    gt, results = _one_image([], [])
    out = coco_evaluate(gt, results)
    assert results == [] and out["AP"] == 0.0 and out["APm"] == 0.0 and math.isnan(out["APs"])

    gt, results = coco_from_arrays([np.zeros((0, 4))], [[]], [[]], [[]], [[]])
    assert all(math.isnan(v) for v in coco_evaluate(gt, results).values())

    gt, _ = _one_image([], [])
    bad = [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]
    with pytest.raises(ValueError, match="image ids"):
        coco_evaluate(gt, bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        coco_evaluate("missing.json", [])


def test_min_height_ignores_small_gt_and_drops_small_predictions():
    # one image: a 40-px car that is found, a 10-px car that is missed, and a 12-px false box
    gt_boxes = [np.array([[10, 10, 60, 50], [200, 100, 205, 110]], np.float32)]
    gt_labels = [np.array([0, 0])]
    pred_boxes = [np.array([[11, 10, 60, 51], [300, 300, 310, 312]], np.float32)]
    pred_scores = [np.array([0.6, 0.9])]
    pred_labels = [np.array([0, 0])]
    args = (gt_boxes, gt_labels, pred_boxes, pred_scores, pred_labels)

    every = coco_evaluate(*coco_from_arrays(*args))["AP50"]
    kitti = coco_evaluate(*coco_from_arrays(*args, min_height=25))["AP50"]
    # all sizes: the false box outranks the hit and the small car is missed -> AP50 well below 1
    assert every < 0.5
    assert kitti == pytest.approx(1.0)
    gt, results = coco_from_arrays(*args, min_height=25)
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 1]
    assert len(results) == 1

    # a tall-enough detection on an ignored (20-px) car is neither a hit nor a false positive
    gt_boxes = [np.array([[10, 10, 60, 50], [200, 100, 210, 120]], np.float32)]
    pred_boxes = [np.array([[11, 10, 60, 51], [199, 97, 211, 123]], np.float32)]
    on_ignored = (gt_boxes, gt_labels, pred_boxes, [np.array([0.6, 0.9])], pred_labels)
    assert coco_evaluate(*coco_from_arrays(*on_ignored))["AP50"] == pytest.approx(1.0)
    assert coco_evaluate(*coco_from_arrays(*on_ignored, min_height=25))["AP50"] == pytest.approx(
        1.0
    )
    gt, results = coco_from_arrays(*on_ignored, min_height=25)
    assert len(results) == 2 and gt["annotations"][1]["iscrowd"] == 1


def test_confusion_matrix_hand_computed():
    target = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 0, 0]])  # the ignored pixel's prediction must not count
    metric = ConfusionMatrix(num_classes=4)
    metric.update(pred, target)
    out = metric.compute()
    # class 0: tp 1, gt 2, pred 2 → 1/3; class 1: tp 2, gt 2, pred 3 → 2/3;
    # class 2: tp 0, gt 1 → 0; class 3 absent from gt and pred → nan, left out
    np.testing.assert_allclose(out["IoU"], [1 / 3, 2 / 3, 0.0, np.nan])
    assert out["mIoU"] == pytest.approx(1 / 3)
    assert out["pixel_accuracy"] == pytest.approx(3 / 5)
    np.testing.assert_allclose(out["accuracy"], [1 / 2, 1.0, 0.0, np.nan])
    assert out["mean_accuracy"] == pytest.approx(1 / 2)

    # torch input, in two updates, gives the same matrix
    torch_metric = ConfusionMatrix(num_classes=4)
    torch_metric.update(torch.tensor(pred[:1]), torch.tensor(target[:1]))
    torch_metric.update(torch.tensor(pred[1:]), target[1:])
    np.testing.assert_array_equal(torch_metric.matrix, metric.matrix)


def test_confusion_matrix_absent_classes_across_images():
    metric = ConfusionMatrix(num_classes=3, ignore_index=255)
    # image 1 has no class 2 at all; image 2 has it → class 2 counts in the whole evaluation
    metric.update(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    metric.update(np.array([2, 0]), np.array([2, 2]))
    out = metric.compute()
    # class 0: tp 2, gt 2, pred 3 → 2/3; class 1: 1; class 2: tp 1, gt 2, pred 1 → 1/2
    np.testing.assert_allclose(out["IoU"], [2 / 3, 1.0, 1 / 2])
    assert out["mIoU"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert out["pixel_accuracy"] == pytest.approx(5 / 6)

    # predicted only, never in gt: IoU 0 and counted; accuracy nan
    metric = ConfusionMatrix(num_classes=3)
    metric.update(np.array([0, 1]), np.array([0, 0]))
    out = metric.compute()
    np.testing.assert_allclose(out["IoU"], [1 / 2, 0.0, np.nan])
    assert out["mIoU"] == pytest.approx(1 / 4)
    np.testing.assert_allclose(out["accuracy"], [1 / 2, np.nan, np.nan])

    empty = ConfusionMatrix(num_classes=2).compute()
    assert math.isnan(empty["mIoU"]) and math.isnan(empty["pixel_accuracy"])
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(num_classes=2).update(np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(num_classes=2).update(np.zeros((2, 4, 4)), np.zeros((4, 4)))


def test_topk_accuracy_hand_computed():
    scores = torch.tensor(
        [
            [0.1, 0.5, 0.4],  # ranking 1, 2, 0
            [0.7, 0.2, 0.1],  # ranking 0, 1, 2
            [0.2, 0.3, 0.5],  # ranking 2, 1, 0
            [0.3, 0.3, 0.4],  # ranking 2, then 0/1 tied
        ]
    )
    target = torch.tensor([2, 0, 0, 2])
    metric = TopKAccuracy(topk=(1, 2, 5))
    metric.update(scores[:2], target[:2])
    metric.update(scores[2:].numpy(), target[2:].numpy())
    out = metric.compute()
    assert out["top1"] == pytest.approx(2 / 4)  # samples 1 and 3
    assert out["top2"] == pytest.approx(3 / 4)  # + sample 0
    assert out["top5"] == 1.0  # k above the class count: every sample counts
    assert math.isnan(TopKAccuracy().compute()["top1"])


# --- the evaluators every tool uses (pvt_mtl_ros.metrics.evaluators) -------------------------


def test_detection_evaluator_by_name_equals_coco_from_arrays_by_id():
    from pvt_mtl_ros.metrics import DetectionEvaluator

    gt = [np.array([[0, 0, 10, 40], [20, 20, 60, 30]], float), np.array([[5, 5, 25, 50]], float)]
    gl = [np.array([0, 1]), np.array([0])]
    pb = [np.array([[0, 0, 10, 38], [50, 50, 60, 60]], float), np.array([[5, 6, 25, 50]], float)]
    ps = [np.array([0.9, 0.8]), np.array([0.7])]
    pl = [np.array([0, 1]), np.array([0])]
    direct = coco_evaluate(*coco_from_arrays(gt, gl, pb, ps, pl, class_names=["Car", "person"]))
    by_name = DetectionEvaluator(min_box_height=0.0)
    names = ["car", "PERSON "]  # one rule: case and spaces do not matter
    for i in range(2):
        by_name.update(gt[i], [names[c] for c in gl[i]], pb[i], ps[i], [names[c] for c in pl[i]])
    got = by_name.compute(per_class=True)
    assert got["AP50"] == pytest.approx(direct["AP50"]) and got["frames"] == 2
    assert got["gt_boxes_per_class"] == {"car": 2, "PERSON ": 1}
    assert got["AP50_per_class"]["PERSON "] == pytest.approx(0.0)  # its one box was missed
    tall = DetectionEvaluator(["car", "person"], min_box_height=25)
    for i in range(2):
        tall.update(gt[i], gl[i], pb[i], ps[i], pl[i])
    out = tall.compute(per_class=True)
    assert out["AP50"] == pytest.approx(1.0)  # the 10-px-high person is an ignore region
    assert out["AP50_all_sizes"] == pytest.approx(got["AP50"])
    live = tall.compute(per_class=True, ap50_only=True)  # the live lines' shortcut
    assert live["AP50"] == pytest.approx(out["AP50"]) and "AP50_all_sizes" not in live
    assert live["AP50_per_class"] == pytest.approx(out["AP50_per_class"], nan_ok=True)
    assert "AP" not in live
    tall.reset()
    assert tall.compute()["frames"] == 0


def test_segmentation_and_scene_evaluators_match_classes_by_name():
    from pvt_mtl_ros.metrics import SceneEvaluator, SegmentationEvaluator, latency_stats

    seg = SegmentationEvaluator(["sky", "road", "car"], gt_classes=["Road", "Sky", "Tree"])
    gt = np.array([[0, 0, 1, 2]])  # Road Road Sky Tree
    pred = np.array([[1, 2, 0, 0]])  # road car  sky sky
    seg.update(pred, gt)
    m = seg.compute()
    assert seg.missing == ["Tree"] and m["frames"] == 1
    # Tree is ignored; road 1/2, sky 1/1, car is not a class this ground truth can label
    assert m["IoU"] == {"road": pytest.approx(0.5), "sky": pytest.approx(1.0)}
    assert m["mIoU"] == pytest.approx(0.75)
    scene = SceneEvaluator(topk=(1,))
    scene.update([("Urban_Day", 0.9), ("highway_day", 0.1)], "urban_day")
    scene.update([("highway_day", 0.6), ("urban_day", 0.4)], "urban_day")
    assert scene.compute() == {"frames": 2, "top1": 0.5}
    stats = latency_stats([10.0, 20.0, 30.0, 40.0])
    assert set(stats) == {"count", "mean", "p50", "p90", "p95", "p99", "max"}
    assert stats["p90"] == pytest.approx(37.0) and latency_stats([]) == {"count": 0}
