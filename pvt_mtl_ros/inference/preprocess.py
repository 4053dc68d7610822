"""Letterbox preprocessing: keep-ratio resize into the input size, pad to a multiple of 32.

The resized image sits at the top-left of the padded canvas (as mmdet's Resize + Pad), so the
inverse mapping of a box is a division by the per-axis scale and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Letterbox:
    """Where one original image sits in the network input."""

    original: tuple[int, int]  # (h, w) of the source image
    resized: tuple[int, int]  # (h, w) of the resized image inside the canvas

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.resized[1] / self.original[1], self.resized[0] / self.original[0]

    def boxes_to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        sx, sy = self.scale_xy
        out = boxes / boxes.new_tensor([sx, sy, sx, sy])
        h, w = self.original
        return torch.stack(
            [
                out[:, 0].clamp(0, w),
                out[:, 1].clamp(0, h),
                out[:, 2].clamp(0, w),
                out[:, 3].clamp(0, h),
            ],
            dim=1,
        )

    def boxes_to_network(self, boxes: torch.Tensor) -> torch.Tensor:
        sx, sy = self.scale_xy
        return boxes * boxes.new_tensor([sx, sy, sx, sy])


def fit_size(original: tuple[int, int], input_size: tuple[int, int]) -> tuple[int, int]:
    """Largest (h, w) with the original's aspect ratio that fits in input_size."""
    h, w = original
    scale = min(input_size[0] / h, input_size[1] / w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_chw_uint8(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxWx3 numpy RGB or 3xHxW tensor -> uint8 tensor 3xHxW, with a clear error otherwise."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not torch.is_tensor(image) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a 3xHxW image tensor, got {getattr(image, 'shape', image)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"empty image of shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    return image


def letterbox_batch(
    images: list[torch.Tensor],
    input_size: tuple[int, int],
    size_divisor: int = 32,
    pad_to_input: bool = False,
) -> tuple[torch.Tensor, list[Letterbox]]:
    """uint8 3xHxW images -> float [B,3,H,W] in [0, 255] on the images' device, and the boxes.

    The canvas is the batch's largest resized size rounded up to `size_divisor`, or the whole
    input size (rounded up) with `pad_to_input`, for engines that want one fixed shape.
    """
    boxes = [
        Letterbox(tuple(im.shape[-2:]), fit_size(tuple(im.shape[-2:]), input_size)) for im in images
    ]
    if pad_to_input:
        canvas_h, canvas_w = input_size
    else:
        canvas_h = max(b.resized[0] for b in boxes)
        canvas_w = max(b.resized[1] for b in boxes)
    canvas_h += -canvas_h % size_divisor
    canvas_w += -canvas_w % size_divisor
    batch = images[0].new_zeros((len(images), 3, canvas_h, canvas_w), dtype=torch.float32)
    for i, (im, box) in enumerate(zip(images, boxes)):
        x = im.unsqueeze(0).float()
        if box.resized != box.original:
            # antialias as torchvision.transforms.v2.Resize does in training
            x = F.interpolate(
                x, size=box.resized, mode="bilinear", align_corners=False, antialias=True
            )
        batch[i, :, : box.resized[0], : box.resized[1]] = x[0]
    return batch, boxes
