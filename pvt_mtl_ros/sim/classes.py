"""Class sets of the simulator: detection (COCO names), segmentation (CamVid 11), scene labels."""

from __future__ import annotations

from pvt_mtl_ros.conventions import CAMVID_CLASSES

# Detection classes keep COCO's names and relative order, so a COCO-trained head maps by name.
DETECTION_CLASSES: tuple[str, ...] = ("person", "bicycle", "car", "motorcycle", "bus", "truck")

# Segmentation: CamVid's 11 classes in the SegNet order used by the shared CamVid labels.
SEG_CLASSES: tuple[str, ...] = CAMVID_CLASSES
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

# The CamVid palette (RGB), for visualising masks.
SEG_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (0, 0, 192),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)

# A box's class decides its mask class: vehicles are Car, bikes are drawn with a rider (Bicyclist).
DETECTION_TO_SEG: tuple[int, ...] = (PEDESTRIAN, BICYCLIST, CAR, BICYCLIST, CAR, CAR)

# Scene classification: type x time of day, flattened type-major (label = 2 * type + night).
SCENE_TYPES: tuple[str, ...] = ("highway", "urban", "residential", "parking")
TIMES_OF_DAY: tuple[str, ...] = ("day", "night")
WEATHERS: tuple[str, ...] = ("clear", "rain", "fog")
SCENE_CLASSES: tuple[str, ...] = tuple(f"{s}_{t}" for s in SCENE_TYPES for t in TIMES_OF_DAY)


def scene_label(scene: str, time_of_day: str) -> int:
    """Index into SCENE_CLASSES."""
    return SCENE_CLASSES.index(f"{scene}_{time_of_day}")


# Cityscapes' 19 train ids.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# CamVid id -> Cityscapes train id. Lossy where CamVid merges classes: SignSymbol also covers
# traffic lights, Car covers trucks and buses, Bicyclist is rider plus bicycle (mapped to
# "bicycle"), and the simulator's grass is in Tree (Cityscapes would call it terrain).
CAMVID_TO_CITYSCAPES: tuple[int, ...] = (
    10,  # Sky -> sky
    2,  # Building -> building
    5,  # Pole -> pole
    0,  # Road -> road
    1,  # Pavement -> sidewalk
    8,  # Tree -> vegetation
    7,  # SignSymbol -> traffic sign
    4,  # Fence -> fence
    13,  # Car -> car
    11,  # Pedestrian -> person
    18,  # Bicyclist -> bicycle
)

# Cityscapes train id -> CamVid id: the direction to use when scoring a Cityscapes model on the
# simulator (many-to-one, exact on CamVid's side).
CITYSCAPES_TO_CAMVID: tuple[int, ...] = (
    ROAD,  # road
    PAVEMENT,  # sidewalk
    BUILDING,  # building
    BUILDING,  # wall (SegNet's CamVid grouping puts Wall under Building)
    FENCE,  # fence
    POLE,  # pole
    SIGN,  # traffic light
    SIGN,  # traffic sign
    TREE,  # vegetation
    TREE,  # terrain (CamVid's VegetationMisc is grouped into Tree)
    SKY,  # sky
    PEDESTRIAN,  # person
    BICYCLIST,  # rider
    CAR,  # car
    CAR,  # truck
    CAR,  # bus
    CAR,  # train
    BICYCLIST,  # motorcycle
    BICYCLIST,  # bicycle
)
