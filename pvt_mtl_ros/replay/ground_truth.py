"""Replay ground truth: one folder, every part optional, frames keyed by (topic, header stamp).

    GT/
      gt.json          {"format": "pvt_mtl_ros/replay-gt-v1",
                        "segmentation": {"classes": [...], "ignore_index": 255}}
      detections.json  COCO instances json; every image entry also has "stamp" (int, header
                       stamp in ns) and "topic" (omitted or null: the frame of any topic)
      masks/<topic>/<stamp>.png   class-id PNG (8 or 16 bit), ids index segmentation.classes;
                       masks/<stamp>.png for any topic
      scenes.csv       columns topic,stamp,label (label = class name; empty topic: any)

Class names tie the ground truth to the model: names the model lacks are reported, never
silently renumbered. docs/REPLAY.md is the user-facing description.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage

from pvt_mtl_ros.conventions import IGNORE_INDEX
from pvt_mtl_ros.metrics import load_coco

from .bag_io import ReplayError

FORMAT = "pvt_mtl_ros/replay-gt-v1"
MANIFEST, DETECTIONS, MASKS, SCENES = "gt.json", "detections.json", "masks", "scenes.csv"

Key = tuple[str | None, int]  # (topic or None for any topic, header stamp ns)


def _parse_stamp(value: Any, where: str) -> int:
    try:
        stamp = int(value)
    except (TypeError, ValueError):
        raise ReplayError(f"{where}: stamp {value!r} is not an integer (nanoseconds)") from None
    if stamp < 0:
        raise ReplayError(f"{where}: negative stamp {stamp}")
    return stamp


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: not a JSON text file (binary or corrupt)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ReplayError(f"{path}: not readable json: {err}") from None


def _topic(value: Any) -> str | None:
    return value if value else None  # "" / None / missing: any topic


class GroundTruth:
    """Loaded ground truth; look-ups by the frame's topic and stamp (exact topic first)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise ReplayError(f"ground truth {self.root}: {MANIFEST} not found (docs/REPLAY.md)")
        meta = _read_json(manifest)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ReplayError(f"{manifest}: 'format' must be {FORMAT!r}")
        seg = meta.get("segmentation") or {}
        try:
            self.seg_classes: list[str] = [str(c) for c in seg.get("classes", [])]
            self.ignore_index = int(seg.get("ignore_index", IGNORE_INDEX))
        except (AttributeError, TypeError, ValueError):
            raise ReplayError(
                f"{manifest}: 'segmentation' must be {{\"classes\": [names], "
                f'"ignore_index": int}}, got {seg!r:.80}'
            ) from None
        self._load_detections()
        self._load_masks()
        self._load_scenes()
        if not (self.det_images or self.masks or self.scenes):
            raise ReplayError(f"ground truth {self.root} holds no labelled frame")

    # -- detection ----------------------------------------------------------------------
    def _load_detections(self) -> None:
        self.coco = None
        self.det_images: dict[Key, int] = {}
        self.det_categories: dict[str, int] = {}  # name -> gt category id
        path = self.root / DETECTIONS
        if not path.is_file():
            return
        data = _read_json(path)
        try:
            for image in data.get("images", []):
                key = (_topic(image.get("topic")), _parse_stamp(image.get("stamp"), str(path)))
                if key in self.det_images:
                    raise ReplayError(f"{path}: two images for topic {key[0]} stamp {key[1]}")
                self.det_images[key] = int(image["id"])
            self.det_categories = {str(c["name"]): int(c["id"]) for c in data.get("categories", [])}
            data.setdefault("annotations", [])
            for ann in data["annotations"]:
                ann.setdefault("iscrowd", 0)
                ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
            self.coco = load_coco(data)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as err:
            raise ReplayError(
                f"{path}: not a COCO instances file with stamps (docs/REPLAY.md): "
                f"{type(err).__name__}: {err}"
            ) from None

    def det_image_id(self, topic: str, stamp: int) -> int | None:
        return self.det_images.get((topic, stamp), self.det_images.get((None, stamp)))

    # -- segmentation ---------------------------------------------------------------------
    def _load_masks(self) -> None:
        self.masks: dict[Key, Path] = {}
        folder = self.root / MASKS
        if not folder.is_dir():
            return
        if not self.seg_classes:
            raise ReplayError(f"{self.root}: masks/ needs segmentation.classes in {MANIFEST}")
        for path in sorted(folder.rglob("*.png")):
            parts = path.relative_to(folder).parent.parts
            topic = "/" + "/".join(parts) if parts else None
            self.masks[(topic, _parse_stamp(path.stem, str(path)))] = path

    def mask(self, topic: str, stamp: int) -> np.ndarray | None:
        """The class-id mask (ids of seg_classes, ignore_index where unlabelled) or None."""
        path = self.masks.get((topic, stamp), self.masks.get((None, stamp)))
        if path is None:
            return None
        try:
            with PILImage.open(path) as image:  # PIL: palette PNGs give indices, not colours
                mask = np.asarray(image)
        except OSError as err:
            raise ReplayError(f"{path}: unreadable mask: {err}") from None
        if mask.ndim != 2:
            raise ReplayError(f"{path}: expected a single-channel class-id PNG, got {mask.shape}")
        return mask

    # -- classification -------------------------------------------------------------------
    def _load_scenes(self) -> None:
        self.scenes: dict[Key, str] = {}
        path = self.root / SCENES
        if not path.is_file():
            return
        try:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if not {"stamp", "label"} <= set(reader.fieldnames or ()):
                    raise ReplayError(f"{path}: needs the columns topic,stamp,label")
                for n, row in enumerate(reader, start=2):
                    stamp = _parse_stamp(row["stamp"], f"{path} line {n}")
                    self.scenes[(_topic(row.get("topic")), stamp)] = row["label"]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise ReplayError(f"{path}: not a readable CSV text file: {err}") from None

    def scene(self, topic: str, stamp: int) -> str | None:
        return self.scenes.get((topic, stamp), self.scenes.get((None, stamp)))

    def entries(self) -> dict[str, set[Key]]:
        """Every labelled (topic, stamp) per task, to count those no frame matched."""
        return {
            "detection": set(self.det_images),
            "segmentation": set(self.masks),
            "classification": set(self.scenes),
        }


