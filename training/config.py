"""Training configuration: YAML -> dataclasses, with errors that name the offending key.

A config file has the sections ``model``, ``data``, ``optim``, ``schedule``, ``loss``, ``train``
and ``eval`` (see training/configs/joint_cpu.yaml for a commented example). Relative paths are
resolved against the repository root, so ``../shared/data/camvid`` works from any directory.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pvt_mtl_ros.config_loader import ConfigError, apply_set, from_dict, read_yaml
from pvt_mtl_ros.model import ModelConfig, preset, preset_names
from pvt_mtl_ros.model.config import TASK_CONFIGS, TASKS

REPO_ROOT = Path(__file__).resolve().parents[1]
FROM_DATA = "from_data"


# A training config that cannot be used: the loader's one error type, under the name the
# training modules and their callers know.
TrainConfigError = ConfigError


def resolve_path(path: str | Path) -> Path:
    """``~`` expanded; relative paths are taken from the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


# --- dataclasses -------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """Arguments of training.transforms.train_transforms (size defaults to the model's)."""

    size: tuple[int, int] | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    resize_side: Literal["long", "short"] = "long"
    hflip: float = 0.5
    color_jitter: tuple[float, float, float, float] | None = (0.4, 0.4, 0.4, 0.05)
    min_box_size: float = 1.0


DatasetType = Literal[
    "coco",
    "camvid",
    "ade20k",
    "imagenet_list",
    "imagenet_folder",
    "segmentation_folder",
    "sim",
]
DATASET_TYPES: tuple[str, ...] = typing.get_args(DatasetType)
# Which path/label keys each dataset type takes: the first tuple is required, the second optional.
DATASET_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coco": (("images", "annotations"), ()),
    "camvid": (("root",), ("split",)),
    "ade20k": (("root",), ("split",)),
    "imagenet_list": (("images", "labels"), ()),
    "imagenet_folder": (("root",), ()),
    "segmentation_folder": (("images", "masks", "classes"), ("ignore_value", "label_offset")),
    "sim": (("frames",), ("split", "frame_size", "seed_offset")),
}
TYPE_SPECIFIC = {k for req, opt in DATASET_KEYS.values() for k in req + opt}
# The tasks each dataset type labels (known before anything is read from disk); an entry's
# ``tasks`` key may keep fewer (see dataset_tasks).
DATASET_TASKS: dict[str, tuple[str, ...]] = {
    "coco": ("detection",),
    "camvid": ("segmentation",),
    "ade20k": ("segmentation",),
    "imagenet_list": ("classification",),
    "imagenet_folder": ("classification",),
    "segmentation_folder": ("segmentation",),
    "sim": ("classification", "detection", "segmentation"),  # every frame has all three
}


def dataset_tasks(entry: dict[str, Any]) -> tuple[str, ...]:
    """The tasks a raw ``data.train`` entry labels: its ``tasks`` key, else its type's."""
    return tuple(entry.get("tasks") or DATASET_TASKS.get(entry.get("type"), ()))


