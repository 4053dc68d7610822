"""Inference: letterbox preprocessing and the images -> results path (no ROS here)."""

from .predictor import PredictionResult, predict
from .preprocess import Letterbox, letterbox_batch, to_chw_uint8

__all__ = ["Letterbox", "PredictionResult", "letterbox_batch", "predict", "to_chw_uint8"]