class GroundTruthWriter:
    """Writes the format above; `close()` writes the json and csv files."""

    def __init__(
        self,
        root: str | Path,
        seg_classes: list[str] | None = None,
        det_classes: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if (self.root / MANIFEST).exists():
            raise ReplayError(f"ground truth {self.root} exists already")
        self.root.mkdir(parents=True, exist_ok=True)
        self.seg_classes = list(seg_classes or [])
        self.det_classes = list(det_classes or [])
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.scene_rows: list[tuple[str, int, str]] = []

    def add_mask(self, topic: str | None, stamp: int, mask: np.ndarray) -> None:
        """`mask`: class ids 0..C-1 of seg_classes, 255 = ignore."""
        folder = self.root / MASKS / (topic or "").strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        dtype = np.uint8 if int(mask.max(initial=0)) < 256 else np.uint16
        if not cv2.imwrite(str(folder / f"{stamp}.png"), mask.astype(dtype)):
            raise ReplayError(f"could not write {folder / f'{stamp}.png'}")

    def add_boxes(
        self,
        topic: str | None,
        stamp: int,
        size: tuple[int, int],
        boxes: list[dict],
        file_name: str = "",
    ) -> None:
        """`boxes`: dicts with bbox [x, y, w, h] pixels, class_id (index into det_classes),
        optional iscrowd and area."""
        image_id = len(self.images) + 1
        h, w = size
        self.images.append(
            {
                "id": image_id,
                "topic": topic,
                "stamp": stamp,
                "height": h,
                "width": w,
                "file_name": file_name,
            }
        )
        for box in boxes:
            x, y, bw, bh = (float(v) for v in box["bbox"])
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(box["class_id"]) + 1,
                    "bbox": [x, y, bw, bh],
                    "area": float(box.get("area", bw * bh)),
                    "iscrowd": int(box.get("iscrowd", 0)),
                }
            )

    def add_scene(self, topic: str | None, stamp: int, label: str) -> None:
        self.scene_rows.append((topic or "", stamp, label))

    def close(self) -> None:
        manifest: dict[str, Any] = {"format": FORMAT}
        if self.seg_classes:
            manifest["segmentation"] = {"classes": self.seg_classes, "ignore_index": IGNORE_INDEX}
        if self.images:
            categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.det_classes)]
            coco = {
                "images": self.images,
                "annotations": self.annotations,
                "categories": categories,
            }
            (self.root / DETECTIONS).write_text(json.dumps(coco))
        if self.scene_rows:
            with (self.root / SCENES).open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["topic", "stamp", "label"])
                writer.writerows(self.scene_rows)
        (self.root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
