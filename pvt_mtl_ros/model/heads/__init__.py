"""Task heads: classification, FCOS detection, Semantic FPN segmentation."""

from .classification import ClassificationHead
from .detection import DetectionHead
from .segmentation import SemanticFPNHead

__all__ = ["ClassificationHead", "DetectionHead", "SemanticFPNHead"]
