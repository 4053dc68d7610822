"""The whole network learns: overfitting a handful of drawn images with all three labels."""

import numpy as np
import pytest
import torch
from test_model import small_config

from pvt_mtl_ros.model import build_model, combined_loss, task_losses

SIZE = 128


def drawn_batch(n: int = 4, seed: int = 0):
    """Scenes whose class is the background tint, with 'car' and 'person' rectangles."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    tints = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200]])
    for i in range(n):
        scene = i % 3
        img = np.empty((SIZE, SIZE, 3), np.uint8)
        img[:] = tints[scene]
        mask = np.zeros((SIZE, SIZE), np.int64)
        mask[SIZE // 2 :] = 1
        img[SIZE // 2 :] = tints[scene] // 2
        boxes, labels = [], []
        for cls, (h, w), colour in ((0, (30, 50), (250, 250, 0)), (1, (50, 18), (250, 0, 250))):
            y, x = rng.integers(4, SIZE - h - 4), rng.integers(4, SIZE - w - 4)
            img[y : y + h, x : x + w] = colour
            mask[y : y + h, x : x + w] = 2
            boxes.append([x, y, x + w, y + h])
            labels.append(cls)
        images.append(torch.from_numpy(img).permute(2, 0, 1))
        targets.append(
            {
                "label": torch.tensor(scene),
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels),
                "mask": torch.from_numpy(mask),
            }
        )
    return torch.stack(images), targets


@pytest.mark.slow
def test_each_task_loss_falls_by_half_when_overfitting():
    torch.manual_seed(0)
    model = build_model(small_config()).train()
    images, targets = drawn_batch()
    x = model.normalize(images)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    history = []
    for _ in range(40):
        losses = task_losses(model, model(x), targets)
        opt.zero_grad()
        combined_loss(losses).backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    tasks = {
        "classification": ["cls"],
        "detection": ["det_cls", "det_box", "det_ctr"],
        "segmentation": ["seg"],
    }
    for task, terms in tasks.items():
        first = sum(history[0][t] for t in terms)
        last = np.mean([sum(h[t] for t in terms) for h in history[-5:]])
        assert last < 0.5 * first, f"{task}: loss {first:.3f} -> {last:.3f}"
