"""Ground truth from each simulator's ROS topics, turned into what the harness scores:
boxes with class names, class-id masks with a class-name list, a scene class name.

- sim: our own sim_camera_node; ids and names as published (CamVid classes for masks).
- CARLA ROS bridge: the semantic-segmentation camera is a bgra8 image in CARLA's
  CityScapesPalette. Colours -> Cityscapes train ids -> CamVid ids (what a simulator-trained
  model predicts) or kept as Cityscapes. Colours of CARLA's own tags (static, dynamic, water,
  ground, bridge, ...) and unknown colours become 255 (ignored).
- Gazebo through ros_gz_image / ros_gz_bridge: the segmentation camera's `labels_map`
  (the label value per pixel, in the last byte of each rgb8 pixel) and the bounding-box
  camera (Detection2DArray whose class_id is the label number), mapped to class names with the
  scenario's label tables.

No rclpy here: messages are read by attribute, so tests build them with any message class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pvt_mtl_ros.conventions import IGNORE_INDEX
from pvt_mtl_ros.ros.image_conversion import image_msg_to_array, msg_to_array
from pvt_mtl_ros.ros.outputs import boxes_from_msg, mask_from_msg, scene_from_msg
from pvt_mtl_ros.sim.classes import CITYSCAPES_CLASSES, CITYSCAPES_TO_CAMVID, SEG_CLASSES

# Cityscapes' colours, index = train id (the CityScapesPalette CARLA draws them with).
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),  # road
    (244, 35, 232),  # sidewalk
    (70, 70, 70),  # building
    (102, 102, 156),  # wall
    (190, 153, 153),  # fence
    (153, 153, 153),  # pole
    (250, 170, 30),  # traffic light
    (220, 220, 0),  # traffic sign
    (107, 142, 35),  # vegetation
    (152, 251, 152),  # terrain
    (70, 130, 180),  # sky
    (220, 20, 60),  # person
    (255, 0, 0),  # rider
    (0, 0, 142),  # car
    (0, 0, 70),  # truck
    (0, 60, 100),  # bus
    (0, 80, 100),  # train
    (0, 0, 230),  # motorcycle
    (119, 11, 32),  # bicycle
)
# CARLA colours outside Cityscapes' 19 that still name a Cityscapes class.
CARLA_EXTRA_COLOURS: dict[tuple[int, int, int], int] = {
    (157, 234, 50): 0,  # road line: Cityscapes labels lane markings as road
    (100, 40, 40): 4,  # fence, CARLA 0.9.10-0.9.13
    (145, 170, 100): 9,  # terrain, CARLA 0.9.10-0.9.13
}
UNKNOWN_WARN_FRACTION = 0.01  # more unknown colours than this: probably a lossy (JPEG) image


def palette_table(colours: dict[tuple[int, int, int], int]) -> tuple[np.ndarray, np.ndarray]:
    """{(r, g, b): id} -> (sorted packed colours, ids) for `palette_to_ids`."""
    packed = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], np.uint32)
    ids = np.array(list(colours.values()), np.uint8)
    order = np.argsort(packed)
    return packed[order], ids[order]


CARLA_TABLE = palette_table(
    {**{c: i for i, c in enumerate(CITYSCAPES_PALETTE)}, **CARLA_EXTRA_COLOURS}
)


def palette_to_ids(rgb: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """HxWx3 RGB colour image -> HxW uint8 ids; colours not in the table become 255."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 colour image, got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys, ids = table
    idx = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
    return np.where(keys[idx] == packed, ids[idx], IGNORE_INDEX).astype(np.uint8)


def carla_to_cityscapes(rgb: np.ndarray) -> np.ndarray:
    """CARLA CityScapesPalette colours (RGB) -> Cityscapes train ids (255: no such class)."""
    return palette_to_ids(rgb, CARLA_TABLE)


_CS_TO_CAMVID = np.full(256, IGNORE_INDEX, np.uint8)
_CS_TO_CAMVID[: len(CITYSCAPES_TO_CAMVID)] = CITYSCAPES_TO_CAMVID


def cityscapes_to_camvid(ids: np.ndarray) -> np.ndarray:
    """Cityscapes train ids -> the simulator's CamVid ids (many-to-one; 255 stays 255)."""
    return _CS_TO_CAMVID[ids]


