"""Per-class weights for the segmentation loss: median frequency balancing (Eigen & Fergus,
2015; SegNet's CamVid recipe). mIoU averages over classes, and thin or rare classes (poles,
signs, people) hold few pixels, so unweighted cross-entropy all but ignores them.

    freq(c)   = pixels of c / pixels of the images in which c appears
    weight(c) = median over classes of freq / freq(c)

counted on the first `samples` training masks of every dataset that labels segmentation, as
training sees them (after the augmentation). Classes never seen get weight 1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)


def median_frequency_weights(masks, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """`masks`: an iterable of integer [H, W] masks -> float32 [num_classes] weights."""
    pixels = torch.zeros(num_classes, dtype=torch.float64)
    present_in = torch.zeros(num_classes, dtype=torch.float64)  # pixels of images with c
    for mask in masks:
        m = torch.as_tensor(mask).reshape(-1).long()
        m = m[m != ignore_index]
        if m.numel() and (m.min() < 0 or m.max() >= num_classes):
            raise ValueError(f"a mask holds class ids outside 0..{num_classes - 1}")
        counts = torch.bincount(m, minlength=num_classes).double()
        pixels += counts
        present_in += (counts > 0).double() * m.numel()
    seen = present_in > 0
    if not seen.any():
        raise ValueError("no labelled pixels in the masks: cannot compute class weights")
    freq = torch.where(seen, pixels / present_in.clamp(min=1), torch.ones_like(pixels))
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[seen] = freq[seen].median() / freq[seen]
    return weights.float()


def training_masks(sources: Sequence, samples: int):
    """The first `samples` masks of each source that labels segmentation, transforms applied.
    The global RNG is restored afterwards, so counting does not change the training run."""
    with torch.random.fork_rng(devices=[]):
        for source in sources:
            if "segmentation" not in source.tasks:
                continue
            data = source.samples()
            for i in range(min(samples, len(data))):
                yield data[i][1]["mask"]


def segmentation_class_weights(
    spec, sources: Sequence, classes: list[str], ignore_index: int, samples: int = 64
) -> torch.Tensor | None:
    """`loss.seg_class_weights` (None, "median_frequency" or one weight per class) -> a
    tensor, or None for plain cross-entropy."""
    if spec is None:
        return None
    if spec == "median_frequency":
        masks = training_masks(sources, samples)
        weights = median_frequency_weights(masks, len(classes), ignore_index)
    elif isinstance(spec, str):
        raise ValueError(f"loss.seg_class_weights: 'median_frequency' or a list, got {spec!r}")
    else:
        if len(spec) != len(classes) or min(spec) <= 0:
            raise ValueError(
                f"loss.seg_class_weights: {len(spec)} weights for {len(classes)} classes "
                f"({', '.join(classes)}); each must be > 0"
            )
        weights = torch.tensor([float(w) for w in spec], dtype=torch.float32)
    log.info(
        "segmentation class weights: %s",
        ", ".join(f"{c} {w:.2f}" for c, w in zip(classes, weights.tolist())),
    )
    return weights
