"""The training loop: several datasets, partial labels, loss balancing, AMP, DDP, exact resume.

One step draws a batch from every dataset (``sampling: joint``) or from one dataset picked by
ratio (``alternate``); each batch runs only the heads its dataset labels, and ``task_losses``
computes each task's loss where the labels exist. The balancer turns the per-task losses into
gradients. Checkpoints come in pairs under ``<output_dir>/checkpoints/``:

- ``step_000600.pt``: the model (weights + config) by ``save_checkpoint``;
- ``step_000600.state.pt``: optimizer, scheduler, grad scaler, balancer, step, every rank's RNG
  states and how many batches each dataset stream delivered; written after the model, so a
  state file marks a complete pair. ``--resume`` takes the newest one.

The finished model is ``<output_dir>/checkpoint.pt``.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pvt_mtl_ros.model import (
    MultiTaskNet,
    load_pretrained_backbone,
    save_checkpoint,
    task_losses,
)
from pvt_mtl_ros.model.checkpoint import (
    CheckpointError,
    atomic_save,
    check_state_dict,
    read_checkpoint,
)
from pvt_mtl_ros.model.losses import TASK_OF_TERM, to_float32
from training import distributed
from training.balancing import build_balancer
from training.checkpoints import (
    STATE_FORMAT,
    checkpoint_paths,
    latest_state,
    read_state,
    rng_state,
    seed_all,
    set_rng_state,
)
from training.class_weights import segmentation_class_weights
from training.config import TrainConfig, TrainConfigError, resolve_path
from training.data import build_source, make_loader, set_train_transforms
from training.logs import RunLog, close_file_handlers, log, setup_console
from training.modeling import build_model_config, check_sources_fit
from training.optim import lr_factor, param_groups, total_steps
from training.sampler import choose_stream, mix

# --- the loop ----------------------------------------------------------------------------------


class MultiForward(nn.Module):
    """Runs the model once per dataset batch inside ONE forward call, so that DDP sees one
    forward per backward however many datasets a step draws."""

    def __init__(self, model: MultiTaskNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, batches: list[tuple[torch.Tensor, tuple[str, ...]]]) -> list[dict]:
        return [self.model(images, tasks=tasks) for images, tasks in batches]


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path | None  # the finished model (None when stopped early)
    steps: int
    first: dict[str, float]  # per-task loss of the first logged step of this process's run
    last: dict[str, float]  # ... and of the last
    images_per_s: float
    images_seen: dict[str, int]  # per task: training images that carried its labels, all steps
    train_seconds: float  # all segments of a resumed run (time lost to a kill not counted)


def pick_device(kind: str) -> str:
    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("device: cuda, but torch sees no CUDA device")
    return kind


def loss_terms(tasks: tuple[str, ...]) -> list[str]:
    return [term for term, task in TASK_OF_TERM.items() if task in tasks]


def train(
    cfg: TrainConfig,
    resume: str | Path | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train as ``cfg`` says. ``resume``: a state file, or ``"auto"`` for the newest in the
    output folder. ``stop_after``: leave after that many steps as if killed (tests, time limits):
    a checkpoint is written, the finished model is not."""
    out_dir = resolve_path(cfg.output_dir)
    if resume is None and latest_state(out_dir) is not None:
        # A fresh run would mix its checkpoints with the old ones (and --resume could then pick
        # an old one): make the choice explicit.
        raise TrainConfigError(
            f"output_dir {out_dir} has checkpoints of an earlier run: continue it with --resume, "
            f"or use another output_dir, or delete that folder"
        )
    kind = pick_device(cfg.device)
    info = distributed.init(kind)
    try:
        trainer = Trainer(cfg, info, kind)
        if resume is not None:
            trainer.restore(resume)
        return trainer.run(stop_after)
    finally:
        close_file_handlers()


