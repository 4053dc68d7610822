"""What our lifecycle nodes share: self-start without a manager, and the console entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

SUCCESS = TransitionCallbackReturn.SUCCESS


def start(node: LifecycleNode) -> bool:
    """Configure and activate, as a lifecycle manager would; False if either fails."""
    if node.trigger_configure() != SUCCESS:
        return False
    return node.trigger_activate() == SUCCESS


def run_node(make_node: Callable[[], Any], args: list[str] | None = None) -> int:
    """Build the node, start it when its `autostart` parameter says so, spin until shut down.

    Exit code 1 when configure/activate fails (the node has logged the one clear message).
    """
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter("autostart").value and not start(node):
            code = 1
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
