"""What both replay modes share: options, the output folder, decoding frames, writing the
predictions bag, scoring, counting, and the report written at the end whatever happened."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pvt_mtl_ros.inference.backends import BackendSpec
from pvt_mtl_ros.inference.predictor import PredictionResult
from pvt_mtl_ros.metrics import latency_stats
from pvt_mtl_ros.metrics.serialize import json_safe
from pvt_mtl_ros.model.checkpoint import remove_orphans
from pvt_mtl_ros.ros.image_conversion import ImageConversionError, msg_to_array
from pvt_mtl_ros.ros.inprocess import stamp_ns  # header stamps: the key of gt and reports
from pvt_mtl_ros.visualize import colorize, palette

from . import report as rep
from .bag_io import IMAGE_TYPES, LATCHED_QOS, BagSink, BagSource, RawFrame, ReplayError
from .ground_truth import GroundTruth
from .messages import Builder
from .score import Scorer

log = logging.getLogger("pvt_mtl_ros.replay")
MAX_WARNINGS_KEPT = 100  # in the report; the count covers all
MAX_WARNINGS_LOGGED = 20
BAG_NAME, OVERLAY_DIR = "predictions", "overlays"
OWNED = (BAG_NAME, OVERLAY_DIR, "report.json", "report.md")  # what a run writes in OUT
INCOMPLETE = ".incomplete"  # OUT + this: a failed run's results beside earlier complete ones
OVERLAY_MIN_SCORE = 0.3  # boxes drawn on overlays (all are in the bag)
OVERLAY_MAX_BOXES = 50
COLOUR_TOPIC = "segmentation/color"  # rgb8, as the node's outputs.segmentation_color


@dataclass
class ReplayOptions:
    bag: Path
    checkpoint: Path
    out: Path
    topics: list[str] | None = None
    gt: Path | None = None
    mode: str = "offline"
    batch_size: int = 8
    device: str = "cpu"
    backend: str = "eager"  # inference backend spec (pvt_mtl_ros.inference.backends)
    score_thresh: float | None = None
    distro: str | None = None
    out_storage: str | None = None  # default: the input bag's
    copy_images: bool = True
    max_frames: int | None = None
    overlays: int = 3
    overwrite: bool = False
    progress: bool = True
    rate: float = 1.0  # real-time mode: playback speed (1 = recorded rate)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decoded:
    topic: str
    log_time: int
    header: Any
    stamp: int
    rgb: np.ndarray
    t_read: float  # perf_counter when the message was read


def _spec_name(text: str) -> str:
    """A spec as backends name it ("channels_last" -> "eager+channels_last")."""
    try:
        return str(BackendSpec.parse(text))
    except ValueError:
        return text


def output_namespaces(topics: list[str]) -> dict[str, str]:
    """Camera topic -> namespace of its outputs, as the node names them (<camera>/detections):
    /cam/image_raw and /cam/image_raw/compressed -> /cam. Topics that would share a namespace
    keep their full name."""

    def ns(topic: str) -> str:
        parts = [p for p in topic.split("/") if p]
        if parts and parts[-1] == "compressed":
            parts = parts[:-1]
        if len(parts) > 1 and parts[-1].startswith("image"):
            parts = parts[:-1]
        return "/" + "/".join(parts)

    names = {t: ns(t) for t in topics}
    counts = defaultdict(int)
    for name in names.values():
        counts[name] += 1
    return {t: (n if counts[n] == 1 else t) for t, n in names.items()}


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(opts: ReplayOptions) -> None:
    """Before anything is read or written: OUT is a folder (or absent), overlaps no input,
    and holds no earlier replay unless --overwrite. Nothing is removed here: a new run's
    results replace the old ones only at the end (ReplaySession.finish)."""
    out = opts.out
    if out.exists() and not out.is_dir():
        raise ReplayError(f"--out {out} is a file, not a folder: choose a folder for the results")
    resolved = out.resolve()
    for label, given in (("bag", opts.bag), ("ground truth", opts.gt)):
        if given is None:
            continue
        path = Path(given).resolve()
        if path.is_file() and (path.parent / "metadata.yaml").is_file():
            path = path.parent  # a storage file of a bag folder: the folder is the input
        if _within(resolved, path):
            raise ReplayError(
                f"--out {out} is inside the input {label} {given}: replay never writes into "
                "its input; choose another --out"
            )
        for name in OWNED:
            if _within(path, resolved / name):
                raise ReplayError(
                    f"the input {label} {given} is {out / name}, which a replay into {out} "
                    "would replace; move it or choose another --out"
                )
    present = [name for name in OWNED if (out / name).exists()]
    if present and not opts.overwrite:
        raise ReplayError(
            f"{out} holds an earlier replay ({', '.join(present)}); "
            "pass --overwrite or choose another --out"
        )


def staging_folder(out: Path) -> Path:
    """A new hidden folder beside OUT where this run writes; folders of killed runs (their
    pid is in the name) are removed first."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(out.parent, f".{out.name}.replay.pid*.tmp")
        prefix = f".{out.name}.replay.pid{os.getpid()}."
        return Path(tempfile.mkdtemp(dir=out.parent, prefix=prefix, suffix=".tmp"))
    except OSError as err:
        raise ReplayError(f"cannot write beside --out {out}: {err}") from None


