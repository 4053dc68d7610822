"""Counters and timings of the perception node, and their `/diagnostics` message.

`diagnostic_updater` is not available everywhere (not on PyPI), so the node publishes
`diagnostic_msgs/DiagnosticArray` itself from these thread-safe counters. Every frame that
arrives is accounted for exactly once:

    received = processed + superseded + bad + failed + discarded + waiting (0 or 1)
               + in flight (at most one per inference stream)

superseded: replaced in its camera's slot by a newer frame (latest-frame-wins), or, with
several inference streams, finished after a newer frame of its camera was published;
bad: its message could not be converted (of which too_large: over max_pixels, refused from
its header; corrupt: the JPEG decoder reported corrupt data); failed: inference raised;
discarded: still waiting when the node deactivated (or the process was stopping).

lost counts frames the middleware reported lost before they reached the node (the
subscription's message-lost event: e.g. a best-effort frame too large for the transport,
README: Robustness); they never arrive, so they are outside the sum above.

A camera's status is WARN while it had bad, failed or lost frames in the last RECENT_S
seconds (the totals stay in the values), not forever after one bad frame. The end-to-end
latency (now - header stamp) is kept only while the stamps look like this node's clock
(within [-1 s, 60 s] of it); stamps from another time base (a bag's, a camera's own clock)
are counted in "stamps not on the node's clock" and the latency says n/a and why.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

COUNTERS = ("received", "processed", "superseded", "bad", "failed", "discarded")
DETAILS = ("too_large", "corrupt", "lost", "stamp_not_clock")
RECENT_S = 10.0  # a camera is WARN while it had a bad, failed or lost frame this recently
STAMP_RANGE_S = (-1.0, 60.0)  # now - stamp within this: the stamp is on the node's clock
WARN_KINDS = ("bad", "failed", "lost")


@dataclass
class CameraCounts:
    # frames per counter of COUNTERS and DETAILS (the names live there only)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS + DETAILS, 0))
    last_error: str = ""
    lost_detection: bool = True  # the RMW reports message-lost events for this subscription
    # (monotonic time, counter, n) of recent bad/failed/lost frames, for the status level
    recent: deque = field(default_factory=lambda: deque(maxlen=1000))
    # end-to-end latencies (now - header stamp) and in-node latencies (receive -> published)
    latency: deque = field(default_factory=lambda: deque(maxlen=500))
    node_latency: deque = field(default_factory=lambda: deque(maxlen=500))


class NodeStats:
    """Thread-safe counters shared by the subscription callbacks and the inference worker."""

    def __init__(self, cameras: list[str]) -> None:
        self._lock = threading.Lock()
        self.cameras = {name: CameraCounts() for name in cameras}
        self.batch_sizes: Counter[int] = Counter()
        self.recent_batches: deque[tuple[str, ...]] = deque(maxlen=50)
        self.inference: deque[float] = deque(maxlen=500)  # seconds per predict() call
        # batch number -> (predict() seconds, whole cycle seconds: convert + predict + publish)
        self.batch_times: dict[int, tuple[float, float]] = {}
        # (camera, header stamp ns, batch number) of recent outputs: which batch served a frame
        self.recent_frames: deque[tuple[str, int, int]] = deque(maxlen=2000)
        self.batches = 0
        self._last_report: tuple[float, dict[str, tuple[int, int]]] | None = None

    def count(self, camera: str, counter: str, n: int = 1, error: str = "") -> None:
        with self._lock:
            cam = self.cameras[camera]
            cam.counts[counter] += n
            if error:
                cam.last_error = error
            if counter in WARN_KINDS and n > 0:
                cam.recent.append((time.monotonic(), counter, n))

    def no_lost_detection(self, camera: str) -> None:
        """The middleware cannot report lost frames for this camera's subscription."""
        with self._lock:
            self.cameras[camera].lost_detection = False

    def recent(self, camera: str, now: float, seconds: float = RECENT_S) -> dict[str, int]:
        """Bad, failed and lost frames of the last `seconds`."""
        with self._lock:
            events = list(self.cameras[camera].recent)
        out = dict.fromkeys(WARN_KINDS, 0)
        for t, counter, n in events:
            if now - t <= seconds:
                out[counter] += n
        return out

    def batch(self, frames: list[tuple[str, int]], inference: float, cycle: float) -> None:
        """A finished batch: its (camera, stamp ns) frames and how long it took."""
        with self._lock:
            self.batches += 1
            self.batch_sizes[len(frames)] += 1
            self.recent_batches.append(tuple(camera for camera, _ in frames))
            self.inference.append(inference)
            self.batch_times[self.batches] = (inference, cycle)
            self.batch_times.pop(self.batches - 2000, None)
            self.recent_frames.extend((camera, ns, self.batches) for camera, ns in frames)

    def published(self, camera: str, latency: float | None, node_latency: float) -> None:
        """A frame served; `latency` (now - header stamp, s) is kept only when the stamp is
        plausibly on the node's clock (see the module doc)."""
        with self._lock:
            cam = self.cameras[camera]
            cam.counts["processed"] += 1
            if latency is not None:
                if STAMP_RANGE_S[0] <= latency <= STAMP_RANGE_S[1]:
                    cam.latency.append(latency)
                else:
                    cam.counts["stamp_not_clock"] += 1
            cam.node_latency.append(node_latency)

    def snapshot(self) -> dict:
        """A plain-dict copy for tests, benchmarks and the diagnostics message."""
        with self._lock:
            cams = {}
            for name, c in self.cameras.items():
                d = {**c.counts}
                d.update({f.name: getattr(c, f.name) for f in fields(c) if f.name != "counts"})
                d["latency"], d["node_latency"] = list(c.latency), list(c.node_latency)
                d["recent"] = list(c.recent)
                cams[name] = d
            return {
                "cameras": cams,
                "batch_sizes": dict(self.batch_sizes),
                "recent_batches": list(self.recent_batches),
                "inference": list(self.inference),
                "batches": self.batches,
                "batch_times": dict(self.batch_times),
                "recent_frames": list(self.recent_frames),
            }

    def rates(self, now: float) -> dict[str, tuple[float, float]]:
        """(input Hz, output Hz) per camera since the previous call (0 on the first)."""
        with self._lock:
            counts = {
                n: (c.counts["received"], c.counts["processed"]) for n, c in self.cameras.items()
            }
            previous, self._last_report = self._last_report, (now, counts)
        if previous is None or now <= previous[0]:
            return {n: (0.0, 0.0) for n in counts}
        dt = now - previous[0]
        return {
            n: ((r - previous[1][n][0]) / dt, (p - previous[1][n][1]) / dt)
            for n, (r, p) in counts.items()
        }


