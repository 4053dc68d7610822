"""Necks shared by the dense heads: FPN (torchvision) and BiFPN (EfficientDet / HydraNet).

Both take C2..C5 and return a dict of maps with `out_channels` channels: "p2".."p5", plus
"p6", "p7" when `extra_levels` is set (detection). Segmentation reads P2-P5, detection P3-P7,
as in the PVT v2 paper's Semantic FPN and RetinaNet setups. Without `with_p2` (a model with
no segmentation head) the neck starts at C3, as RetinaNet's does: the stride-4 level is the
neck's most expensive map, and detection never reads it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")  # what a neck returns, finest first
DETECTION_LEVELS = LEVELS[1:]  # P3..P7, what the FCOS head reads
SEGMENTATION_LEVELS = LEVELS[:4]  # P2..P5, what the Semantic FPN head reads


class FPN(nn.Module):
    """torchvision's FPN on C2..C5; P6/P7 from C5 ("on_input", as RetinaNet in mmdet)."""

    def __init__(
        self, in_channels: list[int], out_channels: int, extra_levels: bool, with_p2: bool = True
    ) -> None:
        super().__init__()
        self.first = 0 if with_p2 else 1
        in_channels = in_channels[self.first :]
        extra = LastLevelP6P7(in_channels[-1], out_channels) if extra_levels else None
        # torchvision resizes each top-down map to its lateral's size, so odd sizes
        # (a 720-high input: 23 rows at stride 32, 45 at stride 16) need no special care.
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        names = LEVELS[self.first :]
        out = self.fpn(OrderedDict(zip(names, feats[self.first :])))
        return dict(zip(names, out.values()))


class _SeparableConv(nn.Sequential):
    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )


class _Fuse(nn.Module):
    """Fast normalised fusion: relu(w_i) / (sum + eps) weighted sum, then swish + sep conv."""

    def __init__(self, n_inputs: int, channels: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n_inputs))
        self.conv = _SeparableConv(channels)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-4)
        fused = sum(wi * x for wi, x in zip(w, inputs))
        return self.conv(F.silu(fused))


# Pooling one axis to ceil(n / 2) as adaptive max pooling does: (kernel of an even length,
# kernel of an odd length, stride, padding), for H and then W
_HALF_POOL = (
    ((2, 1), (3, 1), (2, 1), (1, 0)),
    ((1, 2), (1, 3), (1, 2), (0, 1)),
)


def half_max_pool(x: torch.Tensor) -> torch.Tensor:
    """``F.adaptive_max_pool2d(x, ceil(size / 2))``, written with ``max_pool2d`` so that it
    exports to ONNX (which has no adaptive max pool) at any, even symbolic, size. Per axis the
    adaptive bins of an even length n are [2i, 2i + 2), of an odd one [2i - 1, 2i + 2) cut to
    [0, n): a 2-window pool or a padded 3-window pool, chosen by the length's parity."""
    for dim, (even_k, odd_k, stride, pad) in zip((-2, -1), _HALF_POOL):
        even = F.max_pool2d(x, even_k, stride, ceil_mode=True)
        odd = F.max_pool2d(x, odd_k, stride, padding=pad)
        is_odd = torch.ones((), dtype=x.dtype, device=x.device).mul(x.shape[dim] % 2).bool()
        x = torch.where(is_odd, odd, even)
    return x


def _resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    if x.shape[-1] > ref.shape[-1]:  # downsample by max pooling, as EfficientDet does
        h, w = x.shape[-2:]
        if ref.shape[-2:] == ((h + 1) // 2, (w + 1) // 2):  # the next level: always, here
            return half_max_pool(x)
        return F.adaptive_max_pool2d(x, ref.shape[-2:])
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


class BiFPNLayer(nn.Module):
    """One top-down + bottom-up pass with learned, normalised fusion weights."""

    def __init__(self, n_levels: int, channels: int) -> None:
        super().__init__()
        self.top_down = nn.ModuleList(_Fuse(2, channels) for _ in range(n_levels - 1))
        # Middle levels fuse three inputs (input, top-down, lower output); the top one two.
        self.bottom_up = nn.ModuleList(
            _Fuse(3 if i < n_levels - 2 else 2, channels) for i in range(n_levels - 1)
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(feats)
        td = [None] * n
        td[-1] = feats[-1]
        for i in range(n - 2, -1, -1):
            td[i] = self.top_down[i]([feats[i], _resize_to(td[i + 1], feats[i])])
        out = [td[0]]
        for i in range(1, n):
            inputs = [feats[i], _resize_to(out[-1], feats[i])]
            if i < n - 1:
                inputs.insert(1, td[i])
            out.append(self.bottom_up[i - 1](inputs))
        return out


class BiFPN(nn.Module):
    """BiFPN over P2..P5 (+P6, P7 made by strided pooling of P5 when `extra_levels`)."""

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        extra_levels: bool,
        repeats: int = 3,
        with_p2: bool = True,
    ) -> None:
        super().__init__()
        self.first = 0 if with_p2 else 1
        in_channels = in_channels[self.first :]
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
            for c in in_channels
        )
        self.n_extra = 2 if extra_levels else 0
        self.layers = nn.Sequential(
            *(BiFPNLayer(len(in_channels) + self.n_extra, out_channels) for _ in range(repeats))
        )
        self.out_channels = out_channels

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        levels = [lat(f) for lat, f in zip(self.lateral, feats[self.first :])]
        for _ in range(self.n_extra):
            levels.append(F.max_pool2d(levels[-1], kernel_size=3, stride=2, padding=1))
        for layer in self.layers:
            levels = layer(levels)
        return dict(zip(LEVELS[self.first :], levels))


def build_neck(
    kind: str,
    in_channels: list[int],
    out_channels: int,
    extra_levels: bool,
    repeats: int = 3,
    with_p2: bool = True,
) -> nn.Module:
    if kind == "fpn":
        return FPN(in_channels, out_channels, extra_levels, with_p2)
    if kind == "bifpn":
        return BiFPN(in_channels, out_channels, extra_levels, repeats, with_p2)
    raise ValueError(f"unknown neck {kind!r}: expected 'fpn' or 'bifpn'")
