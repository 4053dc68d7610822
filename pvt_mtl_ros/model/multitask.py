"""The multi-task network: one backbone, one neck, any subset of three heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .config import ModelConfig
from .heads import ClassificationHead, DetectionHead, SemanticFPNHead
from .necks import build_neck

SIZE_DIVISOR = 32


class MultiTaskNet(nn.Module):
    """PVT v2 (or any timm) backbone -> shared FPN/BiFPN -> classification/detection/segmentation.

    A single-task model is the same class built from a config with one task; the rivals
    (SwinMTL-style, HydraNet-style) differ only in `backbone` and `neck`.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, drop_path_rate=cfg.drop_path_rate)
        dense = cfg.detection is not None or cfg.segmentation is not None
        self.neck = (
            build_neck(
                cfg.neck,
                self.backbone.channels,
                cfg.neck_channels,
                extra_levels=cfg.detection is not None,
                repeats=cfg.bifpn_repeats,
                with_p2=cfg.segmentation is not None,
            )
            if dense
            else None
        )
        self.heads = nn.ModuleDict()
        if cfg.classification is not None:
            c = cfg.classification
            self.heads["classification"] = ClassificationHead(
                self.backbone.channels[-1], len(c.classes), c.dropout
            )
        if cfg.detection is not None:
            d = cfg.detection
            self.heads["detection"] = DetectionHead(
                cfg.neck_channels,
                len(d.classes),
                d.num_convs,
                d.center_sampling_radius,
                d.score_thresh,
                d.nms_iou,
                d.max_detections,
                d.topk_candidates,
            )
        if cfg.segmentation is not None:
            s = cfg.segmentation
            self.heads["segmentation"] = SemanticFPNHead(
                cfg.neck_channels, len(s.classes), s.channels, s.dropout
            )
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads.keys())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 255] float RGB [B,3,H,W] -> the network's normalised input."""
        return (images.to(self.mean.dtype) / 255.0 - self.mean) / self.std

    def forward(
        self, images: torch.Tensor, tasks: tuple[str, ...] | list[str] | None = None
    ) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """Normalised images [B,3,H,W] -> outputs of the requested heads (default: all).

        H and W need not be multiples of 32: the input is zero-padded at the bottom/right and
        the segmentation logits are cropped back, so box coordinates are unchanged.
        """
        tasks = self.tasks if tasks is None else tuple(tasks)
        unknown = [t for t in tasks if t not in self.heads]
        if unknown:
            raise ValueError(f"this model has no head for {unknown}; it has {list(self.tasks)}")
        h, w = images.shape[-2:]
        pad_h, pad_w = -h % SIZE_DIVISOR, -w % SIZE_DIVISOR
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        feats = self.backbone(images)
        out: dict = {}
        if "classification" in tasks:
            out["classification"] = self.heads["classification"](feats[-1])
        if "detection" in tasks or "segmentation" in tasks:
            pyramid = self.neck(feats)
            if "detection" in tasks:
                levels = [pyramid[k] for k in ("p3", "p4", "p5", "p6", "p7")]
                out["detection"] = self.heads["detection"](levels)
            if "segmentation" in tasks:
                levels = [pyramid[k] for k in ("p2", "p3", "p4", "p5")]
                logits = self.heads["segmentation"](levels)
                logits = F.interpolate(
                    logits, size=images.shape[-2:], mode="bilinear", align_corners=False
                )
                out["segmentation"] = logits[..., :h, :w]
        return out

    @torch.inference_mode()
    def predict(self, images, **kwargs):
        """Images of any size (numpy HxWx3 uint8 RGB, or uint8 tensors 3xHxW) -> results per
        image in the images' own pixels. See `pvt_mtl_ros.inference.predictor.predict`."""
        from ..inference.predictor import predict

        return predict(self, images, **kwargs)
