"""The training module on the shared samples: joint multi-task training, exact resume after a
kill, 2-process DDP on CPU (gloo), evaluation output, the experiment runner and the configs."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from tiny_models import tiny_overrides

from pvt_mtl_ros.config_loader import apply_set
from pvt_mtl_ros.model import load_checkpoint, save_checkpoint
from pvt_mtl_ros.model.multitask import MultiTaskNet
from training import evaluate, experiments
from training import train as train_cli
from training.checkpoints import latest_state
from training.config import (
    TrainConfigError,
    build_config,
    load_config,
    read_yaml,
)
from training.data import build_source
from training.distributed import DistInfo
from training.logs import close_file_handlers, read_log
from training.modeling import build_model_config, check_sources_fit
from training.optim import lr_factor
from training.sampler import StreamBatchSampler, choose_stream
from training.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
TASKS = ("classification", "detection", "segmentation")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine two spinning OpenMP threads made these
    runs up to 10x slower; the checks are about results, not speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_raw(
    shared_data: Path, out_dir: Path, steps: int = 6, checkpoint_every: int = 2, **sets
) -> dict:
    """The CPU joint preset, cut down: 96 px, 2 images per dataset and step, few samples.
    ``sets``: dotted keys, e.g. ``**{"loss.balancer": "dwa"}``."""
    raw = read_yaml(CONFIGS / "joint_cpu.yaml")
    settings = {
        "output_dir": str(out_dir),
        "model.input_size": [96, 96],
        "train.steps": steps,
        "train.log_every": 1,
        "train.checkpoint_every": checkpoint_every,
        "train.progress": False,
        "schedule.warmup_steps": 2,
        "eval.max_images": 3,
        "eval.latency_runs": 2,
        "eval.latency_warmup": 1,
        **sets,
    }
    for key, value in settings.items():
        apply_set(raw, f"{key}={json.dumps(value)}")
    for d in raw["data"]["train"] + raw["data"]["val"]:
        d["max_samples"] = 6
        if d["type"] == "camvid":
            d["root"] = str(shared_data / "camvid")
        elif d["type"] == "coco":
            d["images"] = str(shared_data / "coco128" / "images")
            d["annotations"] = str(shared_data / "coco128" / "annotations" / "instances.json")
        elif d["type"] == "imagenet_list":
            d["images"] = str(shared_data / "imagenet" / "images")
            d["labels"] = str(shared_data / "imagenet" / "labels.tsv")
    for d in raw["data"]["train"]:
        d["batch_size"] = 2
    return raw


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("optimiser", "{}", r"unknown key\(s\) optimiser"),
        ("optim.lr", "fast", r"optim\.lr: expected a number"),
        ("train.amp", "fp8", r"train\.amp: 'fp8' is not one of"),
        ("train.epochs", "3", "exactly one of 'steps' and 'epochs'"),
        ("data.train.1.root", "/x", r"data\.train\[1\]: key\(s\) root do not apply to type coco"),
        ("data.train.0.ratio", "2", r"data\.train\[0\]\.ratio: only used with"),
        ("data.train.0.augment.flip", "0.5", r"data\.train\[0\]\.augment: unknown key\(s\) flip"),
        ("data.sampling", "mixed", r"data\.sampling: 'mixed' is not one of"),
        ("model.preset", "mtl_resnet50", r"model\.preset: unknown preset 'mtl_resnet50'"),
        ("model.neck_channel", "64", r"model: unknown key\(s\) neck_channel"),
        ("model.detection.iou", "0.5", r"model\.detection: unknown key\(s\) iou"),
        ("loss.balancer", "gradnorm", r"loss\.balancer: 'gradnorm' is not one of"),
        ("loss.weights.depth", "1", r"loss\.weights: unknown task 'depth'"),
    ],
)
def test_bad_config_names_the_key(key, value, message):
    with pytest.raises(TrainConfigError, match=message):
        load_config(CONFIGS / "joint_cpu.yaml", [f"{key}={value}"])


def test_cli_rejects_a_bad_config_with_exit_code_2(tmp_path):
    raw = read_yaml(CONFIGS / "joint_cpu.yaml")
    raw["train"]["stepz"] = 3
    assert train_cli.main(["--config", str(write_yaml(tmp_path / "bad.yaml", raw))]) == 2
    assert evaluate.main(["--config", str(tmp_path / "missing.yaml"), "--checkpoint", "x"]) == 2


def test_shipped_configs_parse():
    for path in sorted(CONFIGS.glob("*.yaml")):
        if "base" in read_yaml(path):  # an experiment: a grid over a base training config
            exp, base = experiments.load_experiment(path)
            for i in range(len(exp.models)):
                build_config(experiments.run_config(base, exp, i))
        else:
            cfg = load_config(path)
            assert cfg.data.train and cfg.data.val, path.name
    # the paper recipes the presets claim
    coco, ade = (
        load_config(CONFIGS / "coco_det_1x.yaml"),
        load_config(CONFIGS / "ade20k_semfpn.yaml"),
    )
    assert (coco.train.epochs, coco.optim.lr) == (12, 1e-4)
    assert coco.model.overrides["input_size"] == [800, 1333]
    assert (ade.train.steps, ade.optim.lr, ade.schedule.name) == (40000, 2e-4, "poly")
    assert ade.data.train[0].augment.size == (512, 512)
    imagenet = load_config(CONFIGS / "imagenet_cls.yaml")
    assert (imagenet.train.epochs, imagenet.model.overrides["input_size"]) == (300, [224, 224])


def test_heads_are_sized_from_the_data(shared_data, tmp_path):
    cfg = build_config(small_raw(shared_data, tmp_path))
    sources = [build_source(d, f"data.train[{i}]") for i, d in enumerate(cfg.data.train)]
    model_cfg = build_model_config(cfg.model, sources)
    assert len(model_cfg.segmentation.classes) == 11  # CamVid
    assert len(model_cfg.detection.classes) == 80 and model_cfg.detection.classes[0] == "person"
    assert len(model_cfg.classification.classes) == 1000  # ImageNet labels
    assert model_cfg.classification.classes[0] == "tench"
    assert model_cfg.neck_channels == 64 and model_cfg.detection.num_convs == 2
    # the preset's own ADE20K head does not fit CamVid: said so, with the fix
    cfg.model.overrides["segmentation"] = {"channels": 32}
    with pytest.raises(TrainConfigError, match="11 segmentation classes.*150.*from_data"):
        check_sources_fit(build_model_config(cfg.model, sources), sources)


def test_pretrained_backbone_is_loaded_and_reported(shared_data, tmp_path):
    weights = timm.create_model("pvt_v2_b0", pretrained=False).state_dict()
    torch.save(weights, tmp_path / "pvt_v2_b0.pth")
    sets = {"model.pretrained_backbone": str(tmp_path / "pvt_v2_b0.pth")}
    cfg = build_config(small_raw(shared_data, tmp_path / "run", **sets))
    trainer = Trainer(cfg, DistInfo(), "cpu")
    close_file_handlers()  # train() does this; here only the set-up runs
    body = trainer.model.backbone.body.state_dict()
    for key in ("patch_embed.proj.weight", "stages_3.norm.weight"):
        assert torch.equal(body[key], weights[key.replace("_", ".", 1) if "stages" in key else key])
    report = (tmp_path / "run" / "train.log").read_text()
    assert "pretrained backbone:" in report and "classifier keys ignored" in report


def test_init_from_a_checkpoint_fine_tunes_it(shared_data, tmp_path):
    """model.init_from starts from every weight of a run's (or a shipped FP16) checkpoint;
    one that does not fit the model is a config error naming what differs."""
    first = train(build_config(small_raw(shared_data, tmp_path / "a", steps=2)))
    shipped = tmp_path / "shipped.pt"
    save_checkpoint(shipped, load_checkpoint(first.checkpoint), half=True)
    cfg = build_config(small_raw(shared_data, tmp_path / "b", **{"model.init_from": str(shipped)}))
    trainer = Trainer(cfg, DistInfo(), "cpu")
    close_file_handlers()
    want = load_checkpoint(shipped).state_dict()
    got = trainer.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert "initialised every weight from" in (tmp_path / "b" / "train.log").read_text()

    sets = {"model.init_from": str(shipped), "model.neck_channels": 32}
    with pytest.raises(TrainConfigError, match=r"model\.init_from: .*shape"):
        Trainer(build_config(small_raw(shared_data, tmp_path / "c", **sets)), DistInfo(), "cpu")
    close_file_handlers()
    with pytest.raises(TrainConfigError, match="model.init_from: expected a path"):
        build_config(small_raw(shared_data, tmp_path / "d", **{"model.init_from": 3}))


def test_a_fresh_run_does_not_overwrite_an_earlier_one(shared_data, tmp_path):
    raw = small_raw(shared_data, tmp_path / "run", steps=1, checkpoint_every=1)
    train(build_config(raw))
    with pytest.raises(TrainConfigError, match="checkpoints of an earlier run.*--resume"):
        train(build_config(raw))


# --- sampling and schedule ---------------------------------------------------------------------


def test_stream_sampler_resumes_at_any_batch_and_shards_ranks():
    full = StreamBatchSampler(10, 3, seed=7, stream=1)
    it = iter(full)
    batches = [next(it) for _ in range(8)]
    resumed = next(iter(StreamBatchSampler(10, 3, seed=7, stream=1, start_batch=5)))
    assert resumed == batches[5]
    indices = [i for b in batches for i, _ in b]
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))
    assert indices[:10] != indices[10:20]  # a new order every epoch
    assert len({s for b in batches for _, s in b}) == 24  # one augmentation seed per sample
    ranks = [StreamBatchSampler(10, 5, 7, 1, rank=r, world_size=2) for r in (0, 1)]
    epoch = [[i for i, _ in next(iter(s))] for s in ranks]
    assert sorted(epoch[0] + epoch[1]) == list(range(10))


def test_alternate_sampling_follows_ratios_and_repeats():
    picks = [choose_stream(0, step, [3.0, 1.0]) for step in range(2000)]
    assert picks == [choose_stream(0, step, [3.0, 1.0]) for step in range(2000)]
    assert 0.72 < picks.count(0) / len(picks) < 0.78


def test_lr_schedules():
    cfg = load_config(CONFIGS / "joint_cpu.yaml").schedule
    cfg.warmup_steps, cfg.warmup_factor, cfg.min_lr_ratio = 10, 0.1, 0.0
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(10, 100, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lr_factor(100, 100, cfg) == pytest.approx(0.0)
    cfg.name, cfg.warmup_steps = "poly", 0
    assert lr_factor(50, 100, cfg) == pytest.approx(0.5**0.9)
    cfg.name, cfg.milestones = "multistep", [0.5, 0.75]
    assert [lr_factor(s, 100, cfg) for s in (49, 50, 80)] == pytest.approx([1.0, 0.1, 0.01])


# --- training ----------------------------------------------------------------------------------


def test_joint_training_lowers_every_task_loss(shared_data, tmp_path):
    raw = small_raw(
        shared_data, tmp_path / "run", steps=24, **{"optim.lr": 2e-3, "loss.balancer": "fixed"}
    )
    for d in raw["data"]["train"]:
        d["max_samples"] = 4  # few images: the loss must fall within a couple of dozen steps
        d["augment"] = {"scale_range": [1.0, 1.0], "color_jitter": None}
    result = train(build_config(raw))
    rows = read_log(result.output_dir / "log.csv")
    assert [r["step"] for r in rows] == list(range(1, 25))
    for task in TASKS:
        values = [r[f"loss_{task}"] for r in rows]
        start, end = sum(values[:3]) / 3, sum(values[-3:]) / 3
        assert end < 0.8 * start, (task, values)
    assert result.checkpoint.is_file() and rows[-1]["images_per_s"] > 0


def _tensors(obj, prefix=""):
    """Every tensor in a nested state, by path."""
    if torch.is_tensor(obj):
        return {prefix: obj}
    out = {}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        items = ()
    for k, v in items:
        out.update(_tensors(v, f"{prefix}/{k}"))
    return out


def assert_same_run_end(a: Path, b: Path, step: int) -> None:
    for suffix in (".pt", ".state.pt"):
        name = f"checkpoints/step_{step:07d}{suffix}"
        ta = _tensors(torch.load(a / name, weights_only=True))
        tb = _tensors(torch.load(b / name, weights_only=True))
        assert ta.keys() == tb.keys()
        differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not differ, f"{suffix}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    sa = torch.load(a / f"checkpoints/step_{step:07d}.state.pt", weights_only=True)
    sb = torch.load(b / f"checkpoints/step_{step:07d}.state.pt", weights_only=True)
    assert sa["consumed"] == sb["consumed"] and sa["balancer"].keys() == sb["balancer"].keys()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(shared_data, tmp_path):
    """6 steps straight == a run killed (SIGKILL) after its step-2 checkpoint, then --resume."""
    straight = tmp_path / "straight"
    train(build_config(small_raw(shared_data, straight, checkpoint_every=1)))
    killed = tmp_path / "killed"
    config = write_yaml(tmp_path / "run.yaml", small_raw(shared_data, killed, checkpoint_every=1))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.train", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        deadline = time.monotonic() + 150
        marker = killed / "checkpoints" / "step_0000002.state.pt"
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert marker.exists(), (tmp_path / "stderr.txt").read_text()[-2000:]
    state = latest_state(killed)
    assert state is not None and int(state.name.split("_")[1].split(".")[0]) < 6
    assert train_cli.main(["--config", str(config), "--resume"]) == 0
    assert_same_run_end(straight, killed, 6)
    # the log reads as one run
    assert [r["step"] for r in read_log(killed / "log.csv")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["dwa", "pcgrad"])
def test_stopped_run_resumes_exactly_with_stateful_balancers(shared_data, tmp_path, balancer):
    sets = {"loss.balancer": balancer, "loss.dwa_period": 2}
    raw_a = small_raw(shared_data, tmp_path / "a", steps=5, **sets)
    raw_b = small_raw(shared_data, tmp_path / "b", steps=5, **sets)
    train(build_config(raw_a))
    assert train(build_config(raw_b), stop_after=3).checkpoint is None
    result = train(build_config(raw_b), resume="auto")
    assert result.steps == 5 and result.checkpoint.is_file()
    assert_same_run_end(tmp_path / "a", tmp_path / "b", 5)


def test_worker_processes_do_not_change_the_run(shared_data, tmp_path):
    """Each sample carries its own augmentation seed: loading in 2 worker processes gives the
    same weights as loading in the main process (here with alternate sampling)."""
    ends = []
    for workers in (0, 2):
        sets = {"data.num_workers": workers, "data.sampling": "alternate"}
        raw = small_raw(shared_data, tmp_path / f"w{workers}", steps=4, **sets)
        for d, ratio in zip(raw["data"]["train"], (2.0, 1.0, 1.0)):
            d["ratio"] = ratio
        result = train(build_config(raw))
        ends.append(torch.load(result.checkpoint, weights_only=True)["state_dict"])
        rows = read_log(result.output_dir / "log.csv")
        # one dataset per step: exactly one task's loss per row
        assert all(sum(f"loss_{t}" in r for t in TASKS) == 1 for r in rows)
    assert all(torch.equal(ends[0][k], ends[1][k]) for k in ends[0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["uncertainty", "pcgrad"])
def test_ddp_two_processes_on_cpu(shared_data, tmp_path, balancer):
    """torchrun, 2 processes, gloo on 127.0.0.1; the trainer checks that replicas stay equal."""
    out = tmp_path / "ddp"
    raw = small_raw(shared_data, out, steps=3, **{"loss.balancer": balancer})
    config = write_yaml(tmp_path / "ddp.yaml", raw)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "training.train", "--config", str(config),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpu x2" in proc.stderr
    rows = read_log(out / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert (out / "checkpoint.pt").is_file()
    state = torch.load(out / "checkpoints" / "step_0000003.state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # each rank read its own shard: 2 ranks x 3 steps x 2 images per dataset
    assert state["consumed"] == {"camvid": 3, "coco": 3, "imagenet": 3}


# --- evaluation and comparison -----------------------------------------------------------------


def test_evaluate_writes_json_and_markdown_with_every_metric(shared_data, tmp_path):
    raw = small_raw(shared_data, tmp_path / "run")
    cfg = build_config(raw)
    sources = [build_source(d, f"data.train[{i}]") for i, d in enumerate(cfg.data.train)]
    checkpoint = save_checkpoint(
        tmp_path / "untrained.pt", MultiTaskNet(build_model_config(cfg.model, sources))
    )
    config = write_yaml(tmp_path / "eval.yaml", raw)
    out = tmp_path / "eval"
    code = evaluate.main(
        ["--config", str(config), "--checkpoint", str(checkpoint), "--output", str(out)]
    )
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    model = report["model"]
    for key in ("params_total", "flops_total", "latency_ms", "input_size", "device"):
        assert model[key] is not None, key
    assert model["params_total"] == sum(model["params"].values()) > 0
    assert model["flops_total"] > 0
    sets = report["datasets"]
    assert set(sets) == {"camvid_val", "coco", "imagenet"}
    assert set(sets["coco"]["detection"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    seg = sets["camvid_val"]["segmentation"]
    assert set(seg) >= {"mIoU", "pixel_accuracy", "mean_accuracy", "IoU"}
    assert len(seg["IoU"]) == 11 and 0 <= seg["pixel_accuracy"] <= 1
    scene = sets["imagenet"]["classification"]
    assert set(scene) == {"top1", "top5", "predicted_classes", "majority_top1"}
    assert 1 <= scene["predicted_classes"] <= 3  # distinct top-1 classes over the 3 images
    val = next(d for d in cfg.data.val if d.name == "imagenet")
    batches = evaluate._batches(build_source(val, "val"), 3, 3)
    labels = [int(t["label"]) for _, targets in batches for t in targets]
    assert scene["majority_top1"] == max(map(labels.count, labels)) / 3
    assert all(sets[n]["images"] == 3 for n in sets)
    # the detections json is COCO results format with real category ids, in original pixels
    detections = json.loads((out / sets["coco"]["detection"]["results_json"]).read_text())
    assert detections and {d["category_id"] for d in detections} <= set(range(1, 91))
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 for d in detections)
    assert max(d["bbox"][0] + d["bbox"][2] for d in detections) > 96  # not network pixels
    assert set(report["summary"]) >= {"top1", "top5", "AP", "mIoU", "params_M", "gflops"}
    md = (out / "metrics.md").read_text()
    for word in ("mIoU", "AP50", "top-1", "GFLOPs", "latency", "Sky"):
        assert word in md
    # test-time resolution: --input-size overrides the checkpoint's letterbox
    args = ["--config", str(config), "--checkpoint", str(checkpoint), "--set", "eval.max_images=1"]
    assert evaluate.main([*args, "--output", str(out / "big"), "--input-size", "128", "160"]) == 0
    big = json.loads((out / "big" / "metrics.json").read_text())["model"]
    assert big["input_size"] == [128, 160] and big["flops_total"] > model["flops_total"]
    assert evaluate.main([*args, "--input-size", "0", "160"]) == 2


def test_experiment_runner_writes_the_comparison(shared_data, tmp_path):
    base = write_yaml(tmp_path / "base.yaml", small_raw(shared_data, tmp_path / "unused", steps=2))
    exp = {
        "base": str(base),
        "output_dir": str(tmp_path / "compare"),
        "models": ["mtl_pvt_v2_b0", {"name": "seg_b0", "preset": "seg_pvt_v2_b0"}],
        "model_overrides": tiny_overrides(neck_channels=64, input_size=(96, 96), seg_channels=32),
        "set": ["eval.max_images=2"],
    }
    records = experiments.run(write_yaml(tmp_path / "exp.yaml", exp))
    assert [r["model"] for r in records] == ["mtl_pvt_v2_b0", "seg_b0"]
    assert records[1]["tasks"] == ["segmentation"] and set(records[1]["metrics"]) == {
        "segmentation"
    }
    assert records[0]["params"] > records[1]["params"] > 0
    md = (tmp_path / "compare" / "comparison.md").read_text()
    assert "| mtl_pvt_v2_b0 | cla+det+seg |" in md and "| seg_b0 | seg |" in md
    rows = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert (
        rows[1]["AP"] is None and rows[1]["mIoU"] == records[1]["metrics"]["segmentation"]["mIoU"]
    )
    try:
        import matplotlib  # noqa: F401

        assert (tmp_path / "compare" / "comparison.png").is_file()
    except ImportError:
        assert not (tmp_path / "compare" / "comparison.png").exists()


def test_sim_dataset_trains_and_evaluates_all_three_tasks(tmp_path, sim_training_args):
    """One dataset labelling every task: heads sized from it, one loss per task, and detection
    scored from in-memory arrays (no COCO json) with per-class AP50."""
    sets = {"data.val.0.frames": 3, "data.val.0.frame_size": [120, 160]}
    assert train_cli.main([*sim_training_args(tmp_path / "run", **sets), "--evaluate"]) == 0
    rows = read_log(tmp_path / "run" / "log.csv")
    assert {"loss_classification", "loss_detection", "loss_segmentation"} <= set(rows[-1])
    report = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    sim = report["datasets"]["sim_val"]
    assert sim["tasks"] == ["classification", "detection", "segmentation"]
    assert set(sim["detection"]["AP50_per_class"]) == {
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "bus",
        "truck",
    }
    assert len(sim["segmentation"]["IoU"]) == 11 and "top1" in sim["classification"]
    # the demo config scores AP with KITTI's height rule and reports every box beside it
    assert sim["detection"]["min_box_height"] == 25
    assert set(sim["detection"]["AP50_per_class_all_sizes"]) == set(
        sim["detection"]["AP50_per_class"]
    )


def test_bf16_autocast_trains_on_cpu(shared_data, tmp_path):
    """train.amp: bf16 runs the network in bfloat16 on a CPU (losses and weights in float32);
    fp16, which CPUs cannot run fast, falls back to float32."""
    weights = {}
    for amp in ("none", "bf16", "fp16"):
        raw = small_raw(shared_data, tmp_path / amp, steps=2, **{"train.amp": amp})
        result = train(build_config(raw))
        rows = read_log(result.output_dir / "log.csv")
        assert all(math.isfinite(r["loss"]) for r in rows)
        weights[amp] = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in weights["bf16"].values() if v.is_floating_point())
    differ = [k for k in weights["none"] if not torch.equal(weights["none"][k], weights["bf16"][k])]
    assert differ, "bf16 autocast changed nothing: the network did not run in bfloat16"
    same = [k for k in weights["none"] if torch.equal(weights["none"][k], weights["fp16"][k])]
    assert len(same) == len(weights["none"]), "fp16 on CPU should train exactly as float32"


def test_base_inheritance_merges_mappings_and_datasets_by_name(tmp_path):
    base = read_yaml(CONFIGS / "demo_native_b0.yaml")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    child = {
        "_base_": "base.yaml",
        "optim": {"lr": 0.01},
        "data": {
            "train": [
                {"name": "sim", "seed_offset": 7},
                {"name": "new", "type": "sim", "frames": 5},
            ]
        },
        "eval": {"latency_runs": 3},
    }
    write_yaml(tmp_path / "child.yaml", child)
    raw = read_yaml(tmp_path / "child.yaml")
    assert raw["optim"] == {**base["optim"], "lr": 0.01}  # the other optim keys kept
    sim = raw["data"]["train"][0]
    assert sim["seed_offset"] == 7 and sim["augment"] == base["data"]["train"][0]["augment"]
    assert [d["name"] for d in raw["data"]["train"]] == ["sim", "camvid", "new"]
    assert raw["data"]["val"] == base["data"]["val"] and "_base_" not in raw
    # the demo chain: stages 3 and 4 state only what differs from the stage before
    polish = load_config(CONFIGS / "demo_polish_b0.yaml")
    assert polish.data.train[0].seed_offset == 160000 and polish.optim.lr == 1.5e-4
    assert polish.loss.seg_class_weights is None and polish.schedule.warmup_steps == 30
    write_yaml(tmp_path / "loop.yaml", {"_base_": "loop.yaml", "seed": 1})
    with pytest.raises(TrainConfigError, match="includes itself"):
        read_yaml(tmp_path / "loop.yaml")
