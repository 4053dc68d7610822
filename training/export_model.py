"""Ship a trained checkpoint: FP16 weights + its config, in one small file.

    python -m training.export_model runs/demo_sim_b0/checkpoint.pt \\
        pvt_mtl_ros/weights/demo_mtl_b0.pt --half
"""

from __future__ import annotations

import argparse
import sys

from pvt_mtl_ros.model import CheckpointError, load_checkpoint, save_checkpoint
from pvt_mtl_ros.model.checkpoint import read_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_model", description=__doc__)
    parser.add_argument("checkpoint", help="a training checkpoint")
    parser.add_argument("out", help="where to write the shipped checkpoint")
    parser.add_argument("--half", action="store_true", help="store weights as FP16")
    args = parser.parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint)
        extra = dict(read_checkpoint(args.checkpoint)["extra"], exported_from=args.checkpoint)
    except CheckpointError as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 2
    path = save_checkpoint(args.out, model, extra=extra, half=args.half)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {model.cfg.name}, "
        f"tasks {'+'.join(model.tasks)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