def _ms(values: list[float]) -> str:
    return f"{1000.0 * sum(values) / len(values):.1f}" if values else "n/a"


def _kv(values: dict[str, object]) -> list[KeyValue]:
    return [KeyValue(key=k, value=str(v)) for k, v in values.items()]


def _latency_text(cam: dict, window: int) -> str:
    if cam["latency"]:
        return _ms(cam["latency"][-window:])
    if cam["stamp_not_clock"]:
        return "n/a (header stamps are not on this node's clock)"
    return "n/a"


def diagnostics_msg(
    stats: NodeStats,
    node_name: str,
    device: str,
    backend: str,
    stamp,
    window: int = 30,
    recent_s: float = RECENT_S,
    heads: dict[str, tuple[int, int]] | None = None,
    streams: int = 1,
) -> DiagnosticArray:
    """One status for the network (device, inference time, batches, and per head the camera
    frames it ran for and was skipped for: `heads` {task: (run, skipped)}) and one per
    camera."""
    from .image_conversion import JPEG_CHECKED

    now = time.monotonic()
    rates = stats.rates(now)
    snap = stats.snapshot()
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    inference = snap["inference"][-window:]
    batches = sum(snap["batch_sizes"].values())
    frames = sum(k * v for k, v in snap["batch_sizes"].items())
    msg.status.append(
        DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{node_name}: network",
            message=f"{batches} batches on {device}",
            hardware_id=device,
            values=_kv(
                {
                    "device": device,
                    "backend": backend,
                    "inference streams": streams,
                    "inference time ms (mean of last)": _ms(inference),
                    "inference time ms (max of last)": _ms([max(inference)] if inference else []),
                    "batches": batches,
                    "mean batch size": f"{frames / batches:.2f}" if batches else "n/a",
                    "corrupt JPEG check": "on" if JPEG_CHECKED else "off (simplejpeg missing)",
                    **{
                        f"head {t} frames run / skipped": f"{run} / {skipped}"
                        for t, (run, skipped) in (heads or {}).items()
                    },  # fmt: skip
                }
            ),
        )
    )
    for name, cam in snap["cameras"].items():
        in_hz, out_hz = rates[name]
        dropped = cam["superseded"] + cam["bad"] + cam["failed"] + cam["discarded"]
        recent = stats.recent(name, now, recent_s)
        level, message = DiagnosticStatus.OK, "ok"
        if recent["bad"] or recent["failed"] or recent["lost"]:
            level = DiagnosticStatus.WARN
            parts = [f"{recent[k]} {k}" for k in WARN_KINDS if recent[k]]
            message = f"{', '.join(parts)} frames in the last {recent_s:g} s"
            if recent["lost"]:
                message += " (lost: sent but never arrived; see README, Robustness)"
            if recent["bad"] or recent["failed"]:
                message += f"; last error: {cam['last_error']}"
        elif cam["received"] == 0:
            level, message = DiagnosticStatus.WARN, "no frames received yet"
        values = {"input rate Hz": f"{in_hz:.2f}", "output rate Hz": f"{out_hz:.2f}"}
        values["end-to-end latency ms (mean of last)"] = _latency_text(cam, window)
        values["in-node latency ms (mean of last)"] = _ms(cam["node_latency"][-window:])
        values["dropped frames"] = dropped
        values.update({k: cam[k] for k in COUNTERS})
        values.update({k: cam[k] for k in DETAILS})
        values["lost frames detected"] = "yes" if cam["lost_detection"] else "no (RMW lacks it)"
        values["last error"] = cam["last_error"]
        msg.status.append(
            DiagnosticStatus(
                level=level,
                name=f"{node_name}: camera {name}",
                message=message,
                hardware_id=device,
                values=_kv(values),
            )
        )
    return msg


__all__ = ["COUNTERS", "DETAILS", "RECENT_S", "CameraCounts", "NodeStats", "diagnostics_msg"]
