"""Top-k classification accuracy accumulated over batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class TopKAccuracy:
    """Fraction of samples whose target is among the k highest scores, for each k.

    With fewer than k classes every sample counts as correct for that k (as timm does).
    """

    def __init__(self, topk: Sequence[int] = (1, 5)) -> None:
        if not topk or min(topk) < 1:
            raise ValueError(f"topk must be positive integers, got {tuple(topk)}")
        self.topk = tuple(int(k) for k in topk)
        self.reset()

    def reset(self) -> None:
        self.correct = dict.fromkeys(self.topk, 0)
        self.count = 0

    def update(self, scores: Any, target: Any) -> None:
        """``scores`` ``[N, K]`` logits or probabilities, ``target`` ``[N]`` class ids;
        numpy or torch."""
        scores = torch.as_tensor(scores)
        target = torch.as_tensor(target, device=scores.device).long().reshape(-1)
        if scores.ndim != 2 or scores.shape[0] != target.shape[0]:
            raise ValueError(
                f"expected scores [N, K] and target [N], got {tuple(scores.shape)} and "
                f"{tuple(target.shape)}"
            )
        maxk = min(max(self.topk), scores.shape[1])
        top = scores.topk(maxk, dim=1).indices  # [N, maxk], best first
        hit = top == target[:, None]
        for k in self.topk:
            self.correct[k] += int(hit[:, : min(k, maxk)].any(dim=1).sum())
        self.count += int(target.shape[0])

    def compute(self) -> dict[str, float]:
        """``{"top1": ..., "top5": ...}`` in [0, 1]; nan before any sample."""
        return {
            f"top{k}": self.correct[k] / self.count if self.count else float("nan")
            for k in self.topk
        }
