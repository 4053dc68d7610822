"""The multi-task network and everything needed to build, load and describe it."""

from .backbone import Backbone, PretrainedReport, load_pretrained_backbone
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    ClassificationConfig,
    ConfigError,
    DetectionConfig,
    ModelConfig,
    SegmentationConfig,
)
from .losses import combined_loss, task_losses
from .multitask import FlatForward, MultiTaskNet
from .presets import COMPARISON, preset, preset_names


def build_model(cfg: ModelConfig | str) -> MultiTaskNet:
    """The one factory: a ModelConfig or a preset name -> MultiTaskNet."""
    return MultiTaskNet(preset(cfg) if isinstance(cfg, str) else cfg)


__all__ = [
    "COMPARISON", "Backbone", "CheckpointError", "ClassificationConfig", "ConfigError",
    "DetectionConfig", "FlatForward", "ModelConfig", "MultiTaskNet", "PretrainedReport",
    "SegmentationConfig", "build_model", "combined_loss", "load_checkpoint",
    "load_pretrained_backbone", "preset", "preset_names", "save_checkpoint", "task_losses",
]  # fmt: skip
