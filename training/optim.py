"""AdamW parameter groups, the learning-rate schedule and the run length in steps."""

from __future__ import annotations

import math

from torch import nn

from training.config import ScheduleConfig, TrainConfig
from training.data import Source


def lr_factor(step: int, total: int, s: ScheduleConfig) -> float:
    """Warm-up (linear from ``warmup_factor``) times the decay, as mmcv composes them."""
    progress = min(step / max(total, 1), 1.0)
    if s.name == "cosine":
        decay = s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    elif s.name == "poly":
        decay = s.min_lr_ratio + (1 - s.min_lr_ratio) * (1 - progress) ** s.power
    elif s.name == "multistep":
        decay = s.gamma ** sum(progress >= m for m in s.milestones)
    else:
        decay = 1.0
    if step < s.warmup_steps:
        decay *= s.warmup_factor + (1 - s.warmup_factor) * step / s.warmup_steps
    return decay


def param_groups(
    model: nn.Module,
    balancer: nn.Module,
    weight_decay: float,
    no_decay_1d: bool,
    balancer_lr: float | None = None,
) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_decay_1d and (p.ndim <= 1 or name.endswith(".bias")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    extra = list(balancer.parameters())
    if extra:
        group = {"params": extra, "weight_decay": 0.0}
        if balancer_lr is not None:
            group["lr"] = balancer_lr
        groups.append(group)
    return groups


def total_steps(cfg: TrainConfig, sources: list[Source], world_size: int) -> int:
    run = cfg.train
    if run.steps is not None:
        return run.steps
    ref = next((s for s in sources if s.name == run.epoch_of), sources[0])
    per_step = ref.cfg.batch_size * world_size
    if cfg.data.sampling == "alternate":
        ratios = [s.cfg.ratio or 1.0 for s in sources]
        per_step *= ratios[sources.index(ref)] / sum(ratios)
    return max(1, math.ceil(run.epochs * len(ref) / per_step))
