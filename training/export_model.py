"""Ship a trained checkpoint: FP16 weights + its config, in one small file.

    python -m training.export_model runs/demo_sim_b0/checkpoint.pt \\
        pvt_mtl_ros/weights/demo_mtl_b0.pt --half [--input-size 416 544]

--input-size sets the input the node letterboxes frames into by default (the config's
`input_size`; the node's `input_size` parameter overrides it): a deployment choice between
rate and small-object accuracy, not a change of weights.
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
    parser.add_argument(
        "--input-size", nargs=2, type=int, metavar=("H", "W"),
        help="default network input (multiples of 32); default: the checkpoint's",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint)
        extra = dict(read_checkpoint(args.checkpoint)["extra"])
    except CheckpointError as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 2
    extra.setdefault("exported_from", args.checkpoint)  # a re-export keeps the training run
    if args.input_size:
        h, w = args.input_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            print(f"export_model: --input-size {h} {w}: positive multiples of 32", file=sys.stderr)
            return 2
        model.cfg.input_size = (h, w)
    path = save_checkpoint(args.out, model, extra=extra, half=args.half)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {model.cfg.name}, "
        f"tasks {'+'.join(model.tasks)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
