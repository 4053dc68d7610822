"""Run logs: a CSV file (always) and TensorBoard (only when the tensorboard package imports).

Named ``logs`` rather than ``logging`` so that it never shadows the standard library module.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
from pathlib import Path

log = logging.getLogger("training")


def setup_console(level: int = logging.INFO, file: Path | None = None) -> None:
    """Plain ``time level message`` lines on stderr (and into ``file``), once per process."""
    root = logging.getLogger("training")
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_training_console", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        handler._training_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    if file is not None:
        file = Path(file).resolve()
        if not any(getattr(h, "baseFilename", None) == str(file) for h in root.handlers):
            file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(file)
            handler.setFormatter(fmt)
            root.addHandler(handler)


def close_file_handlers() -> None:
    root = logging.getLogger("training")
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()


def tensorboard_writer(log_dir: Path):
    """A SummaryWriter, or None (with a note) where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard needs the tensorboard package
        log.info("tensorboard is not installed: CSV log only (pip install tensorboard to add it)")
        return None
    return SummaryWriter(str(log_dir))


class RunLog:
    """One row per logged step in ``log.csv`` (and the same scalars in TensorBoard).

    On resume the rows past the resumed step are dropped first, so the file reads as one run.
    """

    def __init__(
        self,
        out_dir: Path,
        columns: list[str],
        start_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.columns = ["step", *columns]
        self.path = out_dir / "log.csv"
        self.writer = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        kept: list[dict] = []
        if start_step > 0 and self.path.is_file():
            with self.path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)
        os.replace(tmp, self.path)
        if tensorboard:
            self.writer = tensorboard_writer(out_dir / "tensorboard")

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step}
        for key in self.columns[1:]:
            v = values.get(key)
            row[key] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)
        if self.writer is not None:
            for key, v in values.items():
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    self.writer.add_scalar(key.replace("_", "/", 1), v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_log(path: Path) -> list[dict[str, float]]:
    """``log.csv`` back as numbers (empty cells left out)."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
