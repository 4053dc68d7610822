"""Checkpoints: one file holds the weights AND the full model config, so it alone rebuilds
the model. Written atomically; read with `torch.load(weights_only=True)`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, ModelConfig
from .multitask import MultiTaskNet

FORMAT = "pvt_mtl_ros/checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model it describes."""


def save_checkpoint(
    path: str | Path,
    model: MultiTaskNet,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write {format, config, state_dict, extra} to `path` atomically (temp file + rename).

    `half` stores floating-point weights as FP16 (small files for shipping); loading casts back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "state_dict": state,
        "extra": extra or {},
    }
    atomic_save(payload, path)
    return path


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw payload, with clear errors for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / non-torch files
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated or not a "
            f"torch file?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a pvt_mtl_ros checkpoint (format: {fmt!r}); "
            f"for backbone ImageNet weights use load_pretrained_backbone"
        )
    return payload


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[:5]})")
        raise CheckpointError("checkpoint weights do not fit the model: " + "; ".join(parts))


def load_checkpoint(
    path: str | Path, config: ModelConfig | None = None, map_location: str | torch.device = "cpu"
) -> MultiTaskNet:
    """Rebuild the model from the checkpoint's own config (or check it against `config`)."""
    payload = read_checkpoint(path)
    try:
        stored = ModelConfig.from_dict(payload["config"])
    except (ConfigError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid model config in checkpoint: {e}") from e
    if config is not None and config.to_dict() != stored.to_dict():
        a, b = config.to_dict(), stored.to_dict()
        diff = [
            f"{k}: expected {a[k]!r:.80}, checkpoint has {b[k]!r:.80}"
            for k in a
            if a[k] != b.get(k)
        ]
        raise CheckpointError(f"{path}: checkpoint config differs from the requested one: {diff}")
    model = MultiTaskNet(stored)
    state = payload["state_dict"]
    try:
        check_state_dict(model, state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.to(map_location).eval()
