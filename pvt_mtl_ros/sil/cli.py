"""`pvt-mtl-sil [SCENARIO.yaml]`: run a closed-loop simulator scenario through the perception
node, print live and final metrics, and exit non-zero when a threshold is missed.

Exit status: 0 every threshold met; 1 a threshold missed, or the run was interrupted
(Ctrl-C / SIGTERM: the report covers what ran); 2 the scenario could not run (bad file,
checkpoint, topics that never connected), with a one-line error on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ..config_loader import parse_assignment
from .scenario import DEFAULT_SCENARIO, ScenarioError, load_scenario, shipped_file

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvt-mtl-sil",
        description="Simulator-in-the-loop: frames with exact ground truth through the "
        "perception node; live AP50, mIoU, scene accuracy, latency, rate and drops; "
        "thresholds gate the exit status (docs/SIL.md).",
    )
    p.add_argument(
        "scenario",
        type=Path,
        nargs="?",
        help=f"scenario YAML (see config/sil/); default: the shipped {DEFAULT_SCENARIO}",
    )
    p.add_argument("--checkpoint", help="overrides perception.checkpoint")
    p.add_argument("--device", help="overrides perception.device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--duration", type=float, help="overrides duration (seconds of frames)")
    p.add_argument("--domain-id", type=int, help="overrides domain_id")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any scenario key, e.g. --set thresholds.miou=0.6 --set cameras.0.rate=5",
    )
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    p.add_argument("--quiet", action="store_true", help="no live lines, only the final report")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        overrides = [parse_assignment(item) for item in args.set]
        for key, value in (
            ("perception.checkpoint", args.checkpoint),
            ("perception.device", args.device),
            ("duration", args.duration),
            ("domain_id", args.domain_id),
        ):
            if value is not None:
                overrides.append((key, value))
        path = args.scenario or shipped_file(DEFAULT_SCENARIO)
        scenario = load_scenario(path, overrides)
    except ScenarioError as err:
        print(f"pvt-mtl-sil: {err}", file=sys.stderr)
        return EXIT_ERROR

    from .harness import HarnessError, run_scenario  # rclpy only past this point
    from .report import text, write_json

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):  # finish with a report, then exit 1
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    printer = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    try:
        report = run_scenario(scenario, printer=printer, stop=stop)
    except HarnessError as err:
        print(f"pvt-mtl-sil: {err}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(text(report), end="", flush=True)
    if args.report:
        write_json(report, args.report)
    return EXIT_PASS if report["status"] == "pass" else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
