"""`pvt-mtl-make-bag`: a labelled image folder -> an evaluation bag plus replay ground truth.

Frames are stamped start + i / rate in file-name order (CamVid's names are its frame order),
with the bag's log time equal to the stamp. Labels: class-id PNG masks (same stem as the
image), a COCO instances json (images matched by file_name), and/or a CSV of scene labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage
from tqdm import tqdm

from pvt_mtl_ros.conventions import ADE20K_CLASSES, CAMVID_CLASSES, IGNORE_INDEX

from .bag_io import BagSink, ReplayError
from .ground_truth import GroundTruthWriter
from .messages import Builder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
COMPRESSED_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
# name -> (classes, mask value meaning "unlabelled", offset subtracted from mask values)
CLASS_PRESETS = {
    "camvid": (list(CAMVID_CLASSES), 11, 0),
    "ade20k": (list(ADE20K_CLASSES), 0, 1),
}
NS = 1_000_000_000


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ReplayError(f"image folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ReplayError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return images


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ReplayError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, num_classes: int, ignore_value: int, offset: int) -> np.ndarray:
    """A stored mask -> ids 0..C-1 with 255 = ignore (the replay ground-truth convention)."""
    with PILImage.open(path) as image:  # PIL keeps palette indices
        raw = np.asarray(image).astype(np.int64)
    if raw.ndim != 2:
        raise ReplayError(f"{path}: expected a single-channel class-id mask, got {raw.shape}")
    ignore = raw == ignore_value
    ids = raw - offset
    bad = ~ignore & ((ids < 0) | (ids >= num_classes))
    if bad.any():
        raise ReplayError(
            f"{path}: values {np.unique(raw[bad])[:10].tolist()} are neither a class "
            f"(offset {offset}, {num_classes} classes) nor the ignore value {ignore_value}"
        )
    ids[ignore] = IGNORE_INDEX
    return ids


def load_classes(spec: str) -> tuple[list[str], int | None, int]:
    if spec in CLASS_PRESETS:
        return CLASS_PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise ReplayError(f"--classes {spec!r} is neither {sorted(CLASS_PRESETS)} nor a file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()], None, 0


def load_coco_boxes(path: Path) -> tuple[list[str], dict[str, tuple[list[dict], int, int]]]:
    """(class names by category id order, file_name -> (boxes, height, width))."""
    data = json.loads(path.read_text())
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    files = {im["id"]: im for im in data["images"]}
    boxes: dict[str, tuple[list[dict], int, int]] = {
        im["file_name"]: ([], im["height"], im["width"]) for im in data["images"]
    }
    for ann in data["annotations"]:
        image = files[ann["image_id"]]
        boxes[image["file_name"]][0].append(
            {
                "bbox": ann["bbox"],
                "class_id": index[ann["category_id"]],
                "iscrowd": ann.get("iscrowd", 0),
                "area": ann.get("area"),
            }
        )
    for entries, _, _ in boxes.values():
        for box in entries:
            if box["area"] is None:
                del box["area"]
    return [c["name"] for c in cats], boxes


def load_scenes(path: Path) -> dict[str, str]:
    """CSV with columns file,label (file name or stem)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"file", "label"} <= set(rows[0]):
        raise ReplayError(f"{path}: needs the columns file,label")
    return {row["file"]: row["label"] for row in rows}


