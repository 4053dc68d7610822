"""Matching the perception node's outputs to their input frame and ground truth by
(camera, header stamp), whatever order the topics deliver them in.

A frame is complete when its image, every expected ground-truth part and every expected
output have arrived. Frames that can no longer complete are closed early using the one
ordering fact DDS gives per topic: a camera's messages on one topic arrive in publication
order (stamps increase). So once a newer frame of the camera has a part on some topic, an
older frame still missing that part will never get it; for outputs, that means the node
skipped the frame (latest-frame-wins).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IMAGE = "image"
GT = "gt:"  # prefix of ground-truth kinds: "gt:detections", "gt:segmentation", "gt:scene"


@dataclass
class Frame:
    camera: str
    stamp: int  # header stamp, integer nanoseconds
    t_image: float | None = None  # when the harness received the input image (wall seconds)
    gt: dict[str, Any] = field(default_factory=dict)  # task -> decoded ground truth
    out: dict[str, Any] = field(default_factory=dict)  # output name -> decoded output
    t_out: dict[str, float] = field(default_factory=dict)  # output name -> arrival

    def has(self, kind: str) -> bool:
        if kind == IMAGE:
            return self.t_image is not None
        if kind.startswith(GT):
            return kind[len(GT) :] in self.gt
        return kind in self.out

    @property
    def seen_input(self) -> bool:
        return self.t_image is not None or bool(self.gt)


@dataclass
class Tally:
    """Counts per camera; every frame in ends as exactly one of completed/dropped/incomplete."""

    frames_in: int = 0  # frames seen (image or ground truth) during the run
    completed: int = 0  # every output arrived (scored)
    dropped: int = 0  # no output at all
    incomplete: int = 0  # some outputs, never all
    missing_gt: int = 0  # completed frames whose ground truth never fully arrived
    unmatched_outputs: int = 0  # outputs whose stamp is no frame this camera sent
    late_outputs: int = 0  # outputs of a frame already closed (a second copy, say)
    outside_window: int = 0  # outputs of frames sent before the run started or after it


class Matcher:
    """Collects decoded messages by (camera, stamp); `take_ready` hands out frames to score.

    `outputs[camera]`: the output names expected for every frame; `ground_truth[camera]`:
    the ground-truth tasks expected (the image is always expected). `on_close` sees every
    closed input frame, scored or not, in stamp order per camera (streaming.py relies on it:
    a newer frame closes only once every older one can no longer change).
    """

    def __init__(
        self,
        outputs: dict[str, tuple[str, ...]],
        ground_truth: dict[str, tuple[str, ...]],
        external: bool = False,
        on_close: Callable[[Frame], None] | None = None,
    ) -> None:
        self.outputs = outputs
        self.on_close = on_close
        # An external source was running before the harness joined and goes on after it
        # leaves: outputs of frames outside the window of frames seen are not ours to judge.
        self.external = external
        self.inputs = {c: (IMAGE, *(GT + k for k in ground_truth[c])) for c in outputs}
        self.pending: dict[tuple[str, int], Frame] = {}
        self.closed: set[tuple[str, int]] = set()
        self.tally = {c: Tally() for c in outputs}
        self.newest: dict[str, dict[str, int]] = {c: {} for c in outputs}  # camera, kind
        self.input_range: dict[str, tuple[int, int]] = {}  # camera -> (first, last) stamp
        self.accepting = True

    def stop(self) -> None:
        """The run is over: frames that start now are ignored; outputs are still matched."""
        self.accepting = False

    def add(self, camera: str, kind: str, stamp: int, payload: Any, t: float) -> None:
        """`kind`: IMAGE, GT + task, or an output name. Unknown cameras raise KeyError."""
        key = (camera, stamp)
        is_output = kind in self.outputs[camera]
        if key in self.closed:
            if is_output:
                self.tally[camera].late_outputs += 1
            return
        frame = self.pending.get(key)
        if frame is None:
            if not self.accepting and not is_output:
                return
            frame = self.pending[key] = Frame(camera, stamp)
        newest = self.newest[camera]
        newest[kind] = max(newest.get(kind, stamp), stamp)
        if is_output:
            frame.out[kind], frame.t_out[kind] = payload, t
            return
        if kind == IMAGE:
            frame.t_image = t
        else:
            frame.gt[kind[len(GT) :]] = payload
        first, last = self.input_range.get(camera, (stamp, stamp))
        self.input_range[camera] = (min(first, stamp), max(last, stamp))

    def _missing(self, frame: Frame) -> list[str]:
        kinds = (*self.outputs[frame.camera], *self.inputs[frame.camera])
        return [k for k in kinds if not frame.has(k)]

    def _hopeless(self, frame: Frame, missing: list[str]) -> bool:
        newest = self.newest[frame.camera]
        return bool(missing) and all(newest.get(k, -1) > frame.stamp for k in missing)

    def take_ready(self, final: bool = False) -> list[Frame]:
        """Complete frames, plus frames that cannot complete but have every output (scored
        with the ground truth they have). Other frames that cannot complete (or, with
        `final`, every frame left) are closed and counted."""
        ready, closed = [], []
        for key, frame in list(self.pending.items()):
            missing = self._missing(frame)
            if missing and not (final or self._hopeless(frame, missing)):
                continue
            del self.pending[key]
            self.closed.add(key)
            if self._count(frame, missing):
                ready.append(frame)
            if frame.seen_input:
                closed.append(frame)
        ready.sort(key=lambda f: (f.camera, f.stamp))
        if self.on_close is not None:
            for frame in sorted(closed, key=lambda f: (f.camera, f.stamp)):
                self.on_close(frame)
        return ready

    def _count(self, frame: Frame, missing: list[str]) -> bool:
        """Tally a closed frame; True when it is to be scored."""
        tally = self.tally[frame.camera]
        if not frame.seen_input:
            first, last = self.input_range.get(frame.camera, (None, None))
            if self.external and (first is None or not first <= frame.stamp <= last):
                tally.outside_window += len(frame.out)
            else:
                tally.unmatched_outputs += len(frame.out)
            return False
        tally.frames_in += 1
        if len(frame.out) == len(self.outputs[frame.camera]):
            tally.completed += 1
            tally.missing_gt += any(k.startswith(GT) for k in missing)
            return True
        if frame.out:
            tally.incomplete += 1
        else:
            tally.dropped += 1
        return False

    def waiting(self) -> int:
        """Frames that may still complete."""
        return sum(1 for f in self.pending.values() if not self._hopeless(f, self._missing(f)))
