"""Train and evaluate several models under one budget; write a comparison table (+ plot).

    python -m training.experiments --config training/configs/compare_cpu.yaml
    python -m training.experiments --config ... --only mtl_pvt_v2_b0,seg_pvt_v2_b1 --skip-done

The experiment file names a ``base`` training config (data, optimiser, schedule, steps) and a
list of ``models``. Every model trains with the same base: same steps, same per-dataset batch
sizes, same seed. A single-task model keeps only the datasets its task labels, so it sees the
same images of that task as the multi-task models do. ``model_overrides`` apply to every model
(task sections only where the model has that task): small inputs and channels for CPU runs.

Writes ``comparison.md``, ``comparison.json`` and, when matplotlib imports, ``comparison.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvt_mtl_ros.model import COMPARISON, preset
from pvt_mtl_ros.model.config import TASKS
from training.config import (
    DATASET_TASKS,
    TrainConfigError,
    build_config,
    from_dict,
    read_yaml,
    resolve_path,
    set_dotted,
)
from training.evaluate import evaluate_checkpoint, json_safe
from training.logs import log, setup_console
from training.trainer import train


@dataclass
class ExperimentConfig:
    base: str  # training YAML, relative to the experiment file
    output_dir: str = "runs/compare"
    models: list[Any] = field(default_factory=lambda: list(COMPARISON))
    model_overrides: dict[str, Any] = field(default_factory=dict)
    set: list[str] = field(default_factory=list)  # key=value overrides of the base
    plot: bool = True


def load_experiment(path: str | Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The experiment config and its base training config (raw, with ``set`` applied)."""
    path = Path(path)
    exp = from_dict(ExperimentConfig, read_yaml(path), "")
    base_path = Path(exp.base)
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    base = read_yaml(base_path)
    for assignment in exp.set:
        set_dotted(base, assignment)
    names = [_entry(m, i)[0] for i, m in enumerate(exp.models)]
    if len(set(names)) != len(names):
        raise TrainConfigError(f"models: names must be unique, got {names}")
    return exp, base


def _entry(model: Any, index: int) -> tuple[str, dict[str, Any]]:
    """A models[] item: a preset name, or a mapping {name, preset, <model overrides>}."""
    if isinstance(model, str):
        return model, {"preset": model}
    if isinstance(model, dict) and ("preset" in model or "backbone" in model):
        model = dict(model)
        name = model.pop("name", None) or model.get("preset")
        if not name:
            raise TrainConfigError(f"models[{index}]: a model without preset needs a name")
        return str(name), model
    raise TrainConfigError(f"models[{index}]: a preset name or a mapping with 'preset'")


def run_config(base: dict[str, Any], exp: ExperimentConfig, index: int) -> dict[str, Any]:
    """The training config of one model: the base with this model and only its datasets."""
    name, entry = _entry(exp.models[index], index)
    raw = copy.deepcopy(base)
    if entry.get("preset"):
        try:
            tasks = preset(entry["preset"]).tasks
        except KeyError as e:
            raise TrainConfigError(f"models[{index}]: {e.args[0]}") from None
    else:
        tasks = tuple(t for t in TASKS if entry.get(t))
    model: dict[str, Any] = {}
    for key, value in exp.model_overrides.items():
        if key in TASKS and key not in tasks:
            continue  # don't add heads the preset lacks
        model[key] = copy.deepcopy(value)
    for key, value in entry.items():
        if key in TASKS and isinstance(value, dict) and isinstance(model.get(key), dict):
            model[key] = {**model[key], **value}
        else:
            model[key] = value
    model.setdefault("name", name)
    raw["model"] = model
    data = raw.setdefault("data", {})
    data["train"] = [d for d in data.get("train", []) if _labels_any(d, tasks)]
    data["val"] = [d for d in data.get("val") or [] if _labels_any(d, tasks)]
    if not data["train"]:
        raise TrainConfigError(f"models[{index}] ({name}): no training dataset for its tasks")
    raw["output_dir"] = str(resolve_path(exp.output_dir) / name)
    return raw