def make_bag(
    images: Path,
    out: Path,
    masks: Path | None = None,
    classes: str | None = None,
    ignore_value: int | None = None,
    label_offset: int | None = None,
    coco: Path | None = None,
    scenes: Path | None = None,
    topic: str = "/camera/image_raw",
    compressed: bool = False,
    jpeg_quality: int | None = None,
    storage: str = "sqlite3",
    rate: float = 10.0,
    start_sec: float = 1_700_000_000.0,
    limit: int | None = None,
    frame_id: str = "camera",
    progress: bool = False,
) -> tuple[Path, Path, int]:
    """Write out/bag and out/gt; returns (bag path, gt path, frames written)."""
    for part in ("bag", "gt"):
        if (out / part).exists():
            raise ReplayError(f"{out / part} exists already; remove it or choose another --out")
    files = list_images(images)[:limit]
    seg_classes: list[str] = []
    if masks is not None:
        if classes is None:
            raise ReplayError("--masks needs --classes (camvid, ade20k or a file of names)")
        seg_classes, preset_ignore, preset_offset = load_classes(classes)
        ignore_value = preset_ignore if ignore_value is None else ignore_value
        label_offset = preset_offset if label_offset is None else label_offset
        ignore_value = IGNORE_INDEX if ignore_value is None else ignore_value
    det_classes, boxes = load_coco_boxes(coco) if coco is not None else ([], {})
    scene_labels = load_scenes(scenes) if scenes is not None else {}
    if compressed and topic.endswith("image_raw"):
        topic += "/compressed"
    sink = BagSink(out / "bag", storage)
    gt = GroundTruthWriter(out / "gt", seg_classes, det_classes)
    build = Builder(sink.typestore)
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    cls = sink.typestore.types[msgtype]
    written, start_ns = 0, round(start_sec * 1e6) * 1000  # start to the microsecond
    try:
        for i, path in enumerate(tqdm(files, disable=not progress, unit="frame")):
            stamp = start_ns + round(i * NS / rate)  # integers: floats lose ns at 1.7e18
            header = build.header(stamp // NS, stamp % NS, frame_id)
            rgb = read_rgb(path)
            if compressed:
                fmt = COMPRESSED_FORMATS.get(path.suffix.lower())
                if fmt and jpeg_quality is None:  # the file's own bytes: no second loss
                    data = np.frombuffer(path.read_bytes(), np.uint8)
                else:
                    fmt = "jpeg"
                    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                    q = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality or 95]
                    data = cv2.imencode(".jpg", bgr, q)[1].reshape(-1)
                msg = cls(header=header, format=fmt, data=data)
            else:
                msg = build.rgb_image(header, rgb)
            sink.write(topic, stamp, msg)
            if masks is not None:
                mask_path = masks / f"{path.stem}.png"
                if mask_path.is_file():
                    mask = read_mask(mask_path, len(seg_classes), ignore_value, label_offset)
                    if mask.shape != rgb.shape[:2]:
                        raise ReplayError(f"{mask_path}: {mask.shape} differs from {path}")
                    gt.add_mask(topic, stamp, mask)
            if path.name in boxes:
                entries, h, w = boxes[path.name]
                gt.add_boxes(topic, stamp, (h, w), entries, path.name)
            label = scene_labels.get(path.name, scene_labels.get(path.stem))
            if label is not None:
                gt.add_scene(topic, stamp, label)
            written += 1
    finally:
        sink.close()
        gt.close()
    return out / "bag", out / "gt", written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="pvt-mtl-make-bag",
        description="Build a rosbag2 evaluation bag plus replay ground truth from a labelled "
        "image folder (docs/REPLAY.md).",
    )
    p.add_argument("images", type=Path, help="folder of images (sorted by name = frame order)")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/bag and OUT/gt")
    p.add_argument("--masks", type=Path, help="folder of class-id PNG masks (same stems)")
    p.add_argument("--classes", help="mask classes: camvid, ade20k, or a file with one name a line")
    p.add_argument("--ignore-value", type=int, help="mask value meaning unlabelled")
    p.add_argument("--label-offset", type=int, help="subtracted from mask values")
    p.add_argument("--coco", type=Path, help="COCO instances json (boxes; matched by file_name)")
    p.add_argument("--scenes", type=Path, help="CSV file,label of scene classes")
    p.add_argument("--topic", default="/camera/image_raw")
    p.add_argument("--compressed", action="store_true", help="sensor_msgs/CompressedImage")
    p.add_argument("--jpeg-quality", type=int, help="re-encode as JPEG (default: file bytes)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--start-sec", type=float, default=1_700_000_000.0, help="first stamp (s)")
    p.add_argument("--limit", type=int, help="first N images only (N >= 1)")
    p.add_argument("--frame-id", default="camera")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error("--rate must be positive")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be at least 1, got {args.limit}")
    try:
        bag, gt, n = make_bag(
            args.images,
            args.out,
            args.masks,
            args.classes,
            args.ignore_value,
            args.label_offset,
            args.coco,
            args.scenes,
            args.topic,
            args.compressed,
            args.jpeg_quality,
            args.storage,
            args.rate,
            args.start_sec,
            args.limit,
            args.frame_id,
            progress=sys.stderr.isatty(),
        )
    except ReplayError as err:
        print(f"pvt-mtl-make-bag: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {n} frames to {bag} and ground truth to {gt}")
    print(f"replay it: pvt-mtl-replay {bag} --gt {gt} --checkpoint CHECKPOINT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
