"""Train and evaluate a grid of models x seeds under one protocol; one JSON per finished run.

    python -m training.experiments --config training/configs/study_h1_cpu.yaml
    python -m training.experiments --config ... --only mtl_pvt_v2_b0,seg_pvt_v2_b0 --seeds 0
    python -m training.experiments --config ... --table [--readme README.md]
    python -m training.experiments --config ... --latency   # every model side by side, quiet

The experiment file names a ``base`` training config (data, optimiser, schedule, steps) and a
list of ``models``. Every model trains with the same base: same steps, same per-dataset batch
sizes, same augmentation. A single-task model keeps only the datasets (and, of a dataset that
labels several tasks, only the labels) of its task, so it sees exactly the images of that task
that the multi-task models see. ``model_overrides`` apply to every model (task sections only
where the model has that task). A model entry may carry its own ``seeds`` and a
``train_config`` mapping merged into the base (partial labels, another loss balancer).

Resumable: a run whose result JSON exists is never redone; a killed run continues from its
newest checkpoint pair; a trained run whose evaluation was cut short is only evaluated. Each
finished run writes ``<results_dir>/<model>__seed<N>.json`` (metrics per task, parameters,
FLOPs, latency, training time, images seen per task, the git commit and the machine): small
files to commit, from which ``--table`` renders the study table (training/results_table.py).
The grid runs seed by seed, so every model has its first seed before any has its second.

Without ``results_dir`` (the quick comparison) it writes ``comparison.md``, ``comparison.json``
and, when matplotlib imports, ``comparison.png`` in ``output_dir``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pvt_mtl_ros.config_loader import apply_set, from_dict, merge, read_yaml
from pvt_mtl_ros.metrics.serialize import json_safe
from pvt_mtl_ros.model import COMPARISON, load_checkpoint, preset
from pvt_mtl_ros.model.config import TASKS
from training import results_table
from training.checkpoints import latest_state
from training.config import TrainConfigError, build_config, dataset_tasks, resolve_path
from training.evaluate import evaluate_checkpoint, latency_probe
from training.logs import log, setup_console
from training.modeling import initial_model
from training.trainer import train

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ExperimentConfig:
    base: str  # training YAML, relative to the experiment file
    output_dir: str = "runs/compare"  # checkpoints and evaluation outputs (never committed)
    results_dir: str | None = None  # one JSON per finished run, committed; None: quick mode
    seeds: list[int] | None = None  # default: the base's seed
    models: list[Any] = field(default_factory=lambda: list(COMPARISON))
    model_overrides: dict[str, Any] = field(default_factory=dict)
    set: list[str] = field(default_factory=list)  # key=value overrides of the base
    transfer: list[str] = field(default_factory=list)  # val datasets reported as transfer
    pairs: list[list[str]] = field(default_factory=list)  # [a, b]: a - b paired by seed
    readme: str | None = None  # the file whose marked block --table --readme replaces
    plot: bool = True


@dataclass
class Run:
    """One cell of the grid."""

    index: int  # into ExperimentConfig.models
    name: str
    seed: int


def load_experiment(path: str | Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The experiment config and its base training config (raw, with ``set`` applied)."""
    path = Path(path)
    exp = from_dict(ExperimentConfig, read_yaml(path), "")
    base_path = Path(exp.base)
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    base = read_yaml(base_path)
    for assignment in exp.set:
        apply_set(base, assignment)
    names = [_entry(m, i)[0] for i, m in enumerate(exp.models)]
    if len(set(names)) != len(names):
        raise TrainConfigError(f"models: names must be unique, got {names}")
    for i, pair in enumerate(exp.pairs):
        if len(pair) != 2 or not set(pair) <= set(names):
            raise TrainConfigError(f"pairs[{i}]: two model names of this file, got {pair}")
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


def model_names(exp: ExperimentConfig) -> list[str]:
    return [_entry(m, i)[0] for i, m in enumerate(exp.models)]


