"""Per-task losses and their weighted sum over a batch with partial labels.

A sample's target carries only the keys of the tasks it labels (see docs/ARCHITECTURE.md), so
each task's loss is computed over the images that have its labels and skipped when none do.
"""

from __future__ import annotations

import torch

from .heads import ClassificationHead, SemanticFPNHead


def to_float32(x):
    """Reduced-precision floating tensors in nested dicts/lists -> float32: the network's
    outputs before the losses, whatever autocast ran the network in."""
    if isinstance(x, dict):
        return {k: to_float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_float32(v) for v in x)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
    return x


def task_losses(
    model, outputs: dict, targets: list[dict], seg_class_weights: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Loss terms per task ('cls', 'det_cls', 'det_box', 'det_ctr', 'seg') where labels exist;
    `seg_class_weights` weights the segmentation classes (training/class_weights.py)."""
    losses: dict[str, torch.Tensor] = {}
    if "classification" in outputs:
        idx = [i for i, t in enumerate(targets) if "label" in t]
        if idx:
            labels = torch.stack([torch.as_tensor(targets[i]["label"]) for i in idx])
            logits = outputs["classification"][idx]
            losses["cls"] = ClassificationHead.loss(logits, labels.to(logits.device).long())
    if "detection" in outputs:
        idx = [i for i, t in enumerate(targets) if "boxes" in t]
        if idx:
            out = outputs["detection"]
            sub = {k: (v if k == "anchors" else v[idx]) for k, v in out.items()}
            dev = out["anchors"].device
            det_targets = [
                {
                    "boxes": torch.as_tensor(targets[i]["boxes"])
                    .to(dev, torch.float32)
                    .reshape(-1, 4),
                    "labels": torch.as_tensor(targets[i]["labels"]).to(dev, torch.long),
                }
                for i in idx
            ]
            losses.update(model.heads["detection"].loss(sub, det_targets))
    if "segmentation" in outputs:
        idx = [i for i, t in enumerate(targets) if "mask" in t]
        if idx:
            logits = outputs["segmentation"][idx]
            masks = torch.stack([torch.as_tensor(targets[i]["mask"]) for i in idx])
            masks = masks.to(logits.device).long()
            if masks.shape[-2:] != logits.shape[-2:]:
                raise ValueError(
                    f"segmentation masks are {tuple(masks.shape[-2:])} but the logits are "
                    f"{tuple(logits.shape[-2:])}: pad masks with the images (255 = ignore)"
                )
            ignore = model.cfg.segmentation.ignore_index
            losses["seg"] = SemanticFPNHead.loss(logits, masks, ignore, seg_class_weights)
    return losses


TASK_OF_TERM = {
    "cls": "classification",
    "det_cls": "detection",
    "det_box": "detection",
    "det_ctr": "detection",
    "seg": "segmentation",
}


def combined_loss(
    losses: dict[str, torch.Tensor], weights: dict[str, float] | None = None
) -> torch.Tensor:
    """Weighted sum of the loss terms; `weights` are per task (default 1.0 each)."""
    weights = weights or {}
    if not losses:
        raise ValueError("no loss terms: the batch carries no labels for the model's tasks")
    return sum(weights.get(TASK_OF_TERM.get(k, k), 1.0) * v for k, v in losses.items())
