"""Named model configs: the multi-task models, their single-task twins and the rivals.

All share one factory (`MultiTaskNet`) and the paper's class sets (ImageNet-1k, COCO-80,
ADE20K-150), so parameter counts, FLOPs and speed compare like with like.
"""

from __future__ import annotations

from ..conventions import ADE20K_CLASSES, COCO_CLASSES, IMAGENET_NUM_CLASSES
from .config import ClassificationConfig, DetectionConfig, ModelConfig, SegmentationConfig

PVT_V2 = (
    "pvt_v2_b0",
    "pvt_v2_b1",
    "pvt_v2_b2",
    "pvt_v2_b2_li",
    "pvt_v2_b3",
    "pvt_v2_b4",
    "pvt_v2_b5",
)
SWIN = "swin_tiny_patch4_window7_224"  # SwinMTL-style
REGNET = "regnety_032"  # HydraNet-style: RegNet -> BiFPN -> heads (~ PVT v2-B2 size)


def _tasks(which: tuple[str, ...]) -> dict:
    out = {}
    if "classification" in which:
        out["classification"] = ClassificationConfig(
            classes=[f"imagenet_{i}" for i in range(IMAGENET_NUM_CLASSES)]
        )
    if "detection" in which:
        out["detection"] = DetectionConfig(classes=list(COCO_CLASSES))
    if "segmentation" in which:
        out["segmentation"] = SegmentationConfig(classes=list(ADE20K_CLASSES))
    return out


ALL = ("classification", "detection", "segmentation")
SHORT = {"cls": "classification", "det": "detection", "seg": "segmentation"}


def preset(name: str) -> ModelConfig:
    """'mtl_<backbone>', '<cls|det|seg>_<backbone>', 'swinmtl_tiny', 'hydranet_regnety_032'."""
    if name == "swinmtl_tiny":
        return ModelConfig(backbone=SWIN, name=name, **_tasks(ALL))
    if name == "hydranet_regnety_032":
        return ModelConfig(
            backbone=REGNET, neck="bifpn", neck_channels=160, name=name, **_tasks(ALL)
        )
    kind, _, backbone = name.partition("_")
    if backbone in PVT_V2 and (kind == "mtl" or kind in SHORT):
        tasks = ALL if kind == "mtl" else (SHORT[kind],)
        return ModelConfig(backbone=backbone, name=name, **_tasks(tasks))
    raise KeyError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")


def preset_names() -> list[str]:
    names = [f"mtl_{b}" for b in PVT_V2]
    names += [f"{k}_{b}" for b in PVT_V2 for k in SHORT]
    return names + ["swinmtl_tiny", "hydranet_regnety_032"]


# The research question's table: MTL B0/B1/B2 vs single-task B1/B2 and the two rivals.
COMPARISON = (
    "mtl_pvt_v2_b0", "mtl_pvt_v2_b1", "mtl_pvt_v2_b2",
    "cls_pvt_v2_b1", "det_pvt_v2_b1", "seg_pvt_v2_b1",
    "cls_pvt_v2_b2", "det_pvt_v2_b2", "seg_pvt_v2_b2",
    "swinmtl_tiny", "hydranet_regnety_032",
)  # fmt: skip
