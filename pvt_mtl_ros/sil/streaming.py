"""SIL's streaming accuracy: the shared implementation in pvt_mtl_ros.metrics.streaming
(replay's real-time mode reports the same figures), under the names the harness imports."""

from pvt_mtl_ros.metrics.streaming import NO_PREDICTION, TASKS, Output, Streaming

__all__ = ["NO_PREDICTION", "TASKS", "Output", "Streaming"]
