"""Semantic FPN head (Kirillov et al. 2019), as in the PVT v2 paper's ADE20K setup."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...conventions import IGNORE_INDEX


def _conv_gn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    groups = 32 if out_ch % 32 == 0 else 8
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.GroupNorm(groups, out_ch),
        nn.ReLU(inplace=True),
    )


class SemanticFPNHead(nn.Module):
    """Each of P2..P5 goes through 1..3 conv stages up to stride 4; the sum is classified.

    Each x2 upsampling goes to the next finer map's exact size, so inputs whose height or width
    is not a multiple of 32 work too.
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(4):  # P2 (stride 4) .. P5 (stride 32)
            convs = [
                _conv_gn_relu(in_channels if i == 0 else channels, channels)
                for i in range(max(1, level))
            ]
            self.scale_heads.append(nn.Sequential(*convs))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """P2..P5 -> logits at stride 4 (the caller upsamples to the input size)."""
        out = self.scale_heads[0](feats[0])
        for level in range(1, 4):
            x = feats[level]
            for step, conv in enumerate(self.scale_heads[level]):
                size = feats[level - 1 - step].shape[-2:]  # one level finer
                x = F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False)
            out = out + x
        return self.classifier(self.dropout(out))

    @staticmethod
    def loss(
        logits: torch.Tensor,
        masks: torch.Tensor,
        ignore_index: int = IGNORE_INDEX,
        class_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pixel cross-entropy; with `class_weights`, the weighted mean (torch's definition)."""
        if class_weights is not None:
            class_weights = class_weights.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, masks, weight=class_weights, ignore_index=ignore_index)
