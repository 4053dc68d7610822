"""The procedural simulator: determinism, ground-truth consistency, scene labels, dataset."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from pvt_mtl_ros.conventions import SIM_SPLIT_SPAN
from pvt_mtl_ros.sim import (
    DETECTION_CLASSES,
    DETECTION_TO_SEG,
    SCENE_CLASSES,
    SCENE_TYPES,
    SEG_CLASSES,
    SimConfig,
    render,
)
from pvt_mtl_ros.sim.classes import CAMVID_TO_CITYSCAPES, CITYSCAPES_CLASSES, CITYSCAPES_TO_CAMVID
from training.datasets.sim import SimDataset, sim_splits

SMALL = dict(width=320, height=240)


@pytest.fixture(scope="module")
def frames():
    """Two frames of every scene type, day and night, mixed weather."""
    out = []
    for i, scene in enumerate(SCENE_TYPES):
        for tod in ("day", "night"):
            out.append(
                render(100 + 2 * i + (tod == "night"), SimConfig(scene=scene, time_of_day=tod))
            )
    return out


def test_same_seed_same_frame_and_seeds_differ():
    cfg = SimConfig(**SMALL)
    a, b, c = render(7, cfg), render(7, cfg), render(8, cfg)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
    assert (a.scene, a.time_of_day, a.weather) == (b.scene, b.time_of_day, b.weather)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.mask, c.mask)


def test_boxes_are_tight_around_visible_pixels_of_their_class(frames):
    cfg = SimConfig()
    n_boxes = 0
    for f in frames:
        h, w = f.mask.shape
        assert f.boxes.dtype == np.float32 and f.labels.dtype == np.int64
        assert len(f.boxes) == len(f.labels) == len(f.instance_ids) == len(f.visible_fraction)
        for box, label, inst, frac in zip(f.boxes, f.labels, f.instance_ids, f.visible_fraction):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert min(x1 - x0, y1 - y0) >= cfg.min_box_side
            assert frac >= cfg.min_visible_fraction
            ys, xs = np.nonzero(f.instance_mask == inst)
            # tight: the box is exactly the extent of the instance's visible pixels
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box.astype(int))
            # the box and the mask agree on the class, and the object fills its box
            cls = DETECTION_TO_SEG[label]
            assert (f.mask[ys, xs] == cls).all()
            crop = f.mask[int(y0) : int(y1), int(x0) : int(x1)]
            assert (crop == cls).mean() >= 0.15
            n_boxes += 1
    assert n_boxes > 50


def test_hidden_and_tiny_objects_get_no_box_but_keep_their_pixels(frames):
    dropped = 0
    for f in frames:
        present = set(np.unique(f.instance_mask).tolist()) - {0}
        dropped += len(present - set(f.instance_ids.tolist()))
    assert dropped > 0  # some objects are far or hidden; their mask pixels stay labelled


def test_scene_label_follows_the_settings():
    f = render(3, SimConfig(scene="parking", time_of_day="night", **SMALL))
    assert (f.scene, f.time_of_day) == ("parking", "night")
    assert SCENE_CLASSES[f.scene_label] == "parking_night"
    for seed in range(6):
        f = render(seed, SimConfig(**SMALL))
        assert SCENE_CLASSES[f.scene_label] == f"{f.scene}_{f.time_of_day}"
    assert len(SCENE_CLASSES) == 8
    f = render(4, SimConfig(weather="fog", **SMALL))
    assert f.weather == "fog"
    with pytest.raises(ValueError):
        render(0, SimConfig(scene="motorway"))


def test_night_is_darker_than_day():
    day = [
        render(s, SimConfig(time_of_day="day", weather="clear", **SMALL)).image.mean()
        for s in range(4)
    ]
    night = [
        render(s, SimConfig(time_of_day="night", weather="clear", **SMALL)).image.mean()
        for s in range(4)
    ]
    assert max(night) < min(day)


@pytest.mark.parametrize("size", [(640, 480), (480, 360), (1280, 720), (301, 199)])
def test_any_size_gives_valid_masks(size):
    w, h = size
    f = render(11, SimConfig(width=w, height=h))
    assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
    assert f.mask.shape == (h, w) and f.mask.dtype == np.uint8
    assert f.mask.max() < len(SEG_CLASSES)
    assert ((f.boxes[:, 2] <= w) & (f.boxes[:, 3] <= h)).all()


def test_extreme_cameras_still_render():
    for seed, pitch, height in ((0, -20.0, 0.6), (1, 25.0, 5.0)):
        f = render(seed, SimConfig(pitch=pitch, camera_height=height, **SMALL))
        assert f.mask.max() < len(SEG_CLASSES)


def test_class_tables():
    assert len(DETECTION_CLASSES) == 6 and len(DETECTION_TO_SEG) == 6
    assert len(SEG_CLASSES) == 11 and len(CITYSCAPES_CLASSES) == 19
    assert len(CAMVID_TO_CITYSCAPES) == 11 and len(CITYSCAPES_TO_CAMVID) == 19
    for camvid, cityscapes in enumerate(CAMVID_TO_CITYSCAPES):
        assert CITYSCAPES_TO_CAMVID[cityscapes] == camvid  # the round trip is exact
    assert SEG_CLASSES[DETECTION_TO_SEG[DETECTION_CLASSES.index("bus")]] == "Car"
    assert SEG_CLASSES[DETECTION_TO_SEG[DETECTION_CLASSES.index("motorcycle")]] == "Bicyclist"


def test_dataset_samples_follow_the_convention():
    ds = SimDataset(3, "train", SimConfig(**SMALL))
    image, target = ds[1]
    assert isinstance(image, tv_tensors.Image)
    assert image.dtype == torch.uint8 and image.shape == (3, 240, 320)
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert boxes.format == tv_tensors.BoundingBoxFormat.XYXY and tuple(boxes.canvas_size) == (
        240,
        320,
    )
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
    assert target["labels"].dtype == torch.int64 and len(target["labels"]) == len(boxes)
    mask = target["mask"]
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
    assert mask.shape == (240, 320) and int(mask.max()) < len(SEG_CLASSES)
    assert target["label"].dtype == torch.int64 and target["label"].ndim == 0
    assert target["image_id"] == 1
    frame = ds.frame(1)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), frame.image)


def test_dataset_tasks_and_disjoint_splits():
    ds = SimDataset(2, "val", SimConfig(**SMALL), tasks=("segmentation",))
    _, target = ds[0]
    assert set(target) == {"mask", "image_id"}
    assert ds.classes == list(SEG_CLASSES)
    train, val = sim_splits(1000, 200)
    assert not set(train.seeds) & set(val.seeds)
    assert len(train) == 1000 and len(val) == 200
    assert val.seeds[0] == SIM_SPLIT_SPAN
    with pytest.raises(ValueError):
        SimDataset(SIM_SPLIT_SPAN + 1, "train")
