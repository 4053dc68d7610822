"""The H1 study runner: a grid of models x seeds that resumes after a kill and never redoes a
finished run; the table computed from the per-run JSONs; the README block equal to it."""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from scipy import stats
from tiny_models import tiny_overrides

from pvt_mtl_ros.model import load_checkpoint
from training import experiments, results_table
from training.config import build_config
from training.modeling import initial_model

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "training" / "configs" / "study_h1_cpu.yaml"


def tiny_study(tmp_path: Path, steps: int = 8) -> Path:
    """Two models, one seed, a few steps of 64x64 simulator crops; a kill-friendly schedule."""
    aug = {"size": [64, 64], "resize_side": "short", "scale_range": [1.0, 1.0]}
    base = {
        "seed": 0,
        "model": {"preset": "mtl_pvt_v2_b0"},
        "data": {
            "sampling": "joint",
            "train": [
                {
                    "name": "sim",
                    "type": "sim",
                    "frames": 64,
                    "frame_size": [96, 128],
                    "batch_size": 2,
                    "augment": aug,
                }
            ],
            "val": [
                {
                    "name": "sim_test",
                    "type": "sim",
                    "split": "test",
                    "frames": 3,
                    "frame_size": [96, 128],
                }
            ],
        },
        "optim": {"lr": 1e-3},
        "train": {"steps": steps, "log_every": 1, "checkpoint_every": 2, "progress": False},
        "eval": {"batch_size": 3, "latency_runs": 1, "latency_warmup": 0},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    exp = {
        "base": "base.yaml",
        "output_dir": str(tmp_path / "runs"),
        "results_dir": str(tmp_path / "results"),
        "seeds": [0],
        "model_overrides": tiny_overrides(neck_channels=32, input_size=(64, 64), seg_channels=16),
        "models": ["mtl_pvt_v2_b0", "seg_pvt_v2_b0"],
        "pairs": [["mtl_pvt_v2_b0", "seg_pvt_v2_b0"]],
        "plot": False,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


@pytest.mark.slow
def test_study_runner_resumes_after_a_kill_and_never_redoes_a_run(tmp_path):
    path = tiny_study(tmp_path)
    states = tmp_path / "runs" / "mtl_pvt_v2_b0" / "seed0" / "checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.experiments", "--config", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(states.glob("step_*.state.pt")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the runner ended before its first checkpoint"
            time.sleep(0.2)
        assert list(states.glob("step_*.state.pt")), "no checkpoint within 240 s"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "results" / "mtl_pvt_v2_b0__seed0.json").exists()

    records = experiments.run(path)
    log = (tmp_path / "runs" / "mtl_pvt_v2_b0" / "seed0" / "train.log").read_text()
    assert "resumed from" in log, "the killed run started again from step 0"
    assert [(r["model"], r["seed"]) for r in records] == [
        ("mtl_pvt_v2_b0", 0),
        ("seg_pvt_v2_b0", 0),
    ]
    mtl, seg = records
    # Equal budget: 8 steps x 2 images, for every task of each model; the twin only its task.
    assert mtl["images_seen"] == {"classification": 16, "detection": 16, "segmentation": 16}
    assert seg["images_seen"] == {"segmentation": 16}
    assert mtl["tasks"] == ["classification", "detection", "segmentation"]
    assert set(mtl["metrics"]) == {"classification", "detection", "segmentation"}
    assert set(seg["metrics"]) == {"segmentation"}
    assert set(mtl["metrics"]["detection"]["AP50_per_class"]) >= {"car", "person"}
    assert len(mtl["metrics"]["segmentation"]["IoU"]) == 11
    assert mtl["params"] > seg["params"] > 0 and mtl["gflops"] > seg["gflops"] > 0
    assert mtl["latency_ms"] > 0 and mtl["train_s"] > 0 and mtl["steps"] == 8
    assert mtl["git_commit"] and "cores" in mtl["machine"]

    # Finished runs are read back, not redone.
    files = sorted((tmp_path / "results").glob("*.json"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = experiments.run(path)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert again == records

    text = experiments.table(path)
    assert text == (tmp_path / "results" / "TABLE.md").read_text()
    # (8 steps may leave the classifier at the prior: the seed is then marked collapsed, 0†)
    assert "| mtl_pvt_v2_b0 | cla+det+seg | 0" in text and "| seg_pvt_v2_b0 | seg | 0 |" in text
    assert "side by side" not in text

    # The latency re-measure: every finished model in one process, in rounds; the table uses it.
    report = experiments.latency(path, rounds=2, runs=1)
    assert set(report["models"]) == {"mtl_pvt_v2_b0", "seg_pvt_v2_b0"}
    assert all(len(m["rounds_ms"]) == 2 and m["latency_ms"] > 0 for m in report["models"].values())
    assert (tmp_path / "results" / "latency.json").is_file()
    text = experiments.table(path)
    assert "the models side by side in one run" in text and "‡" not in text
    for name, m in report["models"].items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.split("|")]
        assert cells[-3] == f"{m['latency_ms']:.1f}", row  # latency, then train (min)
        assert m["latency_ms"] != next(r for r in records if r["model"] == name)["latency_ms"]
    assert {m["weights"] for m in report["models"].values()} == {"checkpoint"}

    # runs/ does not travel with the JSONs: a model whose checkpoint is not on the machine is
    # timed from its run's initial weights, the same layers as the trained network.
    seg_run = tmp_path / "runs" / "seg_pvt_v2_b0" / "seed0"
    trained = load_checkpoint(seg_run / "checkpoint.pt", map_location="cpu").state_dict()
    (seg_run / "checkpoint.pt").rename(seg_run / "moved.pt")
    report = experiments.latency(path, rounds=1, runs=1)
    weights = {n: m["weights"] for n, m in report["models"].items()}
    assert weights == {"mtl_pvt_v2_b0": "checkpoint", "seg_pvt_v2_b0": "initial"}
    assert "1 of them timed with initial weights" in experiments.table(path)
    report = experiments.latency(path, rounds=1, runs=1, initial_weights=True)
    assert {m["weights"] for m in report["models"].values()} == {"initial"}
    assert "all of them timed with initial weights" in experiments.table(path)
    exp, base = experiments.load_experiment(path)
    cfg = build_config(experiments.run_config(base, exp, 1, 0), str(path))
    initial = initial_model(cfg).state_dict()
    assert {k: v.shape for k, v in initial.items()} == {k: v.shape for k, v in trained.items()}
    assert not all(torch.equal(v, trained[k]) for k, v in initial.items())


def test_a_failed_run_does_not_stop_the_grid(tmp_path, monkeypatch):
    """One run raising (here: at export for its latency) is logged and skipped; the next runs,
    its JSON is written, and the end names the failure (exit status 1) for a rerun."""
    path = tiny_study(tmp_path)

    def fake_run_cell(exp, base, cell, where):
        if cell.name == "mtl_pvt_v2_b0":
            raise RuntimeError("No ONNX function found\n(long exporter report)")
        return record(cell.name, cell.seed, ["segmentation"], mIoU=0.5)

    monkeypatch.setattr(experiments, "run_cell", fake_run_cell)
    with pytest.raises(experiments.RunsFailed) as failure:
        experiments.run(path)
    assert failure.value.failed == ["mtl_pvt_v2_b0 seed 0: RuntimeError: No ONNX function found"]
    assert [r["model"] for r in failure.value.records] == ["seg_pvt_v2_b0"]
    assert (tmp_path / "results" / "seg_pvt_v2_b0__seed0.json").is_file()
    assert not (tmp_path / "results" / "mtl_pvt_v2_b0__seed0.json").exists()
    assert experiments.main(["--config", str(path)]) == 1  # the failed cell is tried again

    def bad_config(exp, base, cell, where):
        raise experiments.TrainConfigError("models[0]: no such preset")

    monkeypatch.setattr(experiments, "run_cell", bad_config)  # a config error still stops it
    assert experiments.main(["--config", str(path)]) == 2


def record(model: str, seed: int, tasks: list[str], **values) -> dict:
    """A run record with given metric values (fractions) and costs."""
    metrics = {}
    if "top1" in values:
        named = values.get("predicted_classes", 5)
        metrics["classification"] = {"top1": values["top1"], "predicted_classes": named}
        if "majority_top1" in values:
            metrics["classification"]["majority_top1"] = values["majority_top1"]
    if "mIoU" in values:
        metrics["segmentation"] = {"mIoU": values["mIoU"]}
    if "AP50" in values:
        metrics["detection"] = {"AP50": values["AP50"], "frames": 10,
                                "num_detections": values.get("num_detections", 50)}  # fmt: skip
    return {
        "model": model,
        "seed": seed,
        "tasks": tasks,
        "backbone": "pvt_v2_b0",
        "metrics": metrics,
        "params": values.get("params", 1e6),
        "gflops": 1.0,
        "latency_ms": values.get("latency_ms", 10.0),
        "train_s": 60.0,
    }


def test_table_statistics_equal_a_hand_computation():
    both = ["classification", "segmentation"]
    mtl = {0: 0.50, 1: 0.56, 2: 0.47}
    seg = {0: 0.45, 1: 0.50, 2: 0.46}
    records = [record("mtl", s, both, top1=0.9, mIoU=v, latency_ms=12.0) for s, v in mtl.items()]
    records += [record("seg", s, ["segmentation"], mIoU=v, latency_ms=8.0) for s, v in seg.items()]
    records.append(record("cls", 0, ["classification"], top1=0.8))

    d = results_table.paired(records, "mtl", "seg", "mIoU")
    diffs = [0.05, 0.06, 0.01]
    assert d["seeds"] == [0, 1, 2] and d["diffs"] == pytest.approx(diffs)
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    assert d["mean"] == pytest.approx(mean)
    assert d["p"] == pytest.approx(2 * (1 - stats.t.cdf(abs(t), 2)))
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert d["ci95"] == pytest.approx((mean - half, mean + half))
    # no seed in common: no figure rather than a made-up one
    assert results_table.paired(records, "cls", "seg", "mIoU") is None

    text = results_table.render(records, ["mtl", "seg", "cls"], [["mtl", "seg"], ["mtl", "cls"]])
    m, s = statistics.fmean(mtl.values()), statistics.stdev(mtl.values())
    row = next(line for line in text.splitlines() if line.startswith("| mtl |"))
    assert f"{100 * m:.1f} ± {100 * s:.1f}" in row and "| 0,1,2 |" in row
    cls_row = next(line for line in text.splitlines() if line.startswith("| cls |"))
    assert "| 80.0 |" in cls_row  # one seed: a mean without a spread
    pair_row = next(line for line in text.splitlines() if "| mtl | seg | mIoU |" in line)
    assert f"| {100 * mean:+.1f} |" in pair_row and f"| {d['p']:.3f} |" in pair_row
    assert "| mtl | cls | scene top-1 | 1 | +10.0 | - | - |" in text
    # a difference that rounds to zero reads +0.0, never -0.0
    near = [
        record("a", 0, ["segmentation"], mIoU=0.4),
        record("b", 0, ["segmentation"], mIoU=0.4004),
    ]
    assert "| a | b | mIoU | 1 | +0.0 | - | - |" in results_table.render(
        near, ["a", "b"], [["a", "b"]]
    )


def test_a_collapsed_run_stays_in_the_means_and_is_marked():
    """A detector with no box on any test frame is counted as it happened and flagged."""
    records = [record("det", 0, ["detection"], AP50=0.30),
               record("det", 1, ["detection"], AP50=0.0, num_detections=0),
               record("mtl", 0, ["detection", "segmentation"], AP50=0.10, mIoU=0.4,
                      num_detections=0)]  # fmt: skip
    assert results_table.collapsed(records[1]) == ["detection"]
    assert results_table.collapsed(records[0]) == []
    text = results_table.render(records, ["det", "mtl"])
    row = next(line for line in text.splitlines() if line.startswith("| det |"))
    assert "| 0,1† |" in row and "| 15.0 ± 21.2 |" in row  # the mean keeps the collapse
    assert "| 0† |" in next(line for line in text.splitlines() if line.startswith("| mtl |"))
    assert "† collapsed" in text and "det seed 1: detection; mtl seed 0: detection" in text
    assert "†" not in results_table.render(records[:1], ["det"])
    # a classifier that names one class for every test frame has collapsed too
    one = record("cls", 0, ["classification"], top1=0.125, predicted_classes=1)
    two = record("cls", 1, ["classification"], top1=0.5, predicted_classes=2)
    assert results_table.collapsed(one) == ["classification"] and results_table.collapsed(two) == []
    text = results_table.render([one, two], ["cls"])
    assert "| 0†,1 |" in text and "cls seed 0: classification" in text
    # ... and so has one that names a few classes but is no better than the split's prior
    prior = record("cls", 2, ["classification"], top1=0.18, predicted_classes=3, majority_top1=0.18)
    above = record("cls", 3, ["classification"], top1=0.30, predicted_classes=3, majority_top1=0.18)
    assert results_table.collapsed(prior) == ["classification"]
    assert results_table.collapsed(above) == []


def test_a_latency_the_side_by_side_measure_lacks_is_marked():
    """Only the re-measured models share one timing run; any other keeps its own, flagged."""
    records = [record("mtl", 0, ["segmentation"], mIoU=0.4, latency_ms=30.0),
               record("seg", 0, ["segmentation"], mIoU=0.5, latency_ms=20.0)]  # fmt: skip
    side = {"machine": "m", "measured": "2026-12-01T00:00", "models": {
        "mtl": {"latency_ms": 12.0, "backend": "openvino+bf16"}}}  # fmt: skip
    text = results_table.render(records, ["mtl", "seg"], latency=side)
    rows = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert rows["| mtl"].endswith("| 12.0 | 1.0 |")  # the re-measure's figure, unmarked
    assert rows["| seg"].endswith("| 20.0 ‡ | 1.0 |")  # its own run's figure, marked
    assert "‡ latency from the end of its own run" in text and "(seg)" in text
    side["models"]["seg"] = {"latency_ms": 9.0, "backend": "openvino+bf16"}
    assert "‡" not in results_table.render(records, ["mtl", "seg"], latency=side)


def test_single_task_twins_keep_only_their_labels_of_the_same_frames():
    exp, base = experiments.load_experiment(STUDY)
    cells = {(c.name, c.seed): c for c in experiments.grid(exp, base)}
    cfg = {
        name: build_config(experiments.run_config(base, exp, cells[(name, 0)].index, 0))
        for name in ("mtl_pvt_v2_b0", "det_pvt_v2_b0", "mtl_pvt_v2_b0_partial")
    }
    full, det, partial = (cfg[n].data.train for n in cfg)
    assert full[0].tasks is None and det[0].tasks == ["detection"]
    assert (det[0].frames, det[0].batch_size) == (full[0].frames, full[0].batch_size)
    # partial labels: three disjoint thirds, one task each, the same images per task and step
    spans = [(d.seed_offset, d.seed_offset + d.frames) for d in partial]
    assert [d.tasks for d in partial] == [["classification"], ["detection"], ["segmentation"]]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= full[0].frames
    assert {d.batch_size for d in partial} == {full[0].batch_size}
    # the grid runs seed by seed: every model's first seed before any second seed
    order = [c.seed for c in experiments.grid(exp, base)]
    assert order == sorted(order)


def test_readme_study_table_is_the_one_the_results_give():
    exp, _ = experiments.load_experiment(STUDY)
    results = ROOT / exp.results_dir
    records = results_table.load_records(results)
    if not records:
        pytest.skip(f"no study results under {results} yet")
    names = experiments.model_names(exp)
    expected = results_table.render(records, names, exp.pairs, results_table.load_latency(results))
    assert results_table.block(ROOT / "README.md", results.name) == expected, (
        "README's study table is stale: python -m training.experiments --config "
        "training/configs/study_h1_cpu.yaml --table --readme"
    )


def test_the_collapse_probe_tells_a_dead_backbone_from_a_live_one(tmp_path, capsys):
    """Random weights keep images apart at every level; a patch embedding that ignores its input
    (zero weights: every image maps to its bias) leaves no spread anywhere."""
    import torch
    from tiny_models import tiny_model

    from pvt_mtl_ros.model.checkpoint import save_checkpoint
    from training import feature_spread

    model = tiny_model(["a", "b", "c"], ["car"], ["road", "sky"])
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    live = feature_spread.feature_spread(model, images)
    assert len(live) == 4 and min(live) > 0.05
    with torch.no_grad():
        model.backbone.body.patch_embed.proj.weight.zero_()
    assert max(feature_spread.feature_spread(model, images)) < 1e-4
    with pytest.raises(ValueError, match="two images"):
        feature_spread.feature_spread(model, images[:1])
    path = save_checkpoint(tmp_path / "dead.pt", model)
    assert feature_spread.main([str(path), "--frames", "2"]) == 0
    assert "classifier: 1 distinct top-1 classes over 2 frames" in capsys.readouterr().out
