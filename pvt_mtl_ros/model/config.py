"""Model configuration: plain dataclasses that a checkpoint stores and rebuilds from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .. import config_loader
from ..config_loader import ConfigError
from ..conventions import IGNORE_INDEX

TASKS = ("classification", "detection", "segmentation")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ClassificationConfig:
    classes: list[str]
    dropout: float = 0.0


@dataclass
class DetectionConfig:
    classes: list[str]
    num_convs: int = 4
    center_sampling_radius: float = 1.5
    score_thresh: float = 0.05
    nms_iou: float = 0.6
    max_detections: int = 100
    topk_candidates: int = 1000


@dataclass
class SegmentationConfig:
    classes: list[str]
    channels: int = 128  # Semantic FPN head width (the PVT v2 paper's setting)
    ignore_index: int = IGNORE_INDEX
    dropout: float = 0.1


TASK_CONFIGS = {
    "classification": ClassificationConfig,
    "detection": DetectionConfig,
    "segmentation": SegmentationConfig,
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model: backbone, neck, tasks, input size, normalisation."""

    backbone: str = "pvt_v2_b0"
    neck: str = "fpn"  # "fpn" or "bifpn"
    # 128, not the papers' 256: a 256-channel FPN doubles the neck + head FLOPs (its stride-4
    # output conv alone is 19 GFLOPs at 512x512) for a camera-rate model; the paper-recipe
    # training configs set 256.
    neck_channels: int = 128
    bifpn_repeats: int = 3
    drop_path_rate: float = 0.0
    classification: ClassificationConfig | None = None
    detection: DetectionConfig | None = None
    segmentation: SegmentationConfig | None = None
    input_size: tuple[int, int] = (512, 512)  # (height, width) the letterbox fits images into
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    name: str = field(default="")

    def __post_init__(self) -> None:
        if self.neck not in ("fpn", "bifpn"):
            raise ConfigError(f"neck must be 'fpn' or 'bifpn', got {self.neck!r}")
        if not self.tasks:
            raise ConfigError(
                "a model needs at least one task (classification/detection/segmentation)"
            )
        for task in self.tasks:
            if not getattr(self, task).classes:
                raise ConfigError(f"{task}: the class list is empty")
        if self.detection is not None and self.neck_channels % 32:
            raise ConfigError(
                f"neck_channels must be a multiple of 32 with a detection head "
                f"(its GroupNorm has 32 groups), got {self.neck_channels}"
            )
        h, w = self.input_size
        if h <= 0 or w <= 0:
            raise ConfigError(f"input_size must be positive, got {self.input_size}")
        self.input_size = (int(h), int(w))
        self.mean, self.std = tuple(self.mean), tuple(self.std)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if getattr(self, t) is not None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Read through the project's one config reader: unknown keys and values of the wrong
        type are a ConfigError naming the key (``model.detection.num_convs``)."""
        return config_loader.from_dict(cls, data, "model")

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)
