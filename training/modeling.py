"""The model config of a run: the config's model section, with class lists from the data."""

from __future__ import annotations

from typing import Any

from pvt_mtl_ros.model import ConfigError, ModelConfig, MultiTaskNet, preset
from pvt_mtl_ros.model.config import TASKS
from training.checkpoints import seed_all
from training.config import FROM_DATA, ModelSection, TrainConfig, TrainConfigError
from training.data import Source, build_source


def classes_from_data(task: str, sources: list[Source]) -> list[str]:
    labelled = [s for s in sources if task in s.tasks]
    if not labelled:
        raise TrainConfigError(
            f"model.{task}.classes: {FROM_DATA}, but no training dataset labels {task}"
        )
    first = labelled[0].classes(task)
    for s in labelled[1:]:
        if s.classes(task) != first:
            raise TrainConfigError(
                f"model.{task}.classes: {FROM_DATA}, but {labelled[0].name} and {s.name} have "
                f"different class lists ({len(first)} vs {len(s.classes(task))} classes)"
            )
    return first


def build_model_config(section: ModelSection, sources: list[Source]) -> ModelConfig:
    """Preset (or defaults) + overrides; ``classes: from_data`` filled from the datasets."""
    merged: dict[str, Any] = preset(section.preset).to_dict() if section.preset else {}
    for key, value in section.overrides.items():
        if key in TASKS and isinstance(value, dict):
            merged[key] = {**(merged.get(key) or {}), **value}
        else:
            merged[key] = value
    for task in TASKS:
        if isinstance(merged.get(task), dict) and merged[task].get("classes") == FROM_DATA:
            merged[task]["classes"] = classes_from_data(task, sources)
    merged.setdefault("name", section.preset or "")
    try:
        return ModelConfig.from_dict(merged)
    except (ConfigError, TypeError) as e:
        raise TrainConfigError(f"model: {e}") from None


def check_sources_fit(model_cfg: ModelConfig, sources: list[Source]) -> None:
    """Every dataset's task has a head, with as many classes as the dataset has."""
    for s in sources:
        for task in s.tasks:
            head = getattr(model_cfg, task)
            if head is None:
                raise TrainConfigError(
                    f"{s.where} ({s.name}) labels {task}, but the model has no {task} head "
                    f"(its tasks: {', '.join(model_cfg.tasks)})"
                )
            if len(head.classes) != len(s.classes(task)):
                raise TrainConfigError(
                    f"{s.where} ({s.name}) has {len(s.classes(task))} {task} classes but the "
                    f"model's {task} head has {len(head.classes)}: set model.{task}.classes: "
                    f"{FROM_DATA}"
                )


def initial_model(cfg: TrainConfig) -> MultiTaskNet:
    """The network a run of ``cfg`` starts from: its seed's initial weights, before any
    pretrained backbone or ``init_from``. Same layers and compute as the run's checkpoint, so
    it can stand in for one in a latency measurement where the checkpoint is not on the
    machine (only the detection post-processing sees other boxes)."""
    seed_all(cfg.seed)
    sources = [build_source(d, f"data.train[{i}]") for i, d in enumerate(cfg.data.train)]
    return MultiTaskNet(build_model_config(cfg.model, sources))
