"""The multi-task network: one backbone, one neck, any subset of three heads.

`MultiTaskNet.forward` returns a dict per task; `forward_flat` is the same graph as a flat
tuple of tensors in `output_names` order, without the FCOS anchors (they depend on the input
size alone, `anchors_for` rebuilds them): what the ONNX export, torch.compile, CUDA graphs and
TensorRT run. `flatten` / `unflatten` convert between the two forms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .config import ModelConfig
from .heads import ClassificationHead, DetectionHead, SemanticFPNHead
from .heads.detection import OUTPUT_KEYS, STRIDES
from .necks import DETECTION_LEVELS, SEGMENTATION_LEVELS, build_neck

SIZE_DIVISOR = 32


def output_names(tasks: tuple[str, ...] | list[str]) -> list[str]:
    """Flat output names, in the graph's order, for the model's tasks: "classification",
    "detection.<key>" per conv-head output, "segmentation"."""
    names = []
    if "classification" in tasks:
        names.append("classification")
    if "detection" in tasks:
        names += [f"detection.{k}" for k in OUTPUT_KEYS]
    if "segmentation" in tasks:
        names.append("segmentation")
    return names


def level_sizes(size: tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) of P3..P7 for an input of `size`: P3-P5 by the strides of the padded input,
    P6/P7 by a stride-2 step each (3x3 conv or pool with padding 1: ceil(n / 2))."""
    h = size[0] + (-size[0] % SIZE_DIVISOR)
    w = size[1] + (-size[1] % SIZE_DIVISOR)
    sizes = [(h // s, w // s) for s in STRIDES[:3]]
    for _ in STRIDES[3:]:
        ph, pw = sizes[-1]
        sizes.append((-(-ph // 2), -(-pw // 2)))
    return sizes


def anchors_for(size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """The FCOS points the detection head would return for an input of `size` (h, w)."""
    shapes = [torch.empty((0, 0, h, w), device=device) for h, w in level_sizes(size)]
    return DetectionHead.points(shapes)


def unflatten(
    names: list[str], tensors: list[torch.Tensor], size: tuple[int, int]
) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
    """Flat outputs -> the `MultiTaskNet.forward` dict, anchors rebuilt for the input size."""
    out: dict = {}
    for name, t in zip(names, tensors):
        task, _, key = name.partition(".")
        if key:
            out.setdefault(task, {})[key] = t
        else:
            out[task] = t
    if "detection" in out:
        out["detection"]["anchors"] = anchors_for(size, tensors[0].device)
    return out


def flatten(out: dict) -> list[torch.Tensor]:
    """The `MultiTaskNet.forward` dict -> its tensors in the graph's order (no anchors)."""
    flat = []
    for name in output_names(tuple(out)):
        task, _, key = name.partition(".")
        flat.append(out[task][key] if key else out[task])
    return flat


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

    @property
    def output_names(self) -> list[str]:
        """The names of `forward_flat`'s outputs, in order (the exported graph's)."""
        return output_names(self.tasks)

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
        return self._run(images, tasks, anchors=True)

    def forward_flat(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`forward` of every head as a flat tuple in `output_names` order, without anchors."""
        return tuple(flatten(self._run(images, self.tasks, anchors=False)))

    def _run(self, images: torch.Tensor, tasks: tuple[str, ...], anchors: bool) -> dict:
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
                head = self.heads["detection"]
                levels = [pyramid[k] for k in DETECTION_LEVELS]
                out["detection"] = head(levels) if anchors else head.raw(levels)
            if "segmentation" in tasks:
                levels = [pyramid[k] for k in SEGMENTATION_LEVELS]
                logits = self.heads["segmentation"](levels)
                logits = F.interpolate(
                    logits, size=images.shape[-2:], mode="bilinear", align_corners=False
                )
                out["segmentation"] = logits[..., :h, :w]
        return out


class FlatForward(nn.Module):
    """`model.forward_flat` as a module's forward: the form torch.onnx.export and
    torch_tensorrt take. `names` are its outputs' names."""

    def __init__(self, model: MultiTaskNet) -> None:
        super().__init__()
        self.model = model
        self.names = model.output_names

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.forward_flat(images)
