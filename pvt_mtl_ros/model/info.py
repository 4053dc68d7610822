"""`pvt-mtl-info`: parameters per part and FLOPs at an input size, for one model or the table.

pvt-mtl-info mtl_pvt_v2_b0 --size 512 512
pvt-mtl-info --table --json
pvt-mtl-info --checkpoint model.pt
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import COMPARISON, build_model, load_checkpoint
from .multitask import MultiTaskNet

PARTS = ("backbone", "neck", "classification", "detection", "segmentation")


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def summarize(model: MultiTaskNet, size: tuple[int, int] = (512, 512)) -> dict:
    """Parameters per part (backbone, neck, each head) and FLOPs (2 x MAC) per part."""
    parts = {"backbone": model.backbone, "neck": model.neck, **dict(model.heads.items())}
    params = {name: _params(parts.get(name)) for name in PARTS}
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size))
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    flops = {
        name: counts.get(f"{root}.{name}", counts.get(f"{root}.heads.{name}", 0)) for name in PARTS
    }
    return {
        "name": model.cfg.name or model.cfg.backbone,
        "backbone": model.cfg.backbone,
        "neck": model.cfg.neck if model.neck is not None else "-",
        "tasks": list(model.tasks),
        "input_size": list(size),
        "params": params,
        "params_total": sum(params.values()),
        "flops": flops,
        "flops_total": counts.get("Global", 0),
    }


def markdown(rows: list[dict]) -> str:
    size = "x".join(map(str, rows[0]["input_size"])) if rows else ""
    head = (
        "| model | backbone | tasks | params (M) | backbone | neck | cls head | det head "
        f"| seg head | GFLOPs @{size} |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        p = {k: v / 1e6 for k, v in r["params"].items()}
        tasks = "+".join(t[:3] for t in r["tasks"])
        lines.append(
            f"| {r['name']} | {r['backbone']} | {tasks} | {r['params_total'] / 1e6:.2f} "
            f"| {p['backbone']:.2f} | {p['neck']:.2f} | {p['classification']:.2f} "
            f"| {p['detection']:.2f} | {p['segmentation']:.2f} | {r['flops_total'] / 1e9:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvt-mtl-info", description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="preset names (see --list)")
    parser.add_argument("--checkpoint", help="describe the model stored in this checkpoint")
    parser.add_argument("--table", action="store_true", help="the comparison table's models")
    parser.add_argument("--size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--list", action="store_true", help="list preset names and exit")
    args = parser.parse_args(argv)
    from .presets import preset_names

    if args.list:
        print("\n".join(preset_names()))
        return 0
    names = list(args.presets) + (list(COMPARISON) if args.table else [])
    if not names and not args.checkpoint:
        names = ["mtl_pvt_v2_b0"]
    sources = [(build_model, n) for n in names]
    if args.checkpoint:
        sources.append((load_checkpoint, args.checkpoint))
    rows = []
    for make, arg in sources:  # one model in memory at a time
        try:
            model = make(arg)
        except (KeyError, RuntimeError, ValueError) as e:
            print(f"pvt-mtl-info: {e}", file=sys.stderr)
            return 2
        rows.append(summarize(model, tuple(args.size)))
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
