"""Streaming accuracy: every input frame scored with the prediction in force at its time.
SIL (sil/harness.py) and replay's real-time mode (replay/streaming.py) both report it.

The per-processed-frame figures (SIL's scoring.Scores, replay's score.Scorer) score each
frame the node answered against its own ground truth; a frame the node superseded, or
answered late, is simply absent. A system downstream acts on whatever prediction it holds
when a frame is due, so here, for each input frame i and each task (detections,
segmentation, scene) separately:

- its time T_i: the header stamp (`latency: stamp`) or the image's arrival at the probe
  (`latency: arrival`; replay: when it was published); its deadline D_i = T_i + one frame
  period of its camera;
- the prediction in force: of that task's outputs for the camera, the one with the newest input
  stamp s <= the frame's stamp that had ARRIVED (at the probe) by D_i;
- it is scored against frame i's ground truth: the frame's own output when on time, an older
  frame's (a superseded or late frame) otherwise, or no prediction at all (no boxes; every
  ground-truth pixel missed; a wrong scene class).

The definition is docs/SIL.md's. Frames must be handed over in stamp order per camera (SIL's
matcher closes them in that order), which lets outputs older than the one in force be dropped.
A frame is anything with `camera`, `stamp`, `t_image` and `gt` (sil.matching.Frame).
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pvt_mtl_ros.conventions import IGNORE_INDEX

from .evaluators import DetectionEvaluator, SceneEvaluator, SegmentationEvaluator

TASKS = ("detections", "segmentation", "scene")  # output kind = ground-truth task
NO_PREDICTION = "(no prediction)"  # a class no ground truth has: its frames always miss
PERIOD_WINDOW = 50  # frame intervals the period estimate (external sources) looks back over


@dataclass
class Output:
    stamp: int  # the input frame's header stamp, ns
    arrival: float  # when the output reached the probe (wall seconds)
    payload: Any


class Streaming:
    """Feed it every output as it arrives (`add_output`) and every closed input frame in
    stamp order (`add_frame`); read `metrics()` at any time.

    `period_s[camera]`: the camera's frame period (sim: 1 / its rate); None estimates it as
    the median interval between the camera's frame times so far (0 for the first frame).
    `ignore_index`: the ground-truth mask value of unlabelled pixels."""

    def __init__(
        self,
        outputs: dict[str, tuple[str, ...]],
        gt_seg_classes: Sequence[str],
        latency: str = "stamp",
        min_box_height: float = 0.0,
        period_s: dict[str, float | None] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.expected = outputs
        self.ignore_index = ignore_index
        self.gt_seg_classes = list(gt_seg_classes)
        self.latency = latency
        self.period_s = dict(period_s or {})
        self.det = DetectionEvaluator(min_box_height=min_box_height)
        self.seg: SegmentationEvaluator | None = None
        self.no_mask_id = -1
        self.scene = SceneEvaluator(topk=(1,))
        self.store: dict[tuple[str, str], list[Output]] = defaultdict(list)
        self.in_force: dict[str, Counter] = {t: Counter() for t in TASKS}
        self.untimed = 0  # frames without a time (arrival mode, image never heard)
        self.skipped: Counter[str] = Counter()  # task -> frames not scored (mask shape)
        self._last_time: dict[str, float] = {}
        self._intervals: dict[str, deque] = defaultdict(lambda: deque(maxlen=PERIOD_WINDOW))

    def set_model_seg_classes(self, names: Sequence[str]) -> None:
        """The model's segmentation classes, plus NO_PREDICTION: a frame without a mask in
        force predicts it everywhere, so every labelled pixel counts as missed."""
        names = list(names)
        gt = self.gt_seg_classes or names  # never NO_PREDICTION: it is not scored
        self.seg = SegmentationEvaluator([*names, NO_PREDICTION], self.ignore_index, gt)
        self.no_mask_id = len(names)

    def add_output(self, camera: str, kind: str, stamp: int, payload: Any, t: float) -> None:
        if kind not in TASKS:
            return
        outs = self.store[camera, kind]
        bisect.insort(outs, Output(stamp, t, payload), key=lambda o: o.stamp)

    def add_frame(self, frame: Any) -> None:
        """Score one input frame (with the ground truth it has) by the predictions in force."""
        t = frame.stamp / 1e9 if self.latency == "stamp" else frame.t_image
        if t is None:
            self.untimed += 1
            return
        deadline = t + self._period(frame.camera, t)
        for task in TASKS:
            gt = frame.gt.get(task)
            if (
                task not in self.expected.get(frame.camera, ())
                or gt is None
                or (task == "scene" and not gt)
            ):
                continue
            out = self._in_force(frame.camera, task, frame.stamp, deadline)
            source = "none" if out is None else "own" if out.stamp == frame.stamp else "older"
            if self._score(task, gt, None if out is None else out.payload):
                self.in_force[task][source] += 1
            else:
                self.skipped[task] += 1

    def _period(self, camera: str, t: float) -> float:
        given = self.period_s.get(camera)
        last = self._last_time.get(camera)
        if last is not None and t > last:
            self._intervals[camera].append(t - last)
        self._last_time[camera] = t
        if given is not None:
            return given
        intervals = self._intervals[camera]
        return statistics.median(intervals) if intervals else 0.0

    def _in_force(self, camera: str, task: str, stamp: int, deadline: float) -> Output | None:
        """The newest output with an input stamp <= `stamp` that had arrived by `deadline`.
        Older outputs can never be in force again (later frames have later stamps and
        deadlines): they are dropped."""
        outs = self.store.get((camera, task), [])
        end = bisect.bisect_right(outs, stamp, key=lambda o: o.stamp)
        for i in range(end - 1, -1, -1):
            if outs[i].arrival <= deadline:
                del outs[:i]
                return outs[0]
        return None

    def _score(self, task: str, gt: Any, pred: Any) -> bool:
        """Add one frame to the task's evaluator; False when it cannot be scored."""
        if task == "detections":
            gt_boxes, gt_names = gt
            boxes, scores, names = pred if pred is not None else (np.zeros((0, 4)), [], [])
            self.det.update(gt_boxes, list(gt_names), boxes, scores, list(names))
        elif task == "segmentation":
            if self.seg is None:
                return False
            if pred is None:
                pred = np.full(gt.shape, self.no_mask_id, np.int64)
            if pred.shape != gt.shape:
                return False
            try:
                self.seg.update(pred, gt)
            except ValueError:  # ids beyond the model's classes (the scores warn about it)
                return False
        else:
            self.scene.update(pred if pred is not None else [(NO_PREDICTION, 1.0)], gt)
        return True

    def metrics(self) -> dict[str, Any]:
        """AP50, mIoU and scene accuracy over every frame with ground truth, and for each
        task how many frames had their own output, an older one or none in force."""
        det = self.det.compute()
        seg = self.seg.compute() if self.seg is not None else {"frames": 0, "mIoU": float("nan")}
        scene = self.scene.compute()
        return {
            "detection": {"AP50": det["AP50"], "frames": det["frames"]},
            "segmentation": {"mIoU": seg["mIoU"], "frames": seg["frames"]},
            "scene": {"accuracy": scene.get("top1", float("nan")), "frames": scene["frames"]},
            "in_force": {t: dict(self.in_force[t]) for t in TASKS if self.in_force[t]},
            "untimed_frames": self.untimed,
        }