class Trainer:
    """Builds data, model, balancer, optimizer and schedule from a config; runs the steps."""

    def __init__(self, cfg: TrainConfig, info: distributed.DistInfo, kind: str) -> None:
        self.cfg, self.info = cfg, info
        self.device = torch.device(f"cuda:{info.local_rank}" if kind == "cuda" else "cpu")
        self.out_dir = resolve_path(cfg.output_dir)
        setup_console(
            20 if info.is_main else 30, self.out_dir / "train.log" if info.is_main else None
        )
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif kind == "cuda":
            torch.backends.cudnn.benchmark = True
        self.amp = cfg.train.amp
        if self.amp == "fp16" and kind != "cuda":
            # CPUs have no fast float16 kernels; bf16 is the CPU's reduced precision.
            log.info("train.amp: fp16 applies on CUDA only (use bf16 on CPU); training in float32")
            self.amp = "none"

        # Data first: class lists may come from it.
        seed_all(cfg.seed)
        self.sources = [build_source(d, f"data.train[{i}]") for i, d in enumerate(cfg.data.train)]
        if not self.sources:
            raise TrainConfigError("data.train: no training datasets")
        model_cfg = build_model_config(cfg.model, self.sources)
        check_sources_fit(model_cfg, self.sources)
        if cfg.data.sampling == "joint":
            missing = set(model_cfg.tasks) - {t for s in self.sources for t in s.tasks}
            if missing:
                raise TrainConfigError(
                    f"the model has {', '.join(sorted(missing))} head(s) but no training dataset "
                    f"labels them: add a dataset or remove the task from the model section"
                )
        for s in self.sources:
            set_train_transforms(s, model_cfg.input_size)

        self.model = MultiTaskNet(model_cfg)  # same seed on every rank: same initial weights
        if cfg.model.pretrained_backbone:
            path = resolve_path(cfg.model.pretrained_backbone)
            try:
                report = load_pretrained_backbone(self.model.backbone, path)
            except (CheckpointError, ValueError, FileNotFoundError) as err:
                raise TrainConfigError(f"model.pretrained_backbone: {err}") from None
            log.info("pretrained backbone: %s", report)
        if cfg.model.init_from:
            init_weights(self.model, resolve_path(cfg.model.init_from))
        self.model.to(self.device)
        loss = cfg.loss
        self.seg_class_weights = None
        if "segmentation" in self.model.tasks:
            seg = model_cfg.segmentation
            try:
                self.seg_class_weights = segmentation_class_weights(
                    loss.seg_class_weights,
                    self.sources,
                    seg.classes,
                    seg.ignore_index,
                    loss.seg_class_weight_samples,
                )
            except ValueError as err:
                raise TrainConfigError(str(err)) from None
        self.balancer = build_balancer(
            loss.balancer, self.model.tasks, loss.weights, loss.dwa_temperature, loss.dwa_period
        ).to(self.device)
        groups = param_groups(
            self.model,
            self.balancer,
            cfg.optim.weight_decay,
            cfg.optim.no_decay_1d,
            loss.uncertainty_lr,
        )
        self.optimizer = torch.optim.AdamW(
            groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps
        )
        self.total = total_steps(cfg, self.sources, info.world_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.total, cfg.schedule)
        )
        # fp16 needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        seed_all(cfg.seed + 1000 * info.rank)  # dropout / drop-path differ between ranks
        self.step = 0
        self.consumed = {s.name: 0 for s in self.sources}
        self.seconds_before = 0.0  # training time of earlier segments of a resumed run

        # What PCGrad treats as shared (backbone + neck) and as each task's own (its head).
        self.heads = {t: list(self.model.heads[t].parameters()) for t in self.model.tasks}
        head_ids = {id(p) for ps in self.heads.values() for p in ps}
        self.shared = [p for p in self.model.parameters() if id(p) not in head_ids]

    # --- one step ----------------------------------------------------------------------------

    def draw(self, loaders: list) -> list[tuple[int, torch.Tensor, list[dict]]]:
        """This step's batches: one per dataset (joint) or one from a dataset picked by ratio."""
        if self.cfg.data.sampling == "joint":
            picks = list(range(len(self.sources)))
        else:
            ratios = [s.cfg.ratio or 1.0 for s in self.sources]
            picks = [choose_stream(self.cfg.seed, self.step, ratios)]
        batches = []
        for k in picks:
            images, targets = next(loaders[k])
            self.consumed[self.sources[k].name] += 1
            batches.append((k, images.to(self.device, non_blocking=True), targets))
        return batches

    def losses(self, net: nn.Module, batches) -> tuple[dict, dict]:
        """Loss terms (mean over the batches that have them) and their per-task sums."""
        inputs = [(self.model.normalize(im), self.sources[k].tasks) for k, im, _ in batches]
        outputs = to_float32(net(inputs))  # losses in float32 whatever autocast ran the net in
        by_term: dict[str, list[torch.Tensor]] = defaultdict(list)
        for (_, _, targets), out in zip(batches, outputs):
            batch_terms = task_losses(self.model, out, targets, self.seg_class_weights)
            for name, value in batch_terms.items():
                by_term[name].append(value.float())
        terms = {n: torch.stack(v).mean() for n, v in by_term.items()}
        tasks: dict[str, torch.Tensor] = {}
        for n, v in terms.items():
            t = TASK_OF_TERM[n]
            tasks[t] = tasks[t] + v if t in tasks else v
        return terms, tasks

    def train_step(self, net: nn.Module, batches) -> dict[str, float]:
        """Forward, balance, backward, clip, update. Returns the losses averaged over ranks."""
        info, scaler, optimizer = self.info, self.scaler, self.optimizer
        gradient_based = self.balancer.gradient_based
        # PCGrad reduces its per-task gradients itself: DDP must not reduce in backward.
        sync = net.no_sync() if gradient_based and info.enabled else contextlib.nullcontext()
        autocast = (
            torch.autocast(
                self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16
            )
            if self.amp != "none"
            else contextlib.nullcontext()
        )
        with sync:
            with autocast:
                terms, tasks = self.losses(net, batches)
                total = self.balancer.combine(tasks)
            if not torch.isfinite(total):
                raise FloatingPointError(
                    f"step {self.step}: loss is {float(total)} "
                    f"({ {n: round(float(v), 4) for n, v in terms.items()} }); stopping"
                )
            if gradient_based:
                self.balancer.backward(
                    tasks,
                    self.shared,
                    self.heads,
                    generator=torch.Generator().manual_seed(mix(self.cfg.seed, self.step, 3)),
                    scale=scaler.scale,
                    reduce=lambda x: distributed.mean(x, info),
                )
            else:
                scaler.scale(total).backward()
                distributed.average_grads(list(self.balancer.parameters()), info)
        if self.cfg.optim.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        # Means over ranks; a term missing on a rank counts nowhere. One small all-reduce.
        keys = loss_terms(self.model.tasks) + list(self.model.tasks)
        now = {**terms, **tasks}
        vec = torch.zeros(2 * len(keys), dtype=torch.float64, device=self.device)
        for i, key in enumerate(keys):
            if key in now:
                vec[i], vec[len(keys) + i] = float(now[key].detach()), 1.0
        vec = distributed.sum_(vec, info).tolist()
        n = len(keys)
        means = {key: vec[i] / vec[n + i] for i, key in enumerate(keys) if vec[n + i]}
        self.balancer.update({t: means[t] for t in self.model.tasks if t in means})
        means["loss"] = float(total.detach())
        return means

    # --- the run -----------------------------------------------------------------------------

    def loaders(self) -> list:
        return [
            iter(
                make_loader(
                    s,
                    k,
                    self.cfg.seed,
                    self.info.rank,
                    self.info.world_size,
                    self.consumed[s.name],  # resume mid-stream
                    self.cfg.data.num_workers,
                    pin_memory=self.device.type == "cuda",
                )
            )
            for k, s in enumerate(self.sources)
        ]

    def wrapped(self) -> nn.Module:
        net: nn.Module = MultiForward(self.model)
        if not self.info.enabled:
            return net
        find_unused = self.cfg.train.find_unused_parameters
        if find_unused is None:  # alternate sampling leaves the other heads unused
            find_unused = self.cfg.data.sampling == "alternate"
        return DistributedDataParallel(
            net,
            device_ids=[self.info.local_rank] if self.device.type == "cuda" else None,
            find_unused_parameters=find_unused,
        )

    def run(self, stop_after: int | None = None) -> TrainResult:
        cfg, info, model = self.cfg, self.info, self.model
        start, total = self.step, self.total
        stop = total if stop_after is None else min(total, start + stop_after)
        if start >= total:
            log.info("nothing to do: the run already has %d of %d steps", start, total)
        loaders, net = self.loaders(), self.wrapped()
        terms = loss_terms(model.tasks)
        columns = ["lr", "loss", *[f"loss_{t}" for t in terms]]
        columns += [f"loss_{t}" for t in model.tasks] + [f"weight_{t}" for t in model.tasks]
        columns += ["images_per_s", "elapsed_s"]
        run_log = RunLog(self.out_dir, columns, start, enabled=info.is_main)
        if info.is_main:
            text = yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False)
            (self.out_dir / "config.yaml").write_text(text)
            log.info(
                "model %s (%s, tasks %s, %.2fM parameters), %d steps from step %d on %s x%d; "
                "datasets: %s",
                model.cfg.name or model.cfg.backbone,
                model.cfg.backbone,
                "+".join(model.tasks),
                sum(p.numel() for p in model.parameters()) / 1e6,
                total,
                start,
                self.device,
                info.world_size,
                ", ".join(f"{s.name} ({len(s)}, bs {s.cfg.batch_size})" for s in self.sources),
            )

        window: dict[str, list[float]] = defaultdict(list)
        window_images, window_start = 0, time.perf_counter()
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        images_total, run_start = 0, time.perf_counter()
        self.segment_start = run_start
        model.train()
        bar = tqdm(
            total=total,
            initial=start,
            disable=not (info.is_main and cfg.train.progress),
            dynamic_ncols=True,
            unit="step",
        )
        with logging_redirect_tqdm(loggers=[log]), bar:
            while self.step < stop:
                batches = self.draw(loaders)
                means = self.train_step(net, batches)
                images = sum(im.shape[0] for _, im, _ in batches) * info.world_size
                window_images += images
                images_total += images
                for key, value in means.items():
                    window[key].append(value)
                self.step += 1
                done = self.step

                if done % cfg.train.log_every == 0 or done == stop:
                    elapsed = time.perf_counter() - window_start
                    row = {k: sum(v) / len(v) for k, v in window.items() if v}
                    row["lr"] = self.optimizer.param_groups[0]["lr"]
                    row.update({f"weight_{t}": w for t, w in self.balancer.weights().items()})
                    row["images_per_s"] = window_images / max(elapsed, 1e-9)
                    row["elapsed_s"] = time.perf_counter() - run_start
                    run_log.write(done, {_column(k): v for k, v in row.items()})
                    per_task = {t: row[t] for t in model.tasks if t in row}
                    for t, v in per_task.items():
                        first.setdefault(t, v)
                    last.update(per_task)
                    bar.set_postfix(
                        loss=f"{row['loss']:.3f}",
                        **{t[:3]: f"{v:.3f}" for t, v in per_task.items()},
                        img_s=f"{row['images_per_s']:.1f}",
                    )
                    window.clear()
                    window_images, window_start = 0, time.perf_counter()
                bar.update(1)
                if done % cfg.train.checkpoint_every == 0 or done == stop:
                    self.save()

        run_log.close()
        final = None
        if stop == total:
            final = self.out_dir / "checkpoint.pt"
            if info.is_main:
                extra = {"step": total, "train_config": _plain(cfg.to_dict())}
                save_checkpoint(final, model, extra=extra)
                log.info("finished: %s", final)
            distributed.barrier(info)
        seconds = time.perf_counter() - run_start
        return TrainResult(
            self.out_dir,
            final,
            stop,
            first,
            last,
            images_total / max(seconds, 1e-9),
            self.images_seen(),
            self.seconds_before + seconds,
        )

    def images_seen(self) -> dict[str, int]:
        """Per model task, the images drawn so far from datasets that label it."""
        seen = dict.fromkeys(self.model.tasks, 0)
        for s in self.sources:
            images = self.consumed[s.name] * s.cfg.batch_size * self.info.world_size
            for task in set(s.tasks) & set(seen):
                seen[task] += images
        return seen

    # --- checkpoints -------------------------------------------------------------------------

    def check_replicas(self) -> None:
        """DDP keeps replicas equal only if every gradient is synchronised: verify it."""
        if not self.info.enabled:
            return
        with torch.no_grad():
            params = list(self.model.parameters()) + list(self.balancer.parameters())
            checksum = float(sum(p.double().sum() + p.double().abs().sum() for p in params))
        sums = distributed.gather_objects(checksum, self.info)
        if len(set(sums)) != 1:
            raise RuntimeError(f"step {self.step}: model replicas differ between ranks: {sums}")

    def save(self) -> None:
        """Model checkpoint, then training state (atomic each); keeps the last pairs."""
        self.check_replicas()
        rngs = distributed.gather_objects(rng_state(self.device), self.info)  # every rank's
        if self.info.is_main:
            model_file, state_file = checkpoint_paths(self.out_dir, self.step)
            config = _plain(self.cfg.to_dict())
            save_checkpoint(
                model_file, self.model, extra={"step": self.step, "train_config": config}
            )
            state = {
                "format": STATE_FORMAT,
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "balancer": self.balancer.state_dict(),
                "consumed": dict(self.consumed),
                "train_seconds": self.seconds_before + time.perf_counter() - self.segment_start,
                "rng": rngs,
                "world_size": self.info.world_size,
                "config": config,
            }
            atomic_save(state, state_file)  # after the model: a state file marks a complete pair
            pairs = sorted((self.out_dir / "checkpoints").glob("step_*.state.pt"))
            for old in pairs[: -self.cfg.train.keep_checkpoints]:
                old.unlink(missing_ok=True)
                old.with_name(old.name.replace(".state.pt", ".pt")).unlink(missing_ok=True)
        distributed.barrier(self.info)

    def restore(self, resume: str | Path) -> None:
        """Continue from a state file (``"auto"``: the newest complete pair in output_dir)."""
        path = latest_state(self.out_dir) if str(resume) == "auto" else Path(resume)
        if path is None:
            raise FileNotFoundError(
                f"--resume: no checkpoint pair under {self.out_dir / 'checkpoints'}"
            )
        state = read_state(path)
        model_file = path.with_name(path.name.replace(".state.pt", ".pt"))
        payload = read_checkpoint(model_file)
        extra = payload.get("extra") if isinstance(payload.get("extra"), dict) else {}
        if extra.get("train_config") != state.get("config"):
            raise TrainConfigError(
                f"--resume: {model_file} and {path} are not a pair: they were written by runs "
                "with different configs (a file copied from another run?)"
            )
        if extra.get("step") != state.get("step"):
            raise TrainConfigError(
                f"--resume: {model_file} (step {extra.get('step')}) and {path} "
                f"(step {state.get('step')}) are from different steps"
            )
        try:
            check_state_dict(self.model, payload["state_dict"])
        except CheckpointError as err:
            old_model = (state.get("config") or {}).get("model")
            changed = _diff(old_model, _plain(self.cfg.to_dict()).get("model"))
            raise TrainConfigError(
                f"--resume: {path} was written for another model than this config builds "
                f"(model config changed: {'; '.join(changed[:5]) or 'classes from the data'}): "
                f"{err}"
            ) from None
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.balancer.load_state_dict(state["balancer"])
        if state["world_size"] == self.info.world_size:
            set_rng_state(state["rng"][self.info.rank], self.device)
        else:
            log.warning(
                "resuming a %d-process state on %d processes: data order and random streams "
                "differ from an uninterrupted run",
                state["world_size"],
                self.info.world_size,
            )
            seed_all(self.cfg.seed + 1000 * self.info.rank + state["step"])
        changed = _diff(state["config"], _plain(self.cfg.to_dict()))
        if changed:
            log.warning("resuming with a changed config: %s", "; ".join(changed[:10]))
        unknown = set(state["consumed"]) - set(self.consumed)
        if unknown:
            log.warning("the state has streams for datasets no longer configured: %s", unknown)
        self.consumed = {n: int(state["consumed"].get(n, 0)) for n in self.consumed}
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)


def _column(key: str) -> str:
    if key in ("loss", "lr", "images_per_s", "elapsed_s") or key.startswith("weight_"):
        return key
    return f"loss_{key}"


def _plain(obj: Any) -> Any:
    """Tuples -> lists, for YAML dumps and the checkpoint's extra."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r:.60} -> {b!r:.60}"]


def init_weights(model: nn.Module, path: Path) -> None:
    """Every weight from a pvt_mtl_ros checkpoint (a run's or a shipped FP16 one), which must
    fit this model exactly: fine-tuning continues a model, it does not adapt one."""
    try:
        state = read_checkpoint(path)["state_dict"]
        check_state_dict(model, state)
    except (CheckpointError, KeyError) as err:
        text = str(err) if str(path) in str(err) else f"{path}: {err}"
        raise TrainConfigError(f"model.init_from: {text}") from None
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    log.info("initialised every weight from %s", path)
