"""Streaming accuracy of a real-time replay: every published frame with ground truth scored
by the prediction in force at its time (pvt_mtl_ros.metrics.streaming, SIL's definition).

A frame's time is when the player published it and its deadline one frame period later (the
median interval between that topic's publications so far: a replay has no nominal rate); an
output is in force from when the player received it. Outputs are the node's messages decoded
as SIL decodes them (ros.outputs). A frame is handed to the evaluator once nothing can change
its score any more: CLOSE_PERIODS periods plus CLOSE_SLACK_S after it was published, or at
the end. Ground-truth crowd boxes are left out (the array evaluator has no ignore regions).
"""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pvt_mtl_ros.metrics.streaming import Streaming

from .ground_truth import GroundTruth

KINDS = {"detection": "detections", "segmentation": "segmentation", "classification": "scene"}
CLOSE_PERIODS, CLOSE_SLACK_S = 2.0, 0.25
PERIOD_WINDOW = 50  # publication intervals the closing rule looks back over


@dataclass
class Published:
    camera: str
    stamp: int
    t_image: float  # when the player published it (the streaming clock)
    gt: dict[str, Any] = field(default_factory=dict)


class StreamingScore:
    """`published` every frame as the player sends it, `output` every output as it arrives
    (late ones too: they may be in force for later frames), `close_due` now and then,
    `metrics()` at the end."""

    def __init__(
        self,
        gt: GroundTruth,
        topics: Sequence[str],
        tasks: Sequence[str],
        seg_names: Sequence[str] | None = None,
    ) -> None:
        self.gt = gt
        self.kinds = tuple(KINDS[t] for t in tasks if t in KINDS)
        self.streaming = Streaming(
            {t: self.kinds for t in topics}, gt.seg_classes, "arrival",
            ignore_index=gt.ignore_index,
        )  # fmt: skip
        if seg_names is not None:
            self.streaming.set_model_seg_classes(seg_names)
        self.waiting: dict[str, deque[Published]] = defaultdict(deque)
        self.intervals: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=PERIOD_WINDOW))
        self.last: dict[str, float] = {}

    def published(self, topic: str, stamp: int, t: float) -> None:
        if self.last.get(topic) is not None:
            self.intervals[topic].append(t - self.last[topic])
        self.last[topic] = t
        # every frame, labelled or not: the evaluator's period estimate needs them all
        self.waiting[topic].append(Published(topic, stamp, t, self._truth(topic, stamp)))

    def _truth(self, topic: str, stamp: int) -> dict[str, Any]:
        gt, out = self.gt, {}
        image_id = gt.det_image_id(topic, stamp) if "detections" in self.kinds else None
        if image_id is not None:
            anns = [a for a in gt.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd")]
            names = {c["id"]: c["name"] for c in gt.coco.dataset["categories"]}
            boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            out["detections"] = (boxes, [names[a["category_id"]] for a in anns])
        if "segmentation" in self.kinds and (mask := gt.mask(topic, stamp)) is not None:
            out["segmentation"] = mask
        if "scene" in self.kinds and (label := gt.scene(topic, stamp)):
            out["scene"] = label
        return out

    def output(self, topic: str, kind: str, stamp: int, payload: Any, t: float) -> None:
        self.streaming.add_output(topic, kind, stamp, payload, t)

    def close_due(self, now: float | None = None) -> None:
        """Score the frames whose deadline is well past (all of them when `now` is None)."""
        for topic, waiting in self.waiting.items():
            intervals = self.intervals[topic]
            wait = CLOSE_PERIODS * (statistics.median(intervals) if intervals else 0.0)
            while waiting and (now is None or now > waiting[0].t_image + wait + CLOSE_SLACK_S):
                self.streaming.add_frame(waiting.popleft())

    def metrics(self) -> dict[str, Any]:
        self.close_due()
        return self.streaming.metrics()
