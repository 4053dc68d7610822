"""Loss balancing between tasks: fixed weights, uncertainty weighting, DWA and PCGrad.

Every balancer sees one loss per task (the sum of that task's terms, e.g. detection =
det_cls + det_box + det_ctr) and only the tasks labelled in the current step.

- ``fixed``: sum of w_t * L_t with the configured weights (default 1).
- ``uncertainty`` (Kendall, Gal & Cipolla, CVPR 2018): sum of exp(-s_t) * L_t + s_t with learned
  log-variances s_t; at the optimum exp(s_t) = L_t, so a task with a large loss is down-weighted.
- ``dwa`` (Dynamic Weight Average, Liu, Johns & Davison, CVPR 2019):
  w_t = K * exp(r_t / T) / sum_k exp(r_k / T), r_t = Lbar_t(p-1) / Lbar_t(p-2), where Lbar are
  loss means over the last two periods of ``period`` steps (the paper's epochs); w = 1 before.
- ``pcgrad`` (Yu et al., NeurIPS 2020, "Gradient Surgery"): per-task gradients of the shared
  parameters; where two conflict (negative dot product) the component along the other is removed,
  in a random task order; the projected gradients are summed. Heads get their own task's gradient.

Each balancer is an ``nn.Module`` so that its state (parameters, running averages) goes into the
training-state file through ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


class Balancer(nn.Module):
    """Fixed weights; the base of the others."""

    gradient_based = False

    def __init__(self, tasks: Sequence[str], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        weights = weights or {}
        self.base = {t: float(weights.get(t, 1.0)) for t in self.tasks}

    def weights(self) -> dict[str, float]:
        """The current weight of each task (for logs)."""
        return dict(self.base)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """One scalar to backpropagate from the per-task losses present in this step."""
        w = self.weights()
        return sum(w[t] * losses[t] for t in self.tasks if t in losses)

    def update(self, values: dict[str, float]) -> None:
        """Called after every step with the detached per-task losses (mean over ranks)."""


class UncertaintyWeighting(Balancer):
    def __init__(self, tasks: Sequence[str], weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks, weights)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def weights(self) -> dict[str, float]:
        s = self.log_vars.detach().float().cpu()
        return {t: self.base[t] * math.exp(-float(s[i])) for i, t in enumerate(self.tasks)}

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for i, t in enumerate(self.tasks):
            if t in losses:
                s = self.log_vars[i]
                total = total + self.base[t] * (torch.exp(-s) * losses[t].float() + s)
        return total


class DWA(Balancer):
    def __init__(
        self,
        tasks: Sequence[str],
        weights: dict[str, float] | None = None,
        temperature: float = 2.0,
        period: int = 50,
    ) -> None:
        super().__init__(tasks, weights)
        self.temperature = temperature
        self.period = period
        self.steps = 0
        self.sums = dict.fromkeys(self.tasks, 0.0)
        self.counts = dict.fromkeys(self.tasks, 0)
        self.history: list[dict[str, float | None]] = []  # the last two period means

    def weights(self) -> dict[str, float]:
        if len(self.history) < 2:
            return dict(self.base)
        prev, last = self.history
        ratios = {}
        for t in self.tasks:
            a, b = last[t], prev[t]
            # a task not seen in a period (alternate sampling) keeps ratio 1
            ratios[t] = a / b if a is not None and b not in (None, 0.0) else 1.0
        exp = {t: math.exp(r / self.temperature) for t, r in ratios.items()}
        norm = sum(exp.values())
        k = len(self.tasks)
        return {t: self.base[t] * k * exp[t] / norm for t in self.tasks}

    def update(self, values: dict[str, float]) -> None:
        for t, v in values.items():
            if t in self.sums:
                self.sums[t] += float(v)
                self.counts[t] += 1
        self.steps += 1
        if self.steps % self.period == 0:
            means = {
                t: self.sums[t] / self.counts[t] if self.counts[t] else None for t in self.tasks
            }
            self.history = (self.history + [means])[-2:]
            self.sums = dict.fromkeys(self.tasks, 0.0)
            self.counts = dict.fromkeys(self.tasks, 0)

    def get_extra_state(self) -> dict:
        return {
            "steps": self.steps,
            "sums": dict(self.sums),
            "counts": dict(self.counts),
            "history": [dict(h) for h in self.history],
        }

    def set_extra_state(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])
        self.history = [dict(h) for h in state["history"]]


def project_conflicting(grads: torch.Tensor, generator: torch.Generator | None = None):
    """PCGrad on per-task gradients ``[T, P]``: returns the projected ``[T, P]``.

    Each g_i is projected, in a random order of the others, onto the normal plane of every
    ORIGINAL g_j it conflicts with (g_i . g_j < 0), as in the authors' implementation.
    """
    projected = grads.clone()
    num = grads.shape[0]
    sq_norms = (grads * grads).sum(dim=1)
    for i in range(num):
        for j in torch.randperm(num, generator=generator).tolist():
            if j == i or sq_norms[j] == 0:
                continue
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / sq_norms[j] * grads[j]
    return projected


class PCGrad(Balancer):
    gradient_based = True

    def backward(
        self,
        losses: dict[str, torch.Tensor],
        shared: list[nn.Parameter],
        heads: dict[str, list[nn.Parameter]],
        generator: torch.Generator | None = None,
        scale: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
        reduce: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    ) -> None:
        """Set ``.grad`` of ``shared`` (projected sum) and of each present task's head.

        ``scale`` is the GradScaler's (projection commutes with a common scale); ``reduce``
        averages a flat tensor over ranks (identity on one process), applied to the per-task
        gradients BEFORE projecting so that every rank projects the same global gradients.
        """
        present = [t for t in self.tasks if t in losses]
        rows, head_grads = [], []
        for n, t in enumerate(present):
            params = shared + heads.get(t, [])
            grads = torch.autograd.grad(
                scale(self.base[t] * losses[t]),
                params,
                retain_graph=n < len(present) - 1,
                allow_unused=True,
            )
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            rows.append(torch.cat([g.reshape(-1) for g in grads[: len(shared)]]))
            head_grads += grads[len(shared) :]
        stacked = reduce(torch.stack(rows).float())
        merged = project_conflicting(stacked, generator).sum(dim=0)
        offset = 0
        for p in shared:
            p.grad = merged[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        if head_grads:
            flat = reduce(torch.cat([g.reshape(-1).float() for g in head_grads]))
            head_params = [p for t in present for p in heads.get(t, [])]
            offset = 0
            for p in head_params:
                p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()


def build_balancer(
    name: str,
    tasks: Sequence[str],
    weights: dict[str, float] | None = None,
    dwa_temperature: float = 2.0,
    dwa_period: int = 50,
) -> Balancer:
    if name == "fixed":
        return Balancer(tasks, weights)
    if name == "uncertainty":
        return UncertaintyWeighting(tasks, weights)
    if name == "dwa":
        return DWA(tasks, weights, dwa_temperature, dwa_period)
    if name == "pcgrad":
        return PCGrad(tasks, weights)
    raise ValueError(f"unknown loss balancer {name!r}: fixed, uncertainty, dwa or pcgrad")
