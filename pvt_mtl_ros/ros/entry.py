"""The process entry of our nodes: a wrong command line is one line and exit code 2, and
SIGINT/SIGTERM stop the node before its context goes.

rclpy's own signal handler shuts the context down at once, from C, while a worker thread may
still be publishing ("Failed to publish: publisher's context is invalid"). So rclpy is
initialised without it: the executor spins in a thread, the main thread waits where Python
delivers signals, and on SIGINT/SIGTERM the executor stops, the node is destroyed (its worker
joined) and only then is the context shut down (`lifecycle.run_node`).
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from pathlib import Path

import rclpy
import yaml
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

# what building a node raises for a value rclpy refuses (range, type) or a bad camera name
NODE_ERRORS = (ParameterException, ValueError)


class EntryError(RuntimeError):
    """A command line or params file that stops the node before it exists."""


def one_line(err: BaseException) -> str:
    """rcl's messages on one line, without the C source locations they append."""
    text = " ".join(str(err).split())
    return re.sub(r",? at /[^,]*\.c(pp)?:\d+", "", text)


def report(err: BaseException, prog: str | None = None) -> int:
    """Print `prog: error: <one line>` on stderr; the exit code 2."""
    prog = prog or Path(sys.argv[0]).stem or "node"
    print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
    return 2


def params_files(args: list[str]) -> list[str]:
    """The `--params-file FILE` arguments of a ROS command line."""
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--params-file"]


def check_params_files(args: list[str]) -> None:
    """EntryError for a params file that is missing or not YAML (rcl would log two lines
    and raise with its C source locations)."""
    for name in params_files(args):
        path = Path(name)
        if not path.is_file():
            raise EntryError(f"params file not found: {name}")
        try:
            yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError) as err:
            raise EntryError(f"params file {name} cannot be read: {err}") from None
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            problem = getattr(err, "problem", None) or str(err)
            raise EntryError(f"params file {name} is not valid YAML{line}: {problem}") from None


def init(args: list[str] | None) -> None:
    """rclpy.init without rclpy's signal handlers (see the module doc); EntryError for a
    command line or params file rcl refuses."""
    check_params_files(sys.argv if args is None else args)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as err:  # _rclpy.RCLError: a params file rcl's parser refuses, ...
        raise EntryError(one_line(err)) from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def spin_until_interrupted(executor) -> None:
    """Spin `executor` in a thread until the context shuts down or a SIGINT/SIGTERM arrives
    (KeyboardInterrupt in the main thread); the executor has stopped when this returns."""

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        # SIGINT too: a process started in the background by a non-interactive shell inherits
        # SIGINT ignored, and Python then keeps ignoring it; a node must still stop on it
        # (ros2 launch and the tests send SIGINT)
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _interrupt)
    spinner = threading.Thread(target=spin, name="executor", daemon=True)
    spinner.start()
    try:
        while spinner.is_alive():
            spinner.join(0.25)  # a timed wait: Python runs signal handlers here
    finally:
        executor.shutdown(timeout_sec=5.0)
        spinner.join(5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
