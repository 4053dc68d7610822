"""Checkpoints: one file holds the weights AND the full model config, so it alone rebuilds
the model. Written atomically; read with `torch.load(weights_only=True)`.

Integrity: `save_checkpoint` stores a SHA-256 digest of every stored tensor (name, dtype,
shape, bytes); loading recomputes it, so a flipped byte is refused instead of running as a
different network. Non-finite weights are refused too. A file without a digest (one written
before digests, or weights from elsewhere) loads with an `UnverifiedCheckpointWarning`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, ModelConfig
from .multitask import MultiTaskNet

FORMAT = "pvt_mtl_ros/checkpoint-v1"
DIGEST = "sha256-tensors-v1"  # what `tensor_digest` hashes, stored beside the hex value


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model it describes."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint without an integrity digest was loaded unchecked."""


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """CheckpointError naming the floating-point tensors that hold NaN or infinity."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{where}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[:3]}); "
            "refusing weights that would give NaN outputs"
        )


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """`torch.load(weights_only=True)` with one-line CheckpointErrors: missing, unreadable,
    truncated, or a pickle that asks for Python objects (refused, never run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's text advises weights_only=False, i.e. running the file's code: never.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        detail = f" (it asks for {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{what} {path} is not a plain checkpoint: it holds Python objects{detail} that "
            "loading would have to run, so it was refused for safety"
        ) from None
    except Exception as e:  # torch raises several types for truncated / non-torch files
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(
            f"cannot read {what} {path} (truncated or not a torch file?): "
            f"{type(e).__name__}: {reason}"
        ) from None


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
        "digest": {"kind": DIGEST, "value": tensor_digest(state)},
        "extra": extra or {},
    }
    atomic_save(payload, path)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_orphans(folder: Path, pattern: str) -> list[Path]:
    """Remove temp files/folders in `folder` matching `pattern` (a glob whose names carry
    `.pid<N>.`) whose writing process is gone: what a killed run left behind."""
    removed = []
    for path in folder.glob(pattern):
        found = re.search(r"\.pid(\d+)\.", path.name)
        if found is None or _pid_alive(int(found.group(1))):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # another process cleaned it, or it is not ours to remove
        removed.append(path)
    return removed


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, rename: never a half file.
    Temp files of killed writers (their pid is in the name) are removed on the way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent, ".*.pid*.tmp")
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp"
    )
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
    payload = safe_load(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a pvt_mtl_ros checkpoint (format: {fmt!r}); "
            f"for backbone ImageNet weights use load_pretrained_backbone"
        )
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()
    ):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict of named tensors")
    verify(payload, path)
    return payload


def verify(payload: dict[str, Any], path: str | Path) -> None:
    """The stored digest against the tensors (CheckpointError if they differ), then the
    finite-weights check; a payload without a digest gets a warning."""
    state, digest = payload["state_dict"], payload.get("digest")
    if digest is None:
        warnings.warn(
            f"{path} has no integrity digest (a foreign or older checkpoint): loaded without "
            "checking its weights; re-save it with save_checkpoint to add one",
            UnverifiedCheckpointWarning,
            stacklevel=3,
        )
    elif not isinstance(digest, dict) or digest.get("kind") != DIGEST:
        raise CheckpointError(f"{path}: unknown integrity digest {digest!r:.80}")
    elif tensor_digest(state) != digest.get("value"):
        raise CheckpointError(
            f"{path} is corrupt: its weights do not match the digest stored when it was saved "
            "(a damaged copy or download); refusing to run it"
        )
    check_finite(state, str(path))


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
    except (ConfigError, TypeError, KeyError, ValueError, AttributeError) as e:
        reason = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{path}: invalid model config in checkpoint: {reason}") from None
    if config is not None and config.to_dict() != stored.to_dict():
        a, b = config.to_dict(), stored.to_dict()
        diff = [
            f"{k}: expected {a[k]!r:.80}, checkpoint has {b[k]!r:.80}"
            for k in a
            if a[k] != b.get(k)
        ]
        raise CheckpointError(f"{path}: checkpoint config differs from the requested one: {diff}")
    try:
        model = MultiTaskNet(stored)
    except Exception as e:  # a config that parses but names no buildable network
        reason = " ".join(str(e).split())[:300]
        raise CheckpointError(
            f"{path}: the checkpoint's model config cannot be built: {type(e).__name__}: {reason}"
        ) from None
    state = payload["state_dict"]
    try:
        check_state_dict(model, state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.to(map_location).eval()
