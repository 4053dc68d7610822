"""`pvt-mtl-replay BAG [--checkpoint C] [--gt GT] [--out OUT]`: replay a rosbag2 recording
through the network (the shipped model unless --checkpoint says otherwise, found as the
perception node finds its default), score it, write the predictions as a bag and a report
(docs/REPLAY.md).

Exit status: 0 complete; 1 the run stopped early (the bag broke part-way, an interrupt) or
processed no frame, but what it computed is written; 2 nothing could run (bad bag, topic,
checkpoint, ground truth, --out). Every error is one line. Results are written beside OUT and
moved in at the end: an earlier replay in OUT (with --overwrite) is replaced only by a run
that completes; the results of one that does not go to OUT.incomplete.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from pvt_mtl_ros.inference.backends import BackendSpec
from pvt_mtl_ros.model import CheckpointError, load_checkpoint

from .bag_io import DISTROS, STORAGES, ReplayError
from .session import ReplayOptions


def default_out(bag: Path) -> Path:
    """BAG_replay beside the bag folder (never inside it: rosbag2 folders stay as recorded)."""
    bag = bag.resolve()
    if bag.is_file() and (bag.parent / "metadata.yaml").is_file():
        bag = bag.parent
    return bag.parent / f"{bag.stem if bag.is_file() else bag.name}_replay"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvt-mtl-replay",
        description="Replay a rosbag2 bag (sqlite3 or mcap, raw or compressed images) through "
        "the network: predictions bag, metrics against ground truth, latency, report.",
    )
    p.add_argument("bag", type=Path, help="rosbag2 folder, or a single .db3/.mcap file")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="model checkpoint (default: the shipped model, the perception node's default "
        "'checkpoint', looked up as the node does: working directory, then the package)",
    )
    p.add_argument("--topics", nargs="+", help="camera topics (default: every image topic)")
    p.add_argument("--gt", type=Path, help="ground-truth folder (docs/REPLAY.md)")
    p.add_argument("--out", type=Path, help="output folder (default: BAG_replay beside the bag)")
    p.add_argument("--mode", choices=("offline", "realtime"), default="offline")
    p.add_argument(
        "--rate", type=float, default=1.0, help="real-time mode: playback speed, 1 = as recorded"
    )
    p.add_argument(
        "--domain-id",
        type=int,
        help="real-time mode: ROS domain id (default: a random one, so that the replay never "
        "talks to a live system)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="offline mode batch size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--backend",
        default="eager",
        help="inference backend spec, e.g. channels_last, bf16, compile, onnxruntime, "
        "openvino+int8+bf16, fp16+cuda_graph (real-time mode: the node's backend "
        "parameter); what the machine cannot run falls back with a warning, and the report "
        "names what ran",
    )
    p.add_argument(
        "--score-thresh", type=float, help="detection score threshold (default: the checkpoint's)"
    )
    p.add_argument(
        "--distro",
        choices=sorted(DISTROS),
        help="message definitions (default: the bag's, else humble)",
    )
    p.add_argument("--out-storage", choices=sorted(STORAGES), help="default: the input's")
    p.add_argument(
        "--no-images", action="store_true", help="do not copy the camera topics into the output bag"
    )
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--overlays", type=int, default=3, help="best and worst frames drawn (each)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier replay in OUT")
    p.add_argument("--no-progress", action="store_true")
    return p


def default_checkpoint() -> Path:
    """The perception node's default checkpoint, resolved by the node's own rule."""
    from pvt_mtl_ros.ros.lifecycle import ConfigureError
    from pvt_mtl_ros.ros.perception_node import PARAMETERS, resolve_checkpoint

    try:
        return resolve_checkpoint(PARAMETERS["checkpoint"].default)
    except ConfigureError as err:
        raise ReplayError(f"no --checkpoint given, and the shipped model: {err}") from None


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.rate <= 0:
        p.error("--rate must be positive")
    try:
        BackendSpec.parse(args.backend)
    except ValueError as err:
        p.error(f"--backend: {err}")
    if args.mode == "realtime":
        try:
            from .realtime import run_realtime as run
        except ImportError as err:
            p.error(f"real-time mode needs pvt_mtl_ros.ros.perception_node and rclpy ({err})")
    else:
        from .offline import run_offline as run
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        checkpoint = args.checkpoint or default_checkpoint()
    except ReplayError as err:
        print(f"pvt-mtl-replay: error: {err}", file=sys.stderr)
        return 2
    opts = ReplayOptions(
        bag=args.bag,
        checkpoint=checkpoint,
        out=args.out or default_out(args.bag),
        topics=args.topics,
        gt=args.gt,
        mode=args.mode,
        batch_size=args.batch_size,
        device=args.device,
        backend=args.backend,
        score_thresh=args.score_thresh,
        distro=args.distro,
        out_storage=args.out_storage,
        copy_images=not args.no_images,
        max_frames=args.max_frames,
        overlays=args.overlays,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
        rate=args.rate,
        extra={"domain_id": args.domain_id},
    )
    # SIGTERM finishes like Ctrl-C (bag closed, report written); only the main thread may
    # set handlers, and the previous one comes back (main() also runs inside tests).
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        # real-time mode: the node loads its own copy; this one only names the classes
        device = "cpu" if opts.mode == "realtime" else opts.device
        model = load_checkpoint(opts.checkpoint, map_location=device)
        report = run(opts, model)
    except (ReplayError, CheckpointError) as err:
        print(f"pvt-mtl-replay: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pvt-mtl-replay: interrupted; partial results written", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    results = Path(report["results"]) if report.get("results") else None
    if results is not None:
        print((results / "report.md").read_text(), end="")
        print(f"\nreport: {results / 'report.json'}, {results / 'report.md'}")
    if report["status"] != "complete":
        kept = "" if results == opts.out else f" (the earlier replay in {opts.out} is kept)"
        print(f"pvt-mtl-replay: {report['status']}: {report['error']}{kept}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