def gazebo_label_values(array: np.ndarray, encoding: str) -> np.ndarray:
    """A labels_map image -> HxW label values. gz-sensors writes the label into the last
    byte of each 3-byte pixel (the first two hold the instance count in panoptic mode)."""
    if array.ndim == 2:
        return array
    channel = 0 if encoding.startswith("bgr") else 2  # the last byte in memory order
    return array[..., channel]


def label_lut(labels: dict[int, str], classes: Sequence[str]) -> np.ndarray:
    """{label value: class name} -> a 65536-entry table label -> class id (255: unmapped)."""
    lut = np.full(65536, IGNORE_INDEX, np.uint8)
    for value, name in labels.items():
        lut[value] = classes.index(name)
    return lut


class SimGroundTruth:
    """Decodes one source's ground-truth messages; `seg_classes` names the mask ids."""

    seg_classes: tuple[str, ...] = SEG_CLASSES

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._warned: set[str] = set()

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    def detections(self, msg: Any) -> tuple[np.ndarray, list[str]]:
        boxes, _, names = boxes_from_msg(msg)
        return boxes, names

    def segmentation(self, msg: Any) -> np.ndarray:
        return image_msg_to_array(msg, "passthrough")

    def scene(self, msg: Any) -> str | None:
        return msg.results[0].class_id if msg.results else None


class CarlaGroundTruth(SimGroundTruth):
    """CARLA semantic camera (CityScapesPalette colours) -> CamVid or Cityscapes ids."""

    def __init__(self, segmentation_classes: str = "camvid") -> None:
        super().__init__()
        self.camvid = segmentation_classes == "camvid"
        self.seg_classes = SEG_CLASSES if self.camvid else CITYSCAPES_CLASSES

    def segmentation(self, msg: Any) -> np.ndarray:
        ids = carla_to_cityscapes(msg_to_array(msg, "rgb8"))
        unknown = float(np.mean(ids == IGNORE_INDEX))
        if unknown > UNKNOWN_WARN_FRACTION and not getattr(msg, "encoding", ""):
            self.warn_once(
                "lossy",
                f"{unknown:.0%} of a compressed semantic image's pixels have no palette colour: "
                "subscribe to the raw (lossless) semantic image",
            )
        return cityscapes_to_camvid(ids) if self.camvid else ids


class GazeboGroundTruth(SimGroundTruth):
    """Gazebo labels_map + bounding-box camera -> class ids and names via label tables."""

    def __init__(self, segmentation_labels: dict[int, str], detection_labels: dict[int, str]):
        super().__init__()
        self.seg_classes = tuple(dict.fromkeys(segmentation_labels.values()))
        self.lut = label_lut(segmentation_labels, self.seg_classes)
        self.detection_labels = detection_labels

    def segmentation(self, msg: Any) -> np.ndarray:
        labels = gazebo_label_values(image_msg_to_array(msg, "passthrough"), msg.encoding)
        return self.lut[labels.astype(np.int64)]

    def detections(self, msg: Any) -> tuple[np.ndarray, list[str]]:
        boxes, _, labels = boxes_from_msg(msg)
        keep, names = [], []
        for i, label in enumerate(labels):
            name = self.detection_labels.get(int(label)) if label.strip().isdigit() else None
            if name is None:
                self.warn_once(
                    f"label:{label}",
                    f"Gazebo box label {label!r} is not in gazebo.detection_labels: ignored",
                )
                continue
            keep.append(i)
            names.append(name)
        return boxes[keep].reshape(-1, 4), names


def ground_truth_decoder(source: str, options: dict[str, Any]) -> SimGroundTruth:
    """The decoder for a scenario's source (`options`: its carla/gazebo section)."""
    if source == "carla":
        return CarlaGroundTruth(options.get("segmentation_classes", "camvid"))
    if source == "gazebo":
        return GazeboGroundTruth(
            options.get("segmentation_labels", {}), options.get("detection_labels", {})
        )
    return SimGroundTruth()


# -- the perception node's outputs (the same conventions on every source) --------------------


# The node's outputs, decoded as replay's real-time mode decodes them (one home: ros.outputs).
output_detections, output_mask, output_scene = boxes_from_msg, mask_from_msg, scene_from_msg
