"""The tiny random-weight networks the tests build: PVT v2-B0 with a 32-channel neck and one
FCOS conv, fast on this CPU. Their outputs are meaningless; what surrounds them is tested."""

import torch

from pvt_mtl_ros.model import (
    ClassificationConfig,
    DetectionConfig,
    ModelConfig,
    MultiTaskNet,
    SegmentationConfig,
    build_model,
)


def tiny_model(
    scene,
    detection,
    segmentation,
    input_size=(128, 160),
    name="test_tiny",
    neck="fpn",
    **detection_options,
) -> MultiTaskNet:
    """A three-task network (seeded, in eval mode) with these class lists; `detection_options`
    go to DetectionConfig."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="pvt_v2_b0",
        neck=neck,
        neck_channels=32,
        input_size=tuple(input_size),
        classification=ClassificationConfig(list(scene)),
        detection=DetectionConfig(list(detection), num_convs=1, **detection_options),
        segmentation=SegmentationConfig(list(segmentation), channels=32),
        name=name,
    )
    return build_model(cfg).eval()


def tiny_overrides(neck_channels: int, input_size, seg_channels: int) -> dict:
    """A study's `model_overrides` for a small network whose heads take their class lists from
    the training data (``from_data``)."""
    return {
        "neck_channels": neck_channels,
        "input_size": list(input_size),
        "classification": {"classes": "from_data"},
        "detection": {"classes": "from_data", "num_convs": 1},
        "segmentation": {"classes": "from_data", "channels": seg_channels},
    }