@dataclass
class DatasetConfig:
    name: str
    type: DatasetType
    root: str | None = None
    split: str | None = None
    images: str | None = None
    annotations: str | None = None
    labels: str | None = None
    masks: str | None = None
    classes: list[str] | None = None
    ignore_value: int | None = None  # segmentation_folder: stored value meaning ignore (255)
    label_offset: int | None = None  # segmentation_folder: stored value of class 0 (0)
    frames: int | None = None  # sim: frames in the split (seeds)
    frame_size: tuple[int, int] | None = None  # sim: rendered (height, width); default 480x640
    seed_offset: int | None = None  # sim: first seed within the split's range
    batch_size: int = 8  # per process
    ratio: float | None = None  # share of the steps with sampling: alternate
    max_samples: int | None = None  # the first N samples only (quick runs)
    # the labels to keep, a subset of what the type labels (default all): a simulator split
    # labelled for one task only, as a COCO / ADE20K / ImageNet mix is (partial labels)
    tasks: list[str] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class DataConfig:
    # joint: every step takes one batch from EVERY dataset (their batch sizes set the mix);
    # alternate: every step takes one batch from ONE dataset, picked with probability ~ ratio.
    sampling: Literal["joint", "alternate"] = "joint"
    num_workers: int = 0
    train: list[DatasetConfig] = field(default_factory=list)
    val: list[DatasetConfig] = field(default_factory=list)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = None  # max global L2 norm; null = no clipping
    no_decay_1d: bool = True  # no weight decay on biases and norm weights


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "poly", "multistep", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_factor: float = 0.001  # lr factor at step 0, rising linearly to 1
    min_lr_ratio: float = 0.0  # cosine / poly end at lr * min_lr_ratio
    power: float = 0.9  # poly
    milestones: list[float] = field(default_factory=list)  # multistep, fractions of the run
    gamma: float = 0.1  # multistep


@dataclass
class LossConfig:
    balancer: Literal["fixed", "uncertainty", "dwa", "pcgrad"] = "fixed"
    weights: dict[str, float] = field(default_factory=dict)  # per task, default 1
    dwa_temperature: float = 2.0
    dwa_period: int = 50  # steps per DWA "epoch" (loss averages compared between periods)
    uncertainty_lr: float | None = None  # lr of the log-variances; default optim.lr
    # segmentation cross-entropy per-class weights: None, "median_frequency" (counted on
    # seg_class_weight_samples masks per dataset, see training/class_weights.py) or a list
    seg_class_weights: str | list[float] | None = None
    seg_class_weight_samples: int = 64


@dataclass
class RunConfig:
    steps: int | None = None
    epochs: float | None = None  # alternative to steps: passes over `epoch_of`
    epoch_of: str | None = None  # dataset name; default the first training dataset
    amp: Literal["none", "bf16", "fp16"] = "none"  # bf16: CUDA or CPU; fp16: CUDA
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2  # newest checkpoint pairs kept under output_dir/checkpoints
    progress: bool = True
    deterministic: bool = False
    find_unused_parameters: bool | None = None  # DDP; null: true with alternate sampling


@dataclass
class EvalConfig:
    batch_size: int = 8
    max_images: int | None = None  # per dataset, for quick checks
    latency_runs: int = 20
    latency_warmup: int = 3
    # inference backend the latency is measured with (pvt_mtl_ros.inference spec, e.g.
    # "openvino+bf16": the fastest CPU path); the accuracy figures always come from eager FP32
    latency_backend: str = "eager"
    score_thresh: float | None = None  # detection; default the model config's
    # KITTI's height rule for AP on box arrays (sim, folders): lower gt boxes are ignored,
    # lower detections dropped; AP over every box is reported beside it. COCO files: unused.
    min_box_height: float = 0.0


@dataclass
class ModelSection:
    """``preset`` plus overrides of any ModelConfig key, or a full config without a preset.

    A task section merges into the preset's (``detection: {num_convs: 2}``); ``null`` removes
    the task; ``classes: from_data`` takes the class list from the training datasets.
    """

    preset: str | None = None
    pretrained_backbone: str | None = None
    init_from: str | None = None  # a pvt_mtl_ros checkpoint: every weight (fine-tuning)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: ModelSection
    data: DataConfig
    seed: int = 0
    output_dir: str = "runs/default"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: str = ""  # the file it came from, for messages

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML would spell it (loadable again by build_config)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        m = self.model
        out["model"] = {
            **({"preset": m.preset} if m.preset else {}),
            **({"pretrained_backbone": m.pretrained_backbone} if m.pretrained_backbone else {}),
            **({"init_from": m.init_from} if m.init_from else {}),
            **copy.deepcopy(m.overrides),
        }
        return out


# --- sections with rules beyond types -----------------------------------------------------------


