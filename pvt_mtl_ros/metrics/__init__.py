"""Metrics shared by training, rosbag replay, the simulator harness and the demo (no training
imports here): the evaluators (evaluators.py) over pycocotools, a confusion matrix and top-k."""

from pvt_mtl_ros.metrics.classification import TopKAccuracy
from pvt_mtl_ros.metrics.detection import coco_evaluate, coco_from_arrays, load_coco
from pvt_mtl_ros.metrics.evaluators import (
    ClassNames,
    DetectionEvaluator,
    SceneEvaluator,
    SegmentationEvaluator,
    latency_stats,
)
from pvt_mtl_ros.metrics.segmentation import ConfusionMatrix

__all__ = [
    "ClassNames",
    "ConfusionMatrix",
    "DetectionEvaluator",
    "SceneEvaluator",
    "SegmentationEvaluator",
    "TopKAccuracy",
    "coco_evaluate",
    "coco_from_arrays",
    "latency_stats",
    "load_coco",
]