def _labels_any(dataset: dict, tasks: tuple[str, ...]) -> bool:
    return bool(set(DATASET_TASKS.get(dataset.get("type"), ())) & set(tasks))


def run(
    path: str | Path, only: list[str] | None = None, skip_done: bool = False
) -> list[dict[str, Any]]:
    exp, base = load_experiment(path)
    out_dir = resolve_path(exp.output_dir)
    rows = []
    for index, model in enumerate(exp.models):
        name, _ = _entry(model, index)
        if only and name not in only:
            continue
        raw = run_config(base, exp, index)
        cfg = build_config(raw, f"{path} models[{index}]")
        metrics_file = out_dir / name / "eval" / "metrics.json"
        if skip_done and metrics_file.is_file():
            log.info("%s: done before, reading %s", name, metrics_file)
            report = json.loads(metrics_file.read_text())
            seconds = report.get("train_seconds")
        else:
            log.info("=== %s (%d/%d)", name, index + 1, len(exp.models))
            shutil.rmtree(out_dir / name / "checkpoints", ignore_errors=True)  # a rerun
            t0 = time.perf_counter()
            result = train(cfg)
            seconds = time.perf_counter() - t0
            report = evaluate_checkpoint(result.checkpoint, cfg, out_dir / name / "eval")
            report["train_seconds"] = seconds
            metrics_file.write_text(json.dumps(json_safe(report), indent=2))
        rows.append(
            {
                "name": name,
                "backbone": report["model"]["backbone"],
                "tasks": report["model"]["tasks"],
                "train_seconds": seconds,
                **report["summary"],
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(json_safe(rows), indent=2))
    (out_dir / "comparison.md").write_text(markdown(rows, base))
    log.info("wrote %s", out_dir / "comparison.md")
    if exp.plot:
        plot(rows, out_dir / "comparison.png")
    return rows


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown(rows: list[dict[str, Any]], base: dict[str, Any]) -> str:
    steps = base.get("train", {}).get("steps") or f"{base.get('train', {}).get('epochs')} epochs"
    lines = [
        f"Same budget for every model: {steps} steps, seed {base.get('seed', 0)}, "
        "same datasets and batch sizes per task. Metrics in %, latency = predict() on one "
        "input-size image, batch 1.",
        "",
        "| model | tasks | top-1 | top-5 | AP | AP50 | mIoU | params (M) | GFLOPs | latency (ms) "
        "| train (s) |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        tasks = "+".join(t[:3] for t in r["tasks"])
        secs = "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
        lat = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}"
        lines.append(
            f"| {r['name']} | {tasks} | {_pct(r['top1'])} | {_pct(r['top5'])} | {_pct(r['AP'])} "
            f"| {_pct(r['AP50'])} | {_pct(r['mIoU'])} | {r['params_M']:.2f} | {r['gflops']:.2f} "
            f"| {lat} | {secs} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Each metric against latency, one point per model; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no %s (pip install matplotlib to get it)", path.name)
        return None
    metrics = [("top1", "top-1 (%)"), ("AP", "box AP (%)"), ("mIoU", "mIoU (%)")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics):
        for r in rows:
            if r.get(key) is None or r.get("latency_ms") is None:
                continue
            ax.scatter(r["latency_ms"], 100 * r[key], s=20 + 4 * r["params_M"])
            ax.annotate(r["name"], (r["latency_ms"], 100 * r[key]), fontsize=7)
        ax.set_xlabel("latency (ms, batch 1)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    log.info("wrote %s", path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.experiments", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--only", help="comma-separated model names to run")
    parser.add_argument(
        "--skip-done", action="store_true", help="reuse models that have eval/metrics.json"
    )
    args = parser.parse_args(argv)
    setup_console()
    try:
        exp, base = load_experiment(args.config)
        rows = run(args.config, args.only.split(",") if args.only else None, args.skip_done)
    except (TrainConfigError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    print(markdown(rows, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