def _dataset(data: Any, where: str) -> DatasetConfig:
    if isinstance(data, dict) and data.get("type") in DATASET_KEYS:
        required, optional = DATASET_KEYS[data["type"]]
        for key in required:
            if data.get(key) is None:
                raise TrainConfigError(f"{where}: type {data['type']} needs key {key!r}")
        given = {k for k, v in data.items() if v is not None}
        wrong = sorted((given & TYPE_SPECIFIC) - set(required) - set(optional))
        if wrong:
            raise TrainConfigError(
                f"{where}: key(s) {', '.join(wrong)} do not apply to type {data['type']} "
                f"(it takes {', '.join(required + optional)})"
            )
    ds = from_dict(DatasetConfig, data, where)
    if ds.batch_size < 1:
        raise TrainConfigError(f"{where}.batch_size: must be >= 1, got {ds.batch_size}")
    if ds.max_samples is not None and ds.max_samples < 1:
        raise TrainConfigError(f"{where}.max_samples: must be >= 1, got {ds.max_samples}")
    if ds.ratio is not None and ds.ratio <= 0:
        raise TrainConfigError(f"{where}.ratio: must be > 0, got {ds.ratio}")
    if ds.tasks is not None:
        labelled = DATASET_TASKS[ds.type]
        if not ds.tasks or set(ds.tasks) - set(labelled):
            raise TrainConfigError(
                f"{where}.tasks: a non-empty subset of {list(labelled)}, got {ds.tasks}"
            )
    if not 0.0 <= ds.augment.hflip <= 1.0:
        raise TrainConfigError(f"{where}.augment.hflip: a probability, got {ds.augment.hflip}")
    return ds


