"""The network: backbones, necks, heads, single-task twins, gradients, box mapping."""

import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from pvt_mtl_ros.inference import letterbox_batch, predict
from pvt_mtl_ros.model import (
    ClassificationConfig,
    ConfigError,
    DetectionConfig,
    ModelConfig,
    SegmentationConfig,
    build_model,
    combined_loss,
    preset,
    task_losses,
)
from pvt_mtl_ros.model.info import main as info_main
from pvt_mtl_ros.model.info import summarize
from pvt_mtl_ros.model.multitask import flatten, output_names, unflatten
from pvt_mtl_ros.model.necks import half_max_pool

SIZES = [(480, 640), (720, 1280), (375, 1242), (360, 480)]


def small_config(
    backbone="pvt_v2_b0", tasks=("classification", "detection", "segmentation"), **kw
) -> ModelConfig:
    heads = {
        "classification": ClassificationConfig(classes=["a", "b", "c"]),
        "detection": DetectionConfig(classes=["car", "person"], num_convs=2),
        "segmentation": SegmentationConfig(classes=["road", "sky", "car"], channels=32),
    }
    kw.setdefault("neck_channels", 64)
    return ModelConfig(backbone=backbone, **{t: heads[t] for t in tasks}, **kw)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone,neck",
    [("pvt_v2_b0", "fpn"), ("swin_tiny_patch4_window7_224", "fpn"), ("regnety_032", "bifpn")],
)
def test_backbone_families_run_on_camera_sizes(backbone, neck):
    model = build_model(small_config(backbone, neck=neck)).eval()
    for h, w in SIZES:
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w))
        assert out["classification"].shape == (1, 3)
        assert out["segmentation"].shape == (1, 3, h, w)
        # P3..P7 locations of the padded input
        ph, pw = h + (-h % 32), w + (-w % 32)
        points = sum(-(-ph // s) * -(-pw // s) for s in (8, 16, 32, 64, 128))
        assert out["detection"]["cls_logits"].shape == (1, points, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b2_li", "pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5"]
)
def test_every_pvt_v2_variant_builds(name):
    model = build_model(small_config(name, tasks=("segmentation",))).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 90, 64))  # not a multiple of 32 either
    assert out["segmentation"].shape == (1, 3, 90, 64)


