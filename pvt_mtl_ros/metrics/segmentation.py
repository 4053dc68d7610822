"""Semantic segmentation metrics from a confusion matrix accumulated over a whole evaluation.

Rule for classes that never occur: a class absent from both the ground truth and the
predictions of the WHOLE evaluation has IoU nan and is left out of mIoU (the mmseg
convention: nan per class, then nanmean). A class predicted but never in the gt has IoU 0 and
counts. Per-class accuracy (recall) is nan for a class absent from the gt and is left out of the
mean accuracy. Pixels whose target is ``ignore_index`` count nowhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pvt_mtl_ros.conventions import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates ``matrix[target, pred]`` pixel counts over ``update`` calls."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: Any, target: Any) -> None:
        """Add label maps of any equal shape (e.g. ``[H,W]`` or ``[B,H,W]``), numpy or torch.

        ``pred`` holds class ids (argmax of the logits), not scores.
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(
                f"pred shape {tuple(pred.shape)} differs from target shape "
                f"{tuple(target.shape)} (pass class ids, not logits)"
            )
        n = self.num_classes
        if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
            # Count on the tensors' device; only the n*n histogram comes back.
            pred = torch.as_tensor(pred).long().flatten()
            target = torch.as_tensor(target, device=pred.device).long().flatten()
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
            self._check_range(pred, target)
            counts = torch.bincount(target * n + pred, minlength=n * n).cpu().numpy()
        else:
            pred = np.asarray(pred).astype(np.int64).ravel()
            target = np.asarray(target).astype(np.int64).ravel()
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
            self._check_range(pred, target)
            counts = np.bincount(target * n + pred, minlength=n * n)
        self.matrix += counts.reshape(n, n)

    def _check_range(self, pred: Any, target: Any) -> None:
        # An out-of-range id would land in another class's cell of the flat bincount.
        for name, ids in (("target", target), ("pred", pred)):
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_classes):
                raise ValueError(
                    f"{name} holds ids outside 0..{self.num_classes - 1} "
                    f"(min {int(ids.min())}, max {int(ids.max())}) at non-ignored pixels"
                )

    def compute(self) -> dict[str, Any]:
        """``mIoU``, ``pixel_accuracy``, ``mean_accuracy`` (floats; nan before any pixel) and
        ``IoU``, ``accuracy`` (per-class float arrays, nan per the module rule)."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        gt = m.sum(axis=1)
        pred = m.sum(axis=0)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
            total = m.sum()
            pixel_acc = tp.sum() / total if total > 0 else float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-nan → nan
            miou = float(np.nanmean(iou)) if self.num_classes else float("nan")
            macc = float(np.nanmean(acc)) if self.num_classes else float("nan")
        return {
            "mIoU": miou,
            "pixel_accuracy": float(pixel_acc),
            "mean_accuracy": macc,
            "IoU": iou,
            "accuracy": acc,
        }