def model_tasks(entry: dict[str, Any], index: int) -> tuple[str, ...]:
    """The tasks of a models[] entry: the preset's, less those set to null, plus new ones."""
    if entry.get("preset"):
        try:
            tasks = set(preset(entry["preset"]).tasks)
        except KeyError as e:
            raise TrainConfigError(f"models[{index}]: {e.args[0]}") from None
    else:
        tasks = set()
    for task in TASKS:
        if task in entry:
            (tasks.add if entry[task] is not None else tasks.discard)(task)
    return tuple(t for t in TASKS if t in tasks)


def grid(exp: ExperimentConfig, base: dict[str, Any]) -> list[Run]:
    """Every (model, seed) cell, seed by seed."""
    default = exp.seeds if exp.seeds is not None else [int(base.get("seed", 0))]
    cells = []
    for index, model in enumerate(exp.models):
        name, entry = _entry(model, index)
        seeds = entry.get("seeds", default)
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise TrainConfigError(f"models[{index}].seeds: a list of integers, got {seeds!r}")
        cells += [Run(index, name, s) for s in seeds]
    order = sorted({c.seed for c in cells})
    return sorted(cells, key=lambda c: (order.index(c.seed), c.index))


def run_dir(exp: ExperimentConfig, run: Run) -> Path:
    out = resolve_path(exp.output_dir) / run.name
    return out if exp.results_dir is None and exp.seeds is None else out / f"seed{run.seed}"


def run_config(
    base: dict[str, Any], exp: ExperimentConfig, index: int, seed: int | None = None
) -> dict[str, Any]:
    """The training config of one cell: the base with this model and only its datasets."""
    name, entry = _entry(exp.models[index], index)
    entry = dict(entry)
    entry.pop("seeds", None)
    extra = entry.pop("train_config", None) or {}
    if not isinstance(extra, dict):
        raise TrainConfigError(f"models[{index}].train_config: a mapping, got {extra!r}")
    partial = entry.pop("partial_labels", False)
    tasks = model_tasks(entry, index)
    raw = merge(copy.deepcopy(base), extra)
    if partial:
        raw.setdefault("data", {})["train"] = [
            part for d in raw["data"].get("train", []) for part in split_by_task(d)
        ]
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
    data["train"] = [_only(d, tasks) for d in data.get("train", []) if _labels_any(d, tasks)]
    data["val"] = [d for d in data.get("val") or [] if _labels_any(d, tasks)]
    if not data["train"]:
        raise TrainConfigError(f"models[{index}] ({name}): no training dataset for its tasks")
    if seed is not None:
        raw["seed"] = seed
    run = Run(index, name, int(raw.get("seed", 0)) if seed is None else seed)
    raw["output_dir"] = str(run_dir(exp, run))
    return raw