@pytest.mark.parametrize("size", [(15, 20), (8, 10), (4, 5), (13, 17), (7, 7), (2, 3), (1, 1)])
def test_half_max_pool_is_adaptive_max_pool_to_half_size(size):
    """The BiFPN's exportable downsampling gives adaptive max pooling's exact numbers."""
    x = torch.randn(2, 3, *size)
    half = (-(-size[0] // 2), -(-size[1] // 2))
    assert torch.equal(half_max_pool(x), F.adaptive_max_pool2d(x, half))


def test_backbone_parameters_equal_timm():
    for name in ("pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2"):
        ours = sum(p.numel() for p in build_model(small_config(name)).backbone.parameters())
        ref = timm.create_model(name, num_classes=0)
        assert ours == sum(p.numel() for p in ref.parameters())


def test_single_task_twins_share_weights_and_outputs():
    torch.manual_seed(0)
    mtl = build_model(small_config()).eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        ref = mtl(x)
    for task in mtl.tasks:
        single = build_model(small_config(tasks=(task,))).eval()
        n_single = sum(p.numel() for p in single.parameters())
        assert n_single < sum(p.numel() for p in mtl.parameters())
        # a detection twin's FPN starts at C3 (it never reads P2): its blocks shift by one
        shift = single.neck.first if single.neck is not None else 0
        assert shift == (task == "detection")
        if task == "detection":
            assert not any("fpn.inner_blocks.3" in k for k in single.state_dict())
        own = {k: _fpn_block(k, shift) for k in single.state_dict()}
        missing = set(own.values()) - set(mtl.state_dict())
        assert not missing, f"{task} twin has weights the MTL model lacks: {missing}"
        single.load_state_dict({k: mtl.state_dict()[v] for k, v in own.items()})
        with torch.no_grad():
            out = single(x)
        assert list(out) == [task]
        if task == "detection":
            for k in ("cls_logits", "bbox_regression", "bbox_ctrness"):
                torch.testing.assert_close(out[task][k], ref[task][k])
        else:
            torch.testing.assert_close(out[task], ref[task])


def _fpn_block(key: str, shift: int) -> str:
    """The MTL model's name of a twin's weight whose FPN starts `shift` levels higher."""
    match = re.match(r"(neck\.fpn\.(?:inner|layer)_blocks\.)(\d+)(\..*)", key)
    return f"{match[1]}{int(match[2]) + shift}{match[3]}" if match and shift else key


def test_forward_runs_only_requested_heads():
    model = build_model(small_config()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), tasks=["segmentation"])
    assert list(out) == ["segmentation"]
    with pytest.raises(ValueError, match="no head for"):
        build_model(small_config(tasks=("classification",)))(
            torch.randn(1, 3, 64, 64), tasks=["detection"]
        )


@pytest.mark.parametrize(
    "tasks",
    [
        ("detection",),
        ("classification", "segmentation"),
        ("classification", "detection", "segmentation"),
    ],
)
def test_flat_forward_is_the_forward_in_graph_order(tasks):
    """forward_flat (what export, compile and TensorRT run) is forward's tensors in
    output_names order; unflatten rebuilds forward's dict, anchors included."""
    model = build_model(small_config(tasks=tasks)).eval()
    x = torch.randn(1, 3, 96, 136)  # 136 pads to 160
    with torch.no_grad():
        ref, flat = model(x), model.forward_flat(x)
    assert model.output_names == output_names(tasks)
    assert len(flat) == len(model.output_names) == len(tasks) + 2 * ("detection" in tasks)
    back = unflatten(model.output_names, list(flat), (96, 136))
    assert list(back) == list(ref)
    for a, b in zip(flatten(ref), flatten(back), strict=True):
        torch.testing.assert_close(a, b)
    if "detection" in tasks:
        torch.testing.assert_close(back["detection"]["anchors"], ref["detection"]["anchors"])


def _labelled_batch(n=2, size=128):
    targets = []
    for i in range(n):
        mask = torch.zeros(size, size, dtype=torch.long)
        mask[size // 2 :] = 1
        box = torch.tensor([[10.0 + i, 20.0, 70.0, 90.0]])
        mask[20:90, 10 + i : 70] = 2
        targets.append(
            {
                "label": torch.tensor(i % 3),
                "boxes": box,
                "labels": torch.tensor([i % 2]),
                "mask": mask,
            }
        )
    return targets


def test_gradients_reach_backbone_and_every_head():
    model = build_model(small_config()).train()
    out = model(torch.randn(2, 3, 128, 128))
    losses = task_losses(model, out, _labelled_batch())
    assert set(losses) == {"cls", "det_cls", "det_box", "det_ctr", "seg"}
    combined_loss(losses).backward()
    for part in (model.backbone, model.neck, *model.heads.values()):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_partial_labels_compute_only_labelled_tasks():
    model = build_model(small_config()).train()
    out = model(torch.randn(2, 3, 64, 64))
    mask = torch.full((64, 64), 255)
    mask[:8] = 1
    losses = task_losses(model, out, [{"mask": mask}, {"label": torch.tensor(2)}])
    assert set(losses) == {"seg", "cls"}
    weighted = combined_loss(losses, {"segmentation": 0.0, "classification": 2.0})
    torch.testing.assert_close(weighted, 2.0 * losses["cls"])
    with pytest.raises(ValueError, match="no loss terms"):
        combined_loss(task_losses(model, out, [{}, {}]))


@pytest.mark.parametrize("h,w", SIZES)
def test_known_box_survives_letterbox_round_trip(h, w):
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    x0, y0, x1, y1 = int(w * 0.23), int(h * 0.31), int(w * 0.71), int(h * 0.88)
    image[:, y0:y1, x0:x1] = 255
    batch, (box,) = letterbox_batch([image], (512, 512))
    assert batch.shape[-1] % 32 == 0 and batch.shape[-2] % 32 == 0
    assert max(box.resized) == 512
    # Where the network sees the rectangle, to sub-pixel precision: the resize preserves the
    # covered area, so an edge is the centre minus (plus) the coverage summed up to it.
    net = batch[0, 0] / 255.0
    cy, cx = int((y0 + y1) / 2 * box.scale_xy[1]), int((x0 + x1) / 2 * box.scale_xy[0])
    row, col = net[cy], net[:, cx]
    seen = torch.tensor(
        [[cx - row[:cx].sum(), cy - col[:cy].sum(), cx + row[cx:].sum(), cy + col[cy:].sum()]]
    )
    back = box.boxes_to_original(seen)[0]
    assert torch.allclose(back, torch.tensor([x0, y0, x1, y1], dtype=torch.float32), atol=1.0)
    # and the forward mapping is its exact inverse
    orig = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)
    torch.testing.assert_close(box.boxes_to_original(box.boxes_to_network(orig)), orig)


def test_narrow_detection_head_runs_on_tiny_inputs():
    # 32 neck channels and a 128-px input: P7 is 1x1, one value per GroupNorm group of 32
    model = build_model(small_config(neck_channels=32, input_size=(128, 128))).eval()
    (result,) = predict(model, [np.zeros((100, 120, 3), np.uint8)], score_thresh=0.0)
    assert len(result.boxes) > 0


@pytest.mark.parametrize("seed", range(4))
def test_box_branch_starts_alive_from_random_weights(seed):
    # The box branch ends in a ReLU: a side at zero everywhere gives zero-width boxes, on which
    # GIoU has no gradient, and the branch never trains (loss_det_box stuck at 1.0).
    torch.manual_seed(seed)
    model = build_model(small_config(tasks=("detection",))).train()
    images = torch.rand(2, 3, 256, 320)
    out = model(model.normalize(images))["detection"]
    assert (out["bbox_regression"] > 0).all()
    head = model.heads["detection"]
    target = {"boxes": torch.tensor([[40.0, 60.0, 140.0, 200.0]]), "labels": torch.tensor([0])}
    loss = head.loss(out, [target, target])["det_box"]
    loss.backward()
    assert 0 < loss.item() < 1
    assert head.head.regression_head.bbox_reg.weight.grad.abs().sum() > 0


def test_predict_returns_results_in_original_pixels():
    model = build_model(small_config()).eval()
    images = [np.random.randint(0, 255, (h, w, 3), dtype=np.uint8) for h, w in SIZES[2:]]
    results = predict(model, images, score_thresh=0.0)
    for image, r in zip(images, results):
        h, w = image.shape[:2]
        assert r.mask.shape == (h, w) and r.mask.dtype == np.uint8
        assert r.mask.max() < 3
        assert r.class_probs.shape == (3,) and abs(r.class_probs.sum() - 1) < 1e-5
        assert len(r.boxes) == len(r.scores) == len(r.labels) > 0
        assert (r.boxes[:, [0, 2]] <= w).all() and (r.boxes[:, [1, 3]] <= h).all()
        assert (r.boxes >= 0).all() and (r.boxes[:, 2:] >= r.boxes[:, :2]).all()
    with pytest.raises(ValueError, match="HxWx3"):
        predict(model, [np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="empty image"):
        predict(model, [np.zeros((0, 10, 3), np.uint8)])


def test_config_round_trip_and_errors():
    cfg = small_config()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\) backbon"):
        ModelConfig.from_dict({**cfg.to_dict(), "backbon": "x"})
    with pytest.raises(ConfigError, match=r"model\.detection: unknown key\(s\) iou"):
        ModelConfig.from_dict({**cfg.to_dict(), "detection": {"classes": ["a"], "iou": 1}})
    with pytest.raises(ConfigError, match="multiple of 32"):
        small_config(neck_channels=48)
    with pytest.raises(ConfigError, match="at least one task"):
        ModelConfig()
    with pytest.raises(KeyError, match="unknown preset"):
        preset("mtl_resnet50")


def test_info_reports_parts_and_flops(capsys):
    row = summarize(build_model(small_config()), (128, 128))
    assert row["params_total"] == sum(row["params"].values())
    assert all(
        row["params"][p] > 0
        for p in ("backbone", "neck", "classification", "detection", "segmentation")
    )
    assert row["flops"]["backbone"] > 0 and row["flops_total"] >= sum(row["flops"].values())
    assert info_main(["cls_pvt_v2_b1", "--size", "64", "64", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"backbone": 13496000' in out  # PVT v2-B1 without its classifier, as timm counts