def _model_section(data: Any) -> ModelSection:
    if not isinstance(data, dict):
        raise TrainConfigError(f"model: expected a mapping, got {data!r}")
    data = dict(data)
    name = data.pop("preset", None)
    pretrained = data.pop("pretrained_backbone", None)
    init_from = data.pop("init_from", None)
    if name is not None:
        try:
            preset(name)
        except KeyError:
            raise TrainConfigError(
                f"model.preset: unknown preset {name!r} (known: {', '.join(preset_names())})"
            ) from None
    if pretrained is not None and not isinstance(pretrained, str):
        raise TrainConfigError(f"model.pretrained_backbone: expected a path, got {pretrained!r}")
    if init_from is not None and not isinstance(init_from, str):
        raise TrainConfigError(f"model.init_from: expected a path, got {init_from!r}")
    known = [f.name for f in dataclasses.fields(ModelConfig)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainConfigError(
            f"model: unknown key(s) {', '.join(unknown)} (known: preset, pretrained_backbone, "
            f"init_from, {', '.join(known)})"
        )
    for task in TASKS:
        section = data.get(task)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise TrainConfigError(f"model.{task}: expected a mapping or null, got {section!r}")
        fields = [f.name for f in dataclasses.fields(TASK_CONFIGS[task])]
        bad = sorted(set(section) - set(fields))
        if bad:
            raise TrainConfigError(
                f"model.{task}: unknown key(s) {', '.join(bad)} (known: {', '.join(fields)})"
            )
        classes = section.get("classes")
        if classes is not None and classes != FROM_DATA and not isinstance(classes, list):
            raise TrainConfigError(
                f"model.{task}.classes: a list of names or {FROM_DATA!r}, got {classes!r}"
            )
    return ModelSection(
        preset=name, pretrained_backbone=pretrained, init_from=init_from, overrides=data
    )


def build_config(raw: dict[str, Any], source: str = "") -> TrainConfig:
    """Validate a parsed YAML mapping into a TrainConfig."""
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{source or 'config'}: expected a mapping at the top level")
    raw = copy.deepcopy(raw)
    if "model" not in raw:
        raise TrainConfigError("missing required section 'model'")
    if "data" not in raw:
        raise TrainConfigError("missing required section 'data'")
    model = _model_section(raw.pop("model"))
    data = raw.pop("data")
    if not isinstance(data, dict):
        raise TrainConfigError(f"data: expected a mapping, got {data!r}")
    data = dict(data)
    train_sets = [_dataset(d, f"data.train[{i}]") for i, d in enumerate(data.pop("train", []))]
    val_sets = [_dataset(d, f"data.val[{i}]") for i, d in enumerate(data.pop("val", []) or [])]
    data_cfg = from_dict(DataConfig, data, "data")
    data_cfg.train, data_cfg.val = train_sets, val_sets
    cfg = from_dict(TrainConfig, {**raw, "model": {}, "data": {}}, "", skip=("source",))
    cfg.model, cfg.data, cfg.source = model, data_cfg, source
    check(cfg)
    return cfg


def check(cfg: TrainConfig) -> None:
    """Cross-field rules."""
    names = [d.name for d in cfg.data.train]
    if len(set(names)) != len(names):
        raise TrainConfigError(f"data.train: dataset names must be unique, got {names}")
    for i, d in enumerate(cfg.data.train):
        if d.ratio is not None and cfg.data.sampling != "alternate":
            raise TrainConfigError(
                f"data.train[{i}].ratio: only used with data.sampling: alternate (with joint "
                f"sampling every step takes every dataset; set the mix with batch_size)"
            )
    run = cfg.train
    if (run.steps is None) == (run.epochs is None):
        raise TrainConfigError("train: give exactly one of 'steps' and 'epochs'")
    if run.steps is not None and run.steps < 1:
        raise TrainConfigError(f"train.steps: must be >= 1, got {run.steps}")
    if run.epochs is not None and run.epochs <= 0:
        raise TrainConfigError(f"train.epochs: must be > 0, got {run.epochs}")
    if run.epoch_of is not None and run.epoch_of not in names:
        raise TrainConfigError(f"train.epoch_of: no training dataset named {run.epoch_of!r}")
    for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
        if getattr(run, key) < 1:
            raise TrainConfigError(f"train.{key}: must be >= 1, got {getattr(run, key)}")
    if cfg.optim.lr <= 0:
        raise TrainConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")
    if cfg.optim.grad_clip is not None and cfg.optim.grad_clip <= 0:
        raise TrainConfigError(f"optim.grad_clip: must be > 0 or null, got {cfg.optim.grad_clip}")
    s = cfg.schedule
    if s.warmup_steps < 0:
        raise TrainConfigError(f"schedule.warmup_steps: must be >= 0, got {s.warmup_steps}")
    if s.name == "multistep" and not all(0 < m < 1 for m in s.milestones):
        raise TrainConfigError(
            f"schedule.milestones: fractions of the run in (0, 1), got {s.milestones}"
        )
    for task in cfg.loss.weights:
        if task not in TASKS:
            raise TrainConfigError(f"loss.weights: unknown task {task!r} (tasks: {TASKS})")
    sw = cfg.loss.seg_class_weights
    if isinstance(sw, str) and sw != "median_frequency":
        raise TrainConfigError(
            f"loss.seg_class_weights: 'median_frequency' or one weight per class, got {sw!r}"
        )
    if cfg.loss.seg_class_weight_samples < 1:
        raise TrainConfigError("loss.seg_class_weight_samples: must be >= 1")
    if cfg.loss.dwa_period < 1:
        raise TrainConfigError(f"loss.dwa_period: must be >= 1, got {cfg.loss.dwa_period}")
    if cfg.data.num_workers < 0:
        raise TrainConfigError(f"data.num_workers: must be >= 0, got {cfg.data.num_workers}")


# --- files and command-line overrides ----------------------------------------------------------


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML file, apply ``key=value`` overrides, validate."""
    raw = read_yaml(path)
    for assignment in overrides:
        apply_set(raw, assignment)
    try:
        return build_config(raw, str(path))
    except TrainConfigError as e:
        raise TrainConfigError(f"{path}: {e}") from None
