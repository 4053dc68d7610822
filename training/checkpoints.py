"""Training-state files, RNG states and atomic writes (the model checkpoint itself is
``pvt_mtl_ros.model.save_checkpoint``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pvt_mtl_ros.model.checkpoint import CheckpointError, safe_load

STATE_FORMAT = "pvt_mtl_ros/train-state-v1"


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def checkpoint_paths(out_dir: Path, step: int) -> tuple[Path, Path]:
    base = out_dir / "checkpoints" / f"step_{step:07d}"
    return base.with_suffix(".pt"), base.with_suffix(".state.pt")


def latest_state(out_dir: Path) -> Path | None:
    """The newest training-state file whose model checkpoint exists too."""
    found = []
    for p in (out_dir / "checkpoints").glob("step_*.state.pt"):
        model_file = p.with_name(p.name.replace(".state.pt", ".pt"))
        if model_file.is_file():
            found.append((int(p.name.split("_")[1].split(".")[0]), p))
    return max(found)[1] if found else None


def read_state(path: Path) -> dict[str, Any]:
    """A training-state file; one-line CheckpointError for a missing, unreadable or hostile
    file (a pickle that asks for Python objects is refused, never run)."""
    if not path.is_file():
        raise FileNotFoundError(f"training state not found: {path}")
    state = safe_load(path, "training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training-state file ({STATE_FORMAT})")
    return state
