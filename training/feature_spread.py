r"""Does a checkpoint's backbone still see its input? A collapse probe.

    python -m training.feature_spread runs/h1_cpu/cls_pvt_v2_b1/seed0/checkpoints/step_0000750.pt

For each backbone level: the standard deviation between images at a fixed position and
channel, over the overall standard deviation of that level's features, on simulator test
frames. A healthy network keeps a sizeable share at every level; a collapsed one (a run whose
loss jumped to chance and stayed) drops towards zero from the level where it stopped
depending on the image, and its classifier names one class for every frame.
"""

from __future__ import annotations

import argparse
import sys

import torch

from pvt_mtl_ros.model import MultiTaskNet
from pvt_mtl_ros.model.checkpoint import CheckpointError, load_checkpoint
from training.datasets.sim import SimDataset


def feature_spread(model: MultiTaskNet, images: torch.Tensor) -> list[float]:
    """Between-image over overall std per backbone level; ``images`` uint8 ``[B,3,H,W]``, B > 1."""
    if images.shape[0] < 2:
        raise ValueError("feature_spread needs at least two images")
    with torch.no_grad():
        levels = model.eval().backbone(model.normalize(images))
    out = []
    for f in levels:
        flat = f.float().reshape(f.shape[0], -1)
        out.append(float(flat.std(dim=0).mean() / flat.std().clamp_min(1e-12)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    ap.add_argument("checkpoints", nargs="+", help="pvt_mtl_ros checkpoints to probe")
    ap.add_argument("--frames", type=int, default=16, help="simulator test frames (>= 2)")
    args = ap.parse_args(argv)
    if args.frames < 2:
        ap.error("--frames must be at least 2")
    data = SimDataset(args.frames, split="test", tasks=["classification"])
    images = torch.stack([data[i][0] for i in range(args.frames)])
    for path in args.checkpoints:
        try:
            model = load_checkpoint(path)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        spread = feature_spread(model, images)
        print(f"{path}: " + ", ".join(f"level {i + 1} {s:.3g}" for i, s in enumerate(spread)))
        if "classification" in model.cfg.tasks:
            with torch.no_grad():
                logits = model(model.normalize(images))["classification"]
            named = logits.argmax(1).unique().numel()
            print(f"  classifier: {named} distinct top-1 classes over {args.frames} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