def split_by_task(dataset: dict) -> list[dict]:
    """A simulator split labelling k tasks as k disjoint parts of its frames, one task's labels
    each, same batch size and augmentation: the situation of a COCO + ADE20K + ImageNet mix,
    at the same number of labelled images per task and step."""
    tasks = dataset_tasks(dataset)
    if len(tasks) < 2:
        return [dataset]
    if dataset.get("type") != "sim":
        raise TrainConfigError(f"partial_labels: {dataset.get('name')} is not a simulator split")
    frames, offset = int(dataset["frames"]), int(dataset.get("seed_offset") or 0)
    bounds = [frames * i // len(tasks) for i in range(len(tasks) + 1)]
    return [
        {
            **dataset,
            "name": f"{dataset['name']}_{task[:3]}",
            "frames": bounds[i + 1] - bounds[i],
            "seed_offset": offset + bounds[i],
            "tasks": [task],
        }
        for i, task in enumerate(tasks)
    ]


def _labels_any(dataset: dict, tasks: tuple[str, ...]) -> bool:
    return bool(set(dataset_tasks(dataset)) & set(tasks))


def _only(dataset: dict, tasks: tuple[str, ...]) -> dict:
    """The entry with only the labels of ``tasks`` (same images: a single-task twin's data)."""
    labelled = dataset_tasks(dataset)
    keep = [t for t in labelled if t in tasks]
    return dataset if len(keep) == len(labelled) else {**dataset, "tasks": keep}


# --- one run ----------------------------------------------------------------------------------


def result_path(exp: ExperimentConfig, run: Run) -> Path:
    return resolve_path(exp.results_dir) / f"{run.name}__seed{run.seed}.json"


def _write_json(path: Path, data: Any) -> None:
    """Atomically: a killed run never leaves half a result behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def train_once(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Train the cell (resuming a killed run) unless it finished; what the training cost."""
    cfg = build_config(raw, where)
    out = resolve_path(cfg.output_dir)
    record = out / "train_result.json"
    if record.is_file() and (out / "checkpoint.pt").is_file():
        return json.loads(record.read_text())
    result = train(cfg, resume="auto" if latest_state(out) is not None else None)
    done = {
        "checkpoint": str(result.checkpoint),
        "steps": result.steps,
        "images_seen": result.images_seen,
        "train_s": result.train_seconds,
        "images_per_s": result.images_per_s,
    }
    _write_json(record, done)
    return done


def metrics_of(report: dict[str, Any], transfer: list[str]) -> dict[str, Any]:
    """Per task the first non-transfer dataset's figures; transfer datasets under ``transfer``."""
    out: dict[str, Any] = {}
    for name, row in report["datasets"].items():
        if name in transfer:
            seg = row.get("segmentation")
            if seg is not None:
                out.setdefault("transfer", {})[name] = {**seg, "images": row["images"]}
            continue
        for task in row["tasks"]:
            if task not in out:
                out[task] = {**row[task], "dataset": name, "images": row["images"]}
    return out


def machine() -> str:
    """What ran it: CPU model and cores, torch threads, the GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def config_digest(raw: dict[str, Any]) -> str:
    """Of the run's training config without its output folder: the protocol it followed."""
    plain = {k: v for k, v in raw.items() if k != "output_dir"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def run_cell(exp: ExperimentConfig, base: dict[str, Any], run: Run, where: str) -> dict:
    """Train (or resume), evaluate and record one cell; the record is also returned."""
    raw = run_config(base, exp, run.index, run.seed)
    commit = git_commit()  # the code the run starts (or resumes) with, not the one at its end
    trained = train_once(raw, where)
    cfg = build_config(raw, where)
    out = resolve_path(cfg.output_dir)
    for d in [d for d in cfg.data.val if d.name in exp.transfer]:
        if d.root and not resolve_path(d.root).is_dir():  # e.g. a GPU machine without shared/
            log.warning("%s: no %s here: the run has no transfer figure", d.name, d.root)
            cfg.data.val.remove(d)
    report = evaluate_checkpoint(out / "checkpoint.pt", cfg, out / "eval")
    model = report["model"]
    return {
        "model": run.name,
        "seed": run.seed,
        "tasks": model["tasks"],
        "backbone": model["backbone"],
        "metrics": metrics_of(report, exp.transfer),
        "params": model["params_total"],
        "gflops": model["flops_total"] / 1e9,
        "input_size": model["input_size"],
        "latency_ms": model["latency_ms"],
        "latency_backend": model.get("latency_backend"),
        "train_s": trained["train_s"],
        "images_per_s": trained["images_per_s"],
        "steps": trained["steps"],
        "images_seen": trained["images_seen"],
        "git_commit": commit,
        "machine": machine(),
        "config_digest": config_digest(raw),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class RunsFailed(RuntimeError):
    """Cells of the grid that raised; the others ran. ``records``: those of the grid."""

    def __init__(self, failed: list[str], records: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(failed)} run(s) failed, see the log: {'; '.join(failed)}")
        self.failed, self.records = failed, records


def run(
    path: str | Path,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    time_limit: float | None = None,
    results_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Every cell not done yet (``only``/``seeds`` narrow the grid); the records of the grid.
    ``time_limit`` (seconds): no new cell starts after it (a GPU window); ``results_dir``
    replaces the experiment's. A cell that raises is logged and skipped, so that one bad run
    does not stop an unattended grid; ``RunsFailed`` at the end names every such cell (a
    rerun resumes it from its checkpoint)."""
    start = time.monotonic()
    exp, base = load_experiment(path)
    if results_dir is not None:
        exp.results_dir = results_dir
    cells = [
        c
        for c in grid(exp, base)
        if (not only or c.name in only) and (seeds is None or c.seed in seeds)
    ]
    records, failed = [], []
    for k, cell in enumerate(cells):
        where = f"{path} models[{cell.index}] seed {cell.seed}"
        done = result_path(exp, cell) if exp.results_dir else run_dir(exp, cell) / "record.json"
        if done.is_file():
            log.info("%s seed %d: done (%s)", cell.name, cell.seed, done)
            records.append(json.loads(done.read_text()))
            continue
        if time_limit is not None and time.monotonic() - start > time_limit:
            log.info("time limit (%.0f s) reached: %d cell(s) left", time_limit, len(cells) - k)
            break
        log.info("=== %s seed %d (%d/%d)", cell.name, cell.seed, k + 1, len(cells))
        try:
            record = json_safe(run_cell(exp, base, cell, where))
        except (TrainConfigError, FileNotFoundError):
            raise  # the config or the data: every later cell would fail the same way
        except Exception as e:  # anything else fails this run only; the grid goes on
            log.exception("%s seed %d failed", cell.name, cell.seed)
            first = (str(e).splitlines() or [""])[0]
            failed.append(f"{cell.name} seed {cell.seed}: {type(e).__name__}: {first}")
            continue
        _write_json(done, record)
        records.append(record)
    if exp.results_dir is None:
        write_comparison(exp, base, records)
    if failed:
        raise RunsFailed(failed, records)
    return records


def write_comparison(exp: ExperimentConfig, base: dict[str, Any], records: list[dict]) -> None:
    out_dir = resolve_path(exp.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [results_table.summary_row(r) for r in records]
    (out_dir / "comparison.json").write_text(json.dumps(json_safe(rows), indent=2))
    (out_dir / "comparison.md").write_text(results_table.comparison_markdown(rows, base))
    log.info("wrote %s", out_dir / "comparison.md")
    if exp.plot:
        results_table.plot(records, out_dir / "comparison.png")


def study_results(
    path: str | Path, results_dir: str | None, option: str
) -> tuple[ExperimentConfig, dict[str, Any], Path]:
    """The experiment, its base and its results folder (``results_dir`` in place of the
    config's), for an ``option`` that reads the per-run JSONs."""
    exp, base = load_experiment(path)
    if results_dir is not None:
        exp.results_dir = results_dir
    if exp.results_dir is None:
        raise TrainConfigError(f"{path}: {option} needs results_dir (the per-run JSONs)")
    return exp, base, resolve_path(exp.results_dir)


def latency(
    path: str | Path,
    rounds: int = 3,
    runs: int = 10,
    results_dir: str | None = None,
    initial_weights: bool = False,
) -> dict[str, Any]:
    """Re-measure the latency of every model that has a finished run, side by side in one
    process: each model's first finished seed behind the base's ``eval.latency_backend``,
    from its checkpoint where this machine has it, else from that run's initial weights
    (recorded as ``weights``; ``initial_weights`` times every model so: the same worst-case
    box post-processing for all). The models go in turn for ``rounds`` rounds of ``runs``
    timed frames (after two warm-up frames each), so that load from other work falls on all
    of them alike. The runs' own figures were taken one at a time, at the end of each
    training, on whatever the machine was doing then. Writes ``<results_dir>/latency.json``,
    which ``--table`` then uses."""
    exp, base, results = study_results(path, results_dir, "--latency")
    finished = {(r["model"], r["seed"]) for r in results_table.load_records(results)}
    probes: dict[str, tuple] = {}
    for cell in grid(exp, base):
        if cell.name in probes or (cell.name, cell.seed) not in finished:
            continue
        cfg = build_config(run_config(base, exp, cell.index, cell.seed), str(path))
        checkpoint = resolve_path(cfg.output_dir) / "checkpoint.pt"
        if checkpoint.is_file() and not initial_weights:
            model, weights = load_checkpoint(checkpoint, map_location="cpu"), "checkpoint"
        else:
            # runs/ does not travel with the JSONs; the untrained network has the same
            # layers and compute, so every model still joins the one side-by-side run
            if not initial_weights:
                log.info("%s seed %d: no %s here: timing its initial weights", cell.name,
                         cell.seed, checkpoint)  # fmt: skip
            model, weights = initial_model(cfg).eval(), "initial"
        predictor, once = latency_probe(model, cfg.eval.latency_backend)
        once(), once()  # warm-up: first-run allocations and kernel selection
        probes[cell.name] = (cell.seed, predictor, once, weights)
    if not probes:
        raise FileNotFoundError(f"no finished run in {results}")
    medians: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(rounds):
        for name, (_, _, once, _) in probes.items():
            medians[name].append(statistics.median(once() for _ in range(runs)))
    report = {
        "machine": machine(),
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rounds": rounds,
        "runs": runs,
        "models": {
            name: {
                "latency_ms": statistics.median(medians[name]),
                "rounds_ms": medians[name],
                "seed": seed,
                "weights": weights,
                "backend": str(predictor.spec),
                "input_size": list(predictor.cfg.input_size),
            }
            for name, (seed, predictor, _, weights) in probes.items()
        },
    }
    _write_json(results / results_table.LATENCY_FILE, json_safe(report))
    log.info("wrote %s (%d models, %d rounds)", results_table.LATENCY_FILE, len(probes), rounds)
    return report


def table(path: str | Path, update_readme: bool = False, results_dir: str | None = None) -> str:
    """The study table from the result JSONs, written beside them as TABLE.md; with
    ``update_readme`` also into the marked block of the experiment's ``readme`` file."""
    exp, _, results = study_results(path, results_dir, "--table")
    names = model_names(exp)
    records = results_table.load_records(results)
    text = results_table.render(records, names, exp.pairs, results_table.load_latency(results))
    (results / "TABLE.md").write_text(text)
    if exp.plot:
        results_table.plot(records, results / "accuracy_vs_cost.png")
    if update_readme:
        if not exp.readme:
            raise TrainConfigError(f"{path}: --readme needs the experiment's readme key")
        results_table.replace_block(resolve_path(exp.readme), results.name, text)
        log.info("updated the %s block of %s", results.name, exp.readme)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.experiments", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--only", help="comma-separated model names to run")
    parser.add_argument("--seeds", help="comma-separated seeds to run (default: the grid's)")
    parser.add_argument(
        "--table", action="store_true", help="render the table from the result JSONs; no training"
    )
    parser.add_argument(
        "--readme", action="store_true", help="with --table: update the readme file's block too"
    )
    parser.add_argument("--results-dir", help="where the run JSONs go (default: the config's)")
    parser.add_argument(
        "--time-limit", type=float, metavar="S", help="start no new run after S seconds"
    )
    parser.add_argument(
        "--latency", action="store_true",
        help="re-measure every finished model's latency side by side (latency.json); no training",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="with --latency: rounds")
    parser.add_argument(
        "--initial-weights", action="store_true",
        help="with --latency: time every model from its initial weights, checkpoint or not",
    )  # fmt: skip
    args = parser.parse_args(argv)
    setup_console()
    try:
        if args.latency:
            report = latency(
                args.config, args.rounds, results_dir=args.results_dir,
                initial_weights=args.initial_weights,
            )  # fmt: skip
            for name, row in report["models"].items():
                print(f"{name}: {row['latency_ms']:.1f} ms ({row['backend']}, rounds "
                      f"{', '.join(f'{v:.1f}' for v in row['rounds_ms'])})")  # fmt: skip
            return 0
        if args.table:
            print(table(args.config, args.readme, args.results_dir))
            return 0
        exp, base = load_experiment(args.config)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        only = args.only.split(",") if args.only else None
        records = run(args.config, only, seeds, args.time_limit, args.results_dir)
    except RunsFailed as e:
        log.error("%s", e)
        return 1
    except (TrainConfigError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    if exp.results_dir is None:
        rows = [results_table.summary_row(r) for r in records]
        print(results_table.comparison_markdown(rows, base))
    else:
        print(table(args.config, results_dir=args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
