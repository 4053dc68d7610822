"""Backbones: any timm model with `features_only=True`, as four maps at strides 4, 8, 16, 32."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn

STRIDES = (4, 8, 16, 32)

# Swin in timm checks the input size against its construction size unless told otherwise.
_FAMILY_KWARGS = {
    "swin": {"strict_img_size": False, "dynamic_img_size": True},
}


def _family_kwargs(name: str) -> dict:
    for prefix, kwargs in _FAMILY_KWARGS.items():
        if name.startswith(prefix):
            return dict(kwargs)
    return {}


class Backbone(nn.Module):
    """A timm feature extractor returning NCHW maps at strides 4/8/16/32 (C2..C5)."""

    def __init__(self, name: str, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.name = name
        kwargs = _family_kwargs(name)
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        body = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        reductions = body.feature_info.reduction()
        if list(reductions) != list(STRIDES):
            # e.g. RegNet also exposes its stride-2 stem: keep only the four levels we use.
            indices = [reductions.index(s) for s in STRIDES if s in reductions]
            if len(indices) != len(STRIDES):
                raise ValueError(f"backbone {name} has no features at strides {STRIDES}")
            levels = [body.feature_info.out_indices[i] for i in indices]
            body = timm.create_model(
                name, pretrained=False, features_only=True, out_indices=levels, **kwargs
            )
        self.body = body
        self.channels: list[int] = list(body.feature_info.channels())
        self.channels_last_output = str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if self.channels_last_output:  # Swin returns NHWC maps
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return list(feats)


@dataclass
class PretrainedReport:
    """What loading backbone weights did: keys the model lacked values for, and keys unused."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored_classifier: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.path}: loaded {self.loaded} tensors, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.ignored_classifier)} classifier keys "
            f"ignored"
            + (f"; missing: {self.missing[:10]}" if self.missing else "")
            + (f"; unexpected: {self.unexpected[:10]}" if self.unexpected else "")
        )


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    """Checkpoints nest their weights under 'model' or 'state_dict' as often as not."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError("no state dict of tensors found in the file")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_pretrained_backbone(backbone: Backbone, path: str | Path) -> PretrainedReport:
    """Load ImageNet weights (timm's or the original repository's key format) from a local file.

    The file's keys are converted with the model family's own timm `checkpoint_filter_fn` (which
    maps e.g. whai362/PVT's `block1.0.*` to timm's `stages.0.blocks.0.*`), then to the key names of
    the features-only wrapper. Shape mismatches raise; missing and unexpected keys are reported.
    """
    from .checkpoint import FORMAT, CheckpointError, check_finite, safe_load, verify

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone weights not found: {path}")
    payload = safe_load(path, "pretrained backbone weights")  # one-line CheckpointError
    if isinstance(payload, dict) and payload.get("format") == FORMAT and "digest" in payload:
        verify(payload, path)  # one of ours: its digest is checked (ImageNet files have none)
    try:
        state = _unwrap(payload)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    check_finite(state, str(path))
    full = timm.create_model(backbone.name, pretrained=False, **_family_kwargs(backbone.name))
    module = importlib.import_module(type(full).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, full)
    full_keys = set(full.state_dict())
    classifier = full.get_classifier()
    head_prefixes = tuple(
        f"{name}." for name, mod in full.named_modules() if mod is classifier and name
    )

    # features_only flattens 'stages.0.x' into 'stages_0.x': map each of our keys to timm's.
    target = backbone.body.state_dict()
    mapping = {}
    for key in target:
        first, _, rest = key.partition(".")
        candidates = (key, f"{first.replace('_', '.')}.{rest}")
        mapping[key] = next((c for c in candidates if c in full_keys), key)

    loaded, missing, mismatched = {}, [], []
    for key, source in mapping.items():
        if source not in state:
            missing.append(key)
        elif state[source].shape != target[key].shape:
            mismatched.append(
                f"{key}: file {tuple(state[source].shape)} vs model {tuple(target[key].shape)}"
            )
        else:
            loaded[key] = state[source]
    if mismatched:
        raise ValueError(f"{path}: shapes differ for {len(mismatched)} tensors: {mismatched[:5]}")
    used = set(mapping.values())
    ignored = sorted(k for k in state if k not in used and k.startswith(head_prefixes))
    unexpected = sorted(k for k in state if k not in used and k not in ignored)
    if not loaded:
        raise ValueError(f"{path}: no tensor matches backbone {backbone.name} (wrong model?)")
    backbone.body.load_state_dict(loaded, strict=False)
    return PretrainedReport(str(path), len(loaded), missing, unexpected, ignored)
