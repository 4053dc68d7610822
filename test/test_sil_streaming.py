"""Streaming accuracy (pvt_mtl_ros/metrics/streaming.py, SIL's and replay's) against a hand
computation.

Six frames of one camera at 10 Hz (T_i = 1.0 + 0.1 i s, deadline T_i + 0.1 s). The node
answers frames 0, 2, 3 and 5 (1 and 4 superseded); each answer equals its own frame's ground
truth exactly, and arrives at:

    frame   0     1     2     3     4     5
    answer  1.25  -     1.28  1.45  -     1.52
    deadline 1.1  1.2   1.3   1.4   1.5   1.6
    in force none none  own 2 old 2 old 3 own 5

Frame 0's answer is late for frames 0 and 1 and superseded by frame 2's before it matters;
frame 3's answer is late for frame 3 and in force for frame 4.
"""

import numpy as np
import pytest

from pvt_mtl_ros.metrics import DetectionEvaluator
from pvt_mtl_ros.metrics.streaming import Streaming
from pvt_mtl_ros.sil.matching import Frame

SEG = ["road", "sky"]
GT_X = [0, 100, 200, 200, 400, 500]  # the one car's left edge per frame (static at 2-3)
GT_MASK = [[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]]
GT_SCENE = ["urban", "urban", "urban", "rural", "rural", "rural"]
SCORE = {0: 0.6, 2: 0.9, 3: 0.5, 5: 0.95}
ARRIVAL = {0: 1.25, 2: 1.28, 3: 1.45, 5: 1.52}
IN_FORCE = [None, None, 2, 2, 3, 5]  # the hand computation above


def stamp(i):
    return 1_000_000_000 + i * 100_000_000  # ns: T_i = 1.0 + 0.1 i s


def box(i):
    return np.array([[GT_X[i], 10, GT_X[i] + 50, 60]], np.float64)


def truth(i):
    return {
        "detections": (box(i), ["car"]),
        "segmentation": np.array([GT_MASK[i]], np.uint8),
        "scene": GT_SCENE[i],
    }


def answer(i):
    return {
        "detections": (box(i), np.array([SCORE[i]]), ["car"]),
        "segmentation": np.array([GT_MASK[i]], np.uint8),
        "scene": [(GT_SCENE[i], 0.8), ("urban" if GT_SCENE[i] == "rural" else "rural", 0.2)],
    }


def run(order_outputs_first=True):
    s = Streaming({"cam": ("detections", "segmentation", "scene")}, SEG, period_s={"cam": 0.1})
    s.set_model_seg_classes(SEG)
    # as the harness does: outputs as they arrive, each frame once the matcher closes it
    events = [(ARRIVAL[i], "out", i) for i in ARRIVAL] + [(1.0 + 0.1 * i + 0.2, "frame", i)
                                                           for i in range(6)]  # fmt: skip
    for _, what, i in sorted(events):
        if what == "out":
            for kind, payload in answer(i).items():
                s.add_output("cam", kind, stamp(i), payload, ARRIVAL[i])
        else:
            s.add_frame(Frame("cam", stamp(i), t_image=1.0 + 0.1 * i, gt=truth(i)))
    return s


def test_streaming_metrics_equal_the_hand_computation():
    m = run().metrics()
    for task in ("detections", "segmentation", "scene"):
        assert m["in_force"][task] == {"none": 2, "own": 2, "older": 2}, task

    # scene: right at frames 2 (urban), 4 (frame 3's rural) and 5; wrong at 0, 1 (none) and 3
    # (frame 2's urban where it is rural)
    assert m["scene"] == {"accuracy": pytest.approx(3 / 6), "frames": 6}

    # mIoU by hand, road = class 0. TP: 3+3+0+2 = 8 road, 1+1+1+2 = 5 sky. Frames 0 and 1
    # (none) miss all 8 of their pixels: 3 road, 5 sky. Frame 4 predicts frame 3's
    # road,road,road,sky on sky everywhere: 3 sky pixels called road.
    road, sky = 8 / (8 + 3 + 3), 5 / (5 + 5 + 3)
    assert m["segmentation"]["frames"] == 6
    assert m["segmentation"]["mIoU"] == pytest.approx((road + sky) / 2)

    # AP50: the same evaluator over the hand-picked (truth, prediction in force) pairs
    ref = DetectionEvaluator()
    for i, j in enumerate(IN_FORCE):
        pred = answer(j)["detections"] if j is not None else (np.zeros((0, 4)), [], [])
        ref.update(box(i), ["car"], *pred)
    expected = ref.compute()["AP50"]
    assert m["detection"]["frames"] == 6
    assert m["detection"]["AP50"] == pytest.approx(expected)
    # 3 of 6 cars found (frames 2, 3, 5), each ranked above the one false box: AP50 about 0.5,
    # where the per-processed-frame figure over frames 0, 2, 3, 5 is 1.0
    assert 0.45 < expected < 0.55


def test_outputs_older_than_the_one_in_force_are_dropped():
    """Later frames have later stamps and deadlines: an older output is never in force again."""
    s = run()
    assert [o.stamp for o in s.store["cam", "detections"]] == [stamp(5)]


def test_no_period_given_uses_the_median_frame_interval():
    s = Streaming({"cam": ("scene",)}, [], period_s={})
    s.add_output("cam", "scene", stamp(0), [("urban", 1.0)], 1.15)  # 0.15 s after frame 0
    for i in range(3):
        s.add_frame(Frame("cam", stamp(i), gt={"scene": "urban"}))
    # frame 0: no interval yet (deadline = its time): none; frames 1 and 2: frame 0's answer
    # arrived by T + 0.1 s
    assert s.metrics()["in_force"]["scene"] == {"none": 1, "older": 2}
    assert s.metrics()["scene"]["accuracy"] == pytest.approx(2 / 3)
