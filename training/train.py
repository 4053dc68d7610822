r"""Train from a YAML config.

Examples:
  python -m training.train --config training/configs/joint_cpu.yaml
  python -m training.train --config training/configs/joint_cpu.yaml --resume
  python -m training.train --config ... --set train.steps=20 --set data.num_workers=2

Several GPUs or nodes (DistributedDataParallel; NCCL on GPU, gloo on CPU):
  torchrun --nproc_per_node 8 -m training.train --config training/configs/coco_det_1x.yaml
  torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 \
      --nproc_per_node 8 -m training.train --config ...   (node_rank 1 on the other node)
"""

from __future__ import annotations

import argparse
import os
import sys

from pvt_mtl_ros.model import CheckpointError
from training import distributed
from training.config import TrainConfigError, load_config
from training.evaluate import evaluate_checkpoint
from training.logs import log, setup_console
from training.trainer import train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="training YAML")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="STATE",
        help="continue from a training-state file (default: the newest in output_dir)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.steps=100 or data.train.0.batch_size=4",
    )
    parser.add_argument(
        "--stop-after", type=int, default=None, help="leave after N steps (checkpoint kept)"
    )
    parser.add_argument(
        "--evaluate", action="store_true", help="evaluate the finished model on data.val"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_console()
    try:
        cfg = load_config(args.config, args.set)
        result = train(cfg, resume=args.resume, stop_after=args.stop_after)
    except (TrainConfigError, FileNotFoundError, CheckpointError) as e:
        log.error("%s", e)  # one line: a wrong or hostile input file is not a crash
        return 2
    finally:
        distributed.cleanup()
    if result.first:
        log.info(
            "per-task loss first -> last logged: %s; %.1f images/s",
            ", ".join(
                f"{t} {result.first[t]:.3f} -> {result.last.get(t, float('nan')):.3f}"
                for t in result.first
            ),
            result.images_per_s,
        )
    if args.evaluate and result.checkpoint is not None and int(os.environ.get("RANK", "0")) == 0:
        evaluate_checkpoint(result.checkpoint, cfg, result.output_dir / "eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
