"""Nodes in this process over a private rclpy context: what the SIL harness, replay's real-time
mode, the node benchmark, the demo and the tests share.

A private context on a private domain id means a run never meets a live system or a
concurrent test run; each executor spins on its own daemon thread, and ``close`` stops the
executors and joins their threads before the nodes and the context go (so no callback or
worker publishes into a context that is gone).

    with InProcess() as ros:
        node = PerceptionNode("perception", context=ros.context, ...)
        probe = ros.node("probe")
        ros.spin(node, probe)
        wait_for(lambda: inbox, 10.0, "a detections message")
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

JOIN_S = 5.0  # how long close() waits for an executor thread
# Random domains avoid meeting another run on this machine; PVT_TEST_DOMAIN_ID pins one.
DOMAIN_RANGE = (1, 100)


def private_domain() -> int:
    """``$PVT_TEST_DOMAIN_ID``, else a random id in DOMAIN_RANGE."""
    env = os.environ.get("PVT_TEST_DOMAIN_ID", "")
    return int(env) if env.isdigit() else random.randint(*DOMAIN_RANGE)


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time``, a ``Header`` or a message with a header
    (rclpy's and rosbags' messages alike)."""
    stamp = getattr(stamp, "header", stamp)
    stamp = getattr(stamp, "stamp", stamp)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_msg(ns: int) -> Time:
    """A ``builtin_interfaces/Time`` of ``ns`` nanoseconds."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    error: type[Exception] = TimeoutError,
    period: float = 0.01,
) -> Any:
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` s pass (``error``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(period)


class InProcess:
    """A private rclpy context (own domain id, no signal handlers: the caller owns SIGINT) and
    the executors that spin its nodes, one thread each. Given a ``context`` the caller owns
    (a test module's), it spins and closes only its own nodes and leaves the context up."""

    def __init__(self, domain_id: int | None = None, context: rclpy.Context | None = None) -> None:
        self.owns_context = context is None
        if context is not None:
            self.context, self.domain = context, context.get_domain_id()
        else:
            self.domain = private_domain() if domain_id is None else int(domain_id)
            self.context = rclpy.Context()
            rclpy.init(
                context=self.context,
                domain_id=self.domain,
                signal_handler_options=SignalHandlerOptions.NO,
            )
        self.executors: list[SingleThreadedExecutor] = []
        self.threads: list[threading.Thread] = []
        self.nodes: list[Any] = []

    def node(self, name: str, **kwargs: Any) -> Any:
        """A plain rclpy node in this context (a probe, a player), not spun yet."""
        node = rclpy.create_node(name, context=self.context, **kwargs)
        self.nodes.append(node)
        return node

    def spin(self, *nodes: Any) -> SingleThreadedExecutor:
        """Spin ``nodes`` on one new executor thread (nodes of separate calls run in parallel)."""
        executor = SingleThreadedExecutor(context=self.context)
        for node in nodes:
            executor.add_node(node)
            if node not in self.nodes:
                self.nodes.append(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        self.executors.append(executor)
        self.threads.append(thread)
        return executor

    def close(self) -> None:
        """Executors stopped and joined first, then the nodes destroyed, then the context (if
        this object made it)."""
        for executor in self.executors:
            executor.shutdown(timeout_sec=JOIN_S)
        for thread in self.threads:
            thread.join(JOIN_S)
        for node in reversed(self.nodes):
            node.destroy_node()
        self.executors, self.threads, self.nodes = [], [], []
        if self.owns_context:
            rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