def publish(stage: Path, target: Path) -> None:
    """Move a run's results from `stage` into `target`: each earlier entry is renamed aside
    just before the new one is renamed in (same file system: atomic renames), and removed
    only after; then `stage` goes."""
    target.mkdir(parents=True, exist_ok=True)
    aside = stage / ".replaced"
    aside.mkdir()
    for name in OWNED:
        new, old = stage / name, target / name
        if old.exists() or old.is_symlink():
            os.replace(old, aside / name)
        if new.exists():
            os.replace(new, old)
    shutil.rmtree(stage)


class ReplaySession:
    """`open()` the bag, ground truth and output bag; `finish()` (call it in a finally) closes
    the output bag and writes the report with whatever was computed, even after an error."""

    def __init__(self, opts: ReplayOptions, model: Any) -> None:
        self.opts = opts
        self.t_start = time.perf_counter()
        self.status, self.error = "running", None
        self.warnings: list[str] = []
        self.warning_count = 0
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.counts: dict[str, dict[str, int]] = {}
        self.sink: BagSink | None = None
        self.source: BagSource | None = None
        self.scorer: Scorer | None = None
        self.picker = rep.OverlayPicker(opts.overlays)
        self.report_extra: dict[str, Any] = {}
        self.model = model
        # the backend that runs: a Predictor's (offline), the node's (real-time, set once it
        # has started); None for a stand-in model without one
        spec = getattr(model, "spec", None)
        self.backend = None if spec is None else str(spec)
        cfg = model.cfg
        self.names = {
            "detection": cfg.detection.classes if cfg.detection else None,
            "segmentation": cfg.segmentation.classes if cfg.segmentation else None,
            "classification": cfg.classification.classes if cfg.classification else None,
        }
        seg = self.names["segmentation"]
        self.palette = palette(len(seg)) if seg else None  # the node's colours
        self.gt: GroundTruth | None = None
        self.t_first: float | None = None
        self.label_info_written: set[str] = set()
        self.work = staging_folder(opts.out)  # results move to OUT in finish()
        self.published_to: Path | None = None

    def open(self) -> None:
        """Bag, topics, ground truth, output bag; a ReplayError says which is wrong."""
        opts = self.opts
        self.source = BagSource(opts.bag, opts.distro)
        self.topics = self.source.select(opts.topics)
        self.namespaces = output_namespaces(self.topics)
        self.counts = {
            t: {
                "in_bag": self.source.topics[t].count,
                "read": 0,
                "processed": 0,
                "undecodable": 0,
                "with_gt": 0,
            }
            for t in self.topics
        }
        self.gt = GroundTruth(opts.gt) if opts.gt else None
        self.scorer = Scorer(self.gt, *self.names.values())
        storage = opts.out_storage or self.source.storage
        self.sink = BagSink(self.work / BAG_NAME, storage, self.source.distro)
        self.build = Builder(self.sink.typestore)

    # -- frames ----------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNINGS_KEPT:
            self.warnings.append(message)
        if self.warning_count <= MAX_WARNINGS_LOGGED:
            log.warning(message)

    def decode(self, frame: RawFrame) -> Decoded | None:
        """Count, copy into the output bag, deserialize and convert to RGB; None (with a
        warning) for a frame that cannot be decoded."""
        t0 = time.perf_counter()
        self.t_first = self.t_first or t0
        counts = self.counts[frame.topic]
        counts["read"] += 1
        if self.opts.copy_images:
            self.sink.copy(frame)
        try:
            msg = self.source.deserialize(frame)
        except Exception as err:  # rosbags raises struct/index/unicode errors on bad bytes
            counts["undecodable"] += 1
            self.warn(
                f"{frame.topic} at {frame.log_time} ns: cannot deserialize "
                f"{frame.msgtype} ({type(err).__name__}: {err}); frame skipped"
            )
            return None
        try:
            rgb = msg_to_array(msg, "rgb8")
        except ImageConversionError as err:
            counts["undecodable"] += 1
            self.warn(
                f"{frame.topic} stamp {stamp_ns(msg.header)}: undecodable image "
                f"({err}); frame skipped"
            )
            return None
        self.latency["decode"].append(1000 * (time.perf_counter() - t0))
        return Decoded(frame.topic, frame.log_time, msg.header, stamp_ns(msg.header), rgb, t0)

    def predict_kwargs(self) -> dict[str, Any]:
        return {} if self.opts.score_thresh is None else {"score_thresh": self.opts.score_thresh}

    def record(self, frame: Decoded, result: PredictionResult, log_time: int | None = None) -> None:
        """Write one frame's predictions (stamped with its header) and score it."""
        self.write_predictions(frame, result, frame.log_time if log_time is None else log_time)
        counts = self.counts[frame.topic]
        counts["processed"] += 1
        had_gt, score, score_name = self.scorer.add(frame.topic, frame.stamp, result)
        counts["with_gt"] += int(had_gt)
        self.picker.offer(score, (frame.topic, frame.stamp, frame.rgb, result, score_name))

    def write_predictions(self, frame: Decoded, result: PredictionResult, log_time: int) -> None:
        ns = self.namespaces[frame.topic]
        header = self.build.copy_header(frame.header)
        det, seg, cls = self.names.values()
        if ns not in self.label_info_written:
            self.label_info_written.add(ns)
            thresh = self.opts.score_thresh
            if thresh is None and self.model.cfg.detection:
                thresh = self.model.cfg.detection.score_thresh
            for out, names, threshold in (
                ("detections", det, thresh or 0.0),
                ("segmentation", seg, 0.0),
                ("scene", cls, 0.0),
            ):
                if names is not None:
                    msg = self.build.label_info(header, names, threshold)
                    self.sink.write(f"{ns}/{out}/label_info", log_time, msg, LATCHED_QOS)
        if result.boxes is not None:
            msg = self.build.detections(header, result.boxes, result.scores, result.labels, det)
            self.sink.write(f"{ns}/detections", log_time, msg)
        if result.mask is not None:
            self.sink.write(
                f"{ns}/segmentation", log_time, self.build.segmentation(header, result.mask)
            )
            # the node's colours: a mono8 class-id image looks black in RViz and Foxglove
            colour = self.build.rgb_image(header, colorize(result.mask, self.palette))
            self.sink.write(f"{ns}/{COLOUR_TOPIC}", log_time, colour)
        if result.class_probs is not None:
            self.sink.write(
                f"{ns}/scene", log_time, self.build.scene(header, result.class_probs, cls)
            )

    # -- the end ---------------------------------------------------------------------------
    @contextmanager
    def recording(self):
        """Run a replay: any error or interruption is recorded as the status, then re-raised,
        so that `finish()` (in the caller's `finally`) writes what was computed so far."""
        try:
            yield
        except ReplayError as err:
            self.fail("failed", err)
            raise
        except KeyboardInterrupt:
            self.fail("interrupted", "stopped by the user (SIGINT/SIGTERM)")
            raise
        except Exception as err:
            self.fail("failed", f"{type(err).__name__}: {err}")
            raise

    def fail(self, status: str, error: BaseException | str) -> None:
        self.status = status
        self.error = str(error)

    def destination(self) -> Path | None:
        """Where the results go: OUT, unless OUT holds earlier results and this run did not
        complete (then OUT + .incomplete beside it, or nowhere when it never opened its
        input: its error is the result)."""
        out = self.opts.out
        earlier = any((out / name).exists() for name in OWNED)
        if not earlier or self.status == "complete":
            return out
        return out.with_name(out.name + INCOMPLETE) if self.sink is not None else None

    def finish(self) -> dict[str, Any]:
        """Close the output bag, draw the overlays, write the report; move the results into
        place (`destination`); return the report."""
        if self.status == "running":
            self.status = "complete"
        read = sum(c["read"] for c in self.counts.values())
        if self.status == "complete" and not sum(c["processed"] for c in self.counts.values()):
            self.fail(
                "no frames",
                f"none of the {read} frames read could be processed (see the warnings)"
                if read
                else "the selected topics hold no frames",
            )
        target = self.destination()
        wall = time.perf_counter() - (self.t_first or self.t_start)
        if self.sink is not None:
            try:
                self.sink.close()
            except Exception as err:  # report it; the report itself must still be written
                self.warn(f"closing the output bag failed: {type(err).__name__}: {err}")
        if self.source is not None:
            self.source.close()
        metrics = {}
        try:
            metrics = self.scorer.compute() if self.scorer else {}
        except Exception as err:  # the counts and latencies are still worth writing
            self.warn(f"computing the metrics failed: {type(err).__name__}: {err}")
        for message in self.scorer.warnings if self.scorer else ():
            self.warn(message)
        report = self.report(metrics, wall, target or self.opts.out)
        report["overlays"] = self.overlays()
        rep.write(report, self.work)
        if target is None:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            publish(self.work, target)
        self.published_to = target
        report["results"] = None if target is None else str(target)
        return json_safe(report)

    def report(self, metrics: dict, wall: float, out: Path) -> dict[str, Any]:
        totals = {
            k: sum(c[k] for c in self.counts.values())
            for k in ("in_bag", "read", "processed", "undecodable", "with_gt")
        }
        cfg = self.model.cfg
        processed = totals["processed"]
        infer_s = sum(self.latency.get("inference_batch", [])) / 1000
        report = {
            "bag": str(self.opts.bag),
            "storage": self.source.storage if self.source else None,
            "checkpoint": str(self.opts.checkpoint),
            "ground_truth": str(self.opts.gt) if self.opts.gt else None,
            "mode": self.opts.mode,
            "device": self.opts.device,
            "backend": self.backend,
            "backend_requested": _spec_name(self.opts.backend),
            "model": {
                "backbone": cfg.backbone,
                "input_size": list(cfg.input_size),
                "tasks": list(cfg.tasks),
            },
            "status": self.status,
            "error": self.error,
            "output_bag": str(out / BAG_NAME) if self.sink else None,
            "output_topics": dict(sorted(self.sink.counts.items())) if self.sink else {},
            "frames": totals,
            "topics": {
                t: {
                    "type": self.source.topics[t].msgtype,
                    "transport": IMAGE_TYPES[self.source.topics[t].msgtype],
                    **c,
                }
                for t, c in self.counts.items()
            },
            "metrics": metrics,
            "latency_ms": {k: latency_stats(v) for k, v in self.latency.items()},
            "wall_s": wall,
            "throughput_fps": processed / wall if processed and wall > 0 else None,
            "inference_fps": processed / infer_s if processed and infer_s > 0 else None,
            "warnings": self.warnings,
            "warning_count": self.warning_count,
            "ignored_topics": self.source.ignored_topics() if self.source else {},
        }
        report.update(self.report_extra)
        return report

    def overlays(self) -> list[dict[str, Any]]:
        out = []
        for n, (kind, score, item) in enumerate(self.picker.picks()):
            topic, stamp, rgb, result, score_name = item
            name = f"{OVERLAY_DIR}/{n:02d}_{kind}_{stamp}.png"
            try:
                rep.save_png(self.work / name, self.overlay(topic, stamp, rgb, result))
            except Exception as err:  # an overlay is never worth losing the report for
                self.warn(f"overlay {name} failed: {type(err).__name__}: {err}")
                continue
            out.append(
                {
                    "kind": kind,
                    "topic": topic,
                    "stamp": stamp,
                    "score": score,
                    "score_name": score_name,
                    "file": name,
                }
            )
        return out

    def overlay(
        self, topic: str, stamp: int, rgb: np.ndarray, result: PredictionResult
    ) -> np.ndarray:
        """Prediction on the left; ground truth (where there is some) on the right."""
        det, seg, cls = self.names.values()
        boxes = labels = None
        if result.boxes is not None:
            keep = np.flatnonzero(result.scores >= OVERLAY_MIN_SCORE)[:OVERLAY_MAX_BOXES]
            boxes = result.boxes[keep]
            labels = [f"{det[i]} {s:.2f}" for i, s in zip(result.labels[keep], result.scores[keep])]
        caption = "prediction"
        if result.class_probs is not None:
            caption += f": {cls[int(np.argmax(result.class_probs))]}"
        left = rep.draw(rgb, result.mask, boxes, labels, len(seg or ()), caption)
        if self.gt is None:
            return left
        gt_mask = self.gt.mask(topic, stamp) if seg is not None else None
        if gt_mask is not None and gt_mask.shape == rgb.shape[:2]:
            gt_mask = self.scorer.seg_target(gt_mask)
        else:
            gt_mask = None
        gt_boxes, gt_labels = None, None
        image_id = self.gt.det_image_id(topic, stamp)
        if image_id is not None:
            anns = self.gt.coco.imgToAnns.get(image_id, [])
            names = {c["id"]: c["name"] for c in self.gt.coco.dataset["categories"]}
            gt_boxes = np.array(
                [
                    [
                        a["bbox"][0],
                        a["bbox"][1],
                        a["bbox"][0] + a["bbox"][2],
                        a["bbox"][1] + a["bbox"][3],
                    ]
                    for a in anns
                ]
            ).reshape(-1, 4)
            gt_labels = [names.get(a["category_id"], "?") for a in anns]
        scene = self.gt.scene(topic, stamp)
        caption = "ground truth" + (f": {scene}" if scene else "")
        right = rep.draw(rgb, gt_mask, gt_boxes, gt_labels, len(seg or ()), caption)
        return np.concatenate([left, right], axis=1)
