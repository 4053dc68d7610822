"""Metrics shared by training, rosbag replay and the simulator (no training imports here)."""

from pvt_mtl_ros.metrics.classification import TopKAccuracy
from pvt_mtl_ros.metrics.detection import coco_evaluate, coco_from_arrays, load_coco
from pvt_mtl_ros.metrics.segmentation import ConfusionMatrix

__all__ = ["ConfusionMatrix", "TopKAccuracy", "coco_evaluate", "coco_from_arrays", "load_coco"]
