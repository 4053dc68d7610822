"""Segmentation class weights (median frequency balancing) and their use in the loss."""

import json

import pytest
import torch
import torch.nn.functional as F
from test_training import CONFIGS, small_raw

from pvt_mtl_ros.config_loader import apply_set
from pvt_mtl_ros.model.heads import SemanticFPNHead
from training.class_weights import (
    median_frequency_weights,
    segmentation_class_weights,
    training_masks,
)
from training.config import TrainConfigError, build_config, load_config, read_yaml
from training.data import build_source, set_train_transforms
from training.distributed import DistInfo
from training.logs import close_file_handlers
from training.trainer import Trainer


def test_median_frequency_by_hand():
    """class 0: 190 of the 200 pixels of the two images it is in -> freq 0.95; class 1: 10
    of the 100 pixels of its one image -> 0.1; class 2 never appears (weight 1); 255 is
    ignored. torch's median of (0.95, 0.1) is the lower value, 0.1."""
    a = torch.zeros(10, 12, dtype=torch.long)
    a[:, 10:] = 255  # 20 ignored pixels: 100 labelled
    a[0, :10] = 1
    b = torch.zeros(10, 10, dtype=torch.long)
    w = median_frequency_weights([a, b], 3)
    torch.testing.assert_close(w, torch.tensor([0.1 / 0.95, 1.0, 1.0]))


def test_bad_masks_and_weights_are_clear_errors():
    with pytest.raises(ValueError, match="outside 0..2"):
        median_frequency_weights([torch.full((2, 2), 3)], 3)
    with pytest.raises(ValueError, match="no labelled pixels"):
        median_frequency_weights([torch.full((2, 2), 255)], 3)
    with pytest.raises(ValueError, match="2 weights for 3 classes"):
        segmentation_class_weights([1.0, 2.0], [], ["a", "b", "c"], 255)
    with pytest.raises(TrainConfigError, match="'median_frequency' or one weight per class"):
        load_config(CONFIGS / "joint_cpu.yaml", ["loss.seg_class_weights=inverse"])


def test_weighted_loss_is_torchs_weighted_mean():
    logits = torch.randn(2, 3, 4, 5)
    masks = torch.randint(0, 3, (2, 4, 5))
    masks[0, 0] = 255
    w = torch.tensor([0.5, 2.0, 1.0])
    got = SemanticFPNHead.loss(logits, masks, 255, w)
    per_pixel = F.cross_entropy(logits, masks, ignore_index=255, reduction="none")
    valid = masks != 255
    wp = w[masks.clamp(max=2)] * valid
    torch.testing.assert_close(got, (per_pixel * wp).sum() / wp.sum())
    assert not torch.isclose(got, SemanticFPNHead.loss(logits, masks, 255))


def test_trainer_weights_rare_simulator_classes_up(tmp_path):
    """median_frequency on the simulator: thin classes (poles, signs) weigh more than road
    and sky, the weights are logged, and counting them leaves the run's RNG untouched."""
    raw = read_yaml(CONFIGS / "demo_native_b0.yaml")
    raw["model"].pop("init_from")
    raw["data"]["train"] = raw["data"]["train"][:1]
    for key, value in {
        "output_dir": str(tmp_path / "run"),
        "data.train.0.frames": 8,
        "data.train.0.frame_size": [120, 160],
        "data.train.0.augment.size": [96, 128],
        "data.train.0.augment.scale_range": [0.9, 1.1],
        "loss.seg_class_weights": "median_frequency",
        "loss.seg_class_weight_samples": 8,
        "train.steps": 1,
        "train.progress": False,
    }.items():
        apply_set(raw, f"{key}={json.dumps(value)}")
    cfg = build_config(raw)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    with torch.random.fork_rng(devices=[]):
        source = build_source(cfg.data.train[0], "data.train[0]")
        set_train_transforms(source, (96, 128))
        list(training_masks([source], 4))
    assert torch.equal(torch.rand(3), before)
    trainer = Trainer(cfg, DistInfo(), "cpu")
    close_file_handlers()
    classes = trainer.model.cfg.segmentation.classes
    w = dict(zip(classes, trainer.seg_class_weights.tolist()))
    assert w["Pole"] > w["Road"] and w["SignSymbol"] > w["Sky"]
    assert "segmentation class weights: Sky" in (tmp_path / "run" / "train.log").read_text()


def test_joint_preset_without_weights_is_plain_cross_entropy(shared_data, tmp_path):
    trainer = Trainer(build_config(small_raw(shared_data, tmp_path)), DistInfo(), "cpu")
    close_file_handlers()
    assert trainer.seg_class_weights is None
