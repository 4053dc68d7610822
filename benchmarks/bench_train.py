"""Training throughput per preset: images per second through one optimiser step.

    .venv/bin/python benchmarks/bench_train.py                     # the comparison's presets
    .venv/bin/python benchmarks/bench_train.py --presets mtl_pvt_v2_b0 --size 288x384 --batch 8

A step is what `training.trainer` does for a batch labelled for every task the model has:
forward (train mode), the task losses (`task_losses`, float32), their sum, backward, gradient
clipping and an AdamW step, in float32 or under bf16 autocast (`--amp`). The batch is
synthetic (random pixels, a few boxes and a blocky mask per image, a scene label) so no dataset
is needed; the cost does not depend on the pixel values. Each preset is timed on its own,
`--warmup` steps then `--steps` timed ones; images/s = batch / median step time. Prints
Markdown; writes JSON + Markdown to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from machine import cpu_name

from pvt_mtl_ros.model import build_model
from pvt_mtl_ros.model.losses import combined_loss, task_losses, to_float32
from pvt_mtl_ros.model.presets import COMPARISON


def synthetic_batch(model, batch: int, size: tuple[int, int], seed: int = 0):
    """uint8-range float images [B,3,H,W] and one target per image for every task."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    images = torch.randint(0, 256, (batch, 3, h, w), generator=g).float()
    cfg, targets = model.cfg, []
    for _ in range(batch):
        t: dict = {}
        if cfg.classification is not None:
            t["label"] = torch.randint(0, len(cfg.classification.classes), (), generator=g)
        if cfg.detection is not None:
            xy = torch.rand(6, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
            wh = 8 + torch.rand(6, 2, generator=g) * torch.tensor([w * 0.2, h * 0.2])
            t["boxes"] = torch.cat([xy, xy + wh], dim=1)
            t["labels"] = torch.randint(0, len(cfg.detection.classes), (6,), generator=g)
        if cfg.segmentation is not None:
            n = len(cfg.segmentation.classes)
            blocks = torch.randint(0, n, (h // 32 + 1, w // 32 + 1), generator=g)
            t["mask"] = blocks.repeat_interleave(32, 0).repeat_interleave(32, 1)[:h, :w]
        targets.append(t)
    return images, targets


def time_training(name: str, size, batch: int, amp: str, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    images, targets = synthetic_batch(model, batch, size)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16")
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with autocast:
            out = to_float32(model(model.normalize(images)))  # losses in float32, as trained
        loss = combined_loss(task_losses(model, out, targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {
        "preset": name,
        "tasks": list(model.tasks),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "amp": amp,
        "step_s": round(step, 3),
        "images_per_s": round(batch / step, 2),
        "loss": round(loss.item(), 3),
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Training throughput ({report['machine']['cpu']}, {report['threads']} threads)",
        "",
        f"`{report['command']}`",
        "",
        f"{report['size'][0]}x{report['size'][1]} (HxW), batch {report['batch']}, median of "
        f"{report['steps']} steps after {report['warmup']}; torch {report['machine']['torch']}; "
        f"{report['machine']['date']}.",
        "",
        "| preset | tasks | params (M) | amp | step s | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        tasks = "+".join(t[:3] for t in r["tasks"])
        lines.append(
            f"| {r['preset']} | {tasks} | {r['params_M']} | {r['amp']} | {r['step_s']} "
            f"| {r['images_per_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(COMPARISON))
    p.add_argument("--size", default="384x384", help="H x W of the training crops")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=["none", "bf16"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="outputs/bench", help="folder for the JSON and Markdown")
    args = p.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(size) == 2 and min(size) > 0
    except (ValueError, AssertionError):
        p.error(f"--size: expected HxW such as 384x384, got {args.size!r}")
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.presets:
        for amp in args.amp:
            rows.append(time_training(name, size, args.batch, amp, args.steps, args.warmup))
            print(f"  {name} {amp}: {rows[-1]['images_per_s']} images/s", file=sys.stderr)
    report = {
        "command": "python benchmarks/bench_train.py " + " ".join(argv or sys.argv[1:]),
        "size": list(size),
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "train_cpu.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
