"""The study table from per-run result JSONs: mean +- std over seeds, paired differences with a
t-test, the summed cost of three single-task models, and a plot of accuracy against cost.

Rendered by ``python -m training.experiments --config <study>.yaml --table [--readme]``; the
README's copy sits between ``<!-- results/<name> begin -->`` and ``<!-- ... end -->`` and is
replaced whole, so it always equals what the JSONs give.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scipy import stats


def _get(*keys: str) -> Callable[[dict], float | None]:
    def get(metrics: dict) -> float | None:
        node: Any = metrics
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return None if node is None else float(node)

    return get


def _transfer(metrics: dict) -> float | None:
    first = next(iter(metrics.get("transfer", {}).values()), None)
    return None if first is None or first.get("mIoU") is None else float(first["mIoU"])


# (key, column title, getter of the value in [0, 1] or None): the accuracy columns.
METRICS: list[tuple[str, str, Callable[[dict], float | None]]] = [
    ("top1", "scene top-1", _get("classification", "top1")),
    ("AP50", "AP50", _get("detection", "AP50")),
    ("AP", "AP", _get("detection", "AP")),
    ("car", "car AP50", _get("detection", "AP50_per_class", "car")),
    ("person", "person AP50", _get("detection", "AP50_per_class", "person")),
    ("mIoU", "mIoU", _get("segmentation", "mIoU")),
    ("camvid", "CamVid mIoU (transfer)", _transfer),
]
# The task a metric belongs to: a pair is compared on the metrics of the tasks both models have.
METRIC_TASK = {
    "top1": "classification",
    "AP50": "detection",
    "AP": "detection",
    "car": "detection",
    "person": "detection",
    "mIoU": "segmentation",
    "camvid": "segmentation",
}
METRIC_GETTERS = {key: get for key, _, get in METRICS}
COLLAPSED = "†"  # marks a seed whose run collapsed (see `collapsed`)
OWN_LATENCY = "‡"  # marks a latency the side-by-side re-measure does not have
COSTS = [  # (key, title, scale, digits)
    ("params", "params (M)", 1e-6, 2),
    ("gflops", "GFLOPs", 1.0, 1),
    ("latency_ms", "latency (ms)", 1.0, 1),
    ("train_s", "train (min)", 1 / 60, 1),
]


def load_records(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` run record of a results folder, in file-name order."""
    records = []
    for path in sorted(Path(folder).glob("*__seed*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a run record ({e})") from None
    return records


LATENCY_FILE = "latency.json"  # beside the run JSONs: every model side by side in one run


def load_latency(folder: Path) -> dict[str, Any] | None:
    """The side-by-side latency re-measure of a results folder (experiments.latency), if any."""
    path = Path(folder) / LATENCY_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a latency record ({e})") from None


def by_model(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["model"], r["seed"])):
        out.setdefault(r["model"], []).append(r)
    return out


def metric(record: dict, key: str) -> float | None:
    return METRIC_GETTERS[key](record["metrics"])


def collapsed(record: dict) -> list[str]:
    """The tasks a run trained on but answers nothing for at test: a detector that returned
    no box on any test frame (its box or class branch died in training), or a classifier no
    better than naming the test split's most common class for every frame (its features
    stopped depending on the image; records from before ``majority_top1``: one class named
    for every frame). Such a run stays in the means, as it happened; the table marks it."""
    det = record["metrics"].get("detection") or {}
    cls = record["metrics"].get("classification") or {}
    out = []
    prior = cls.get("majority_top1")
    at_prior = cls.get("top1", 1.0) <= prior if prior is not None else False
    if "classification" in record["tasks"] and (at_prior or cls.get("predicted_classes") == 1):
        out.append("classification")
    if "detection" in record["tasks"] and det.get("num_detections") == 0 and det.get("frames"):
        out.append("detection")
    return out


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def paired(records: list[dict], a: str, b: str, key: str) -> dict[str, Any] | None:
    """``a - b`` on metric ``key`` over the seeds both have: mean, 95 % t interval, paired
    t-test p-value (two-sided). None where no seed has both."""
    runs = by_model(records)
    va = {r["seed"]: metric(r, key) for r in runs.get(a, [])}
    vb = {r["seed"]: metric(r, key) for r in runs.get(b, [])}
    seeds = sorted(s for s in va if s in vb and va[s] is not None and vb[s] is not None)
    if not seeds:
        return None
    diffs = [va[s] - vb[s] for s in seeds]
    out: dict[str, Any] = {"seeds": seeds, "diffs": diffs, "mean": statistics.fmean(diffs)}
    out["ci95"] = out["p"] = None
    if len(diffs) > 1:
        sd = statistics.stdev(diffs)
        if sd > 0:
            half = stats.t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
            out["ci95"] = (out["mean"] - half, out["mean"] + half)
            out["p"] = float(stats.ttest_rel([va[s] for s in seeds], [vb[s] for s in seeds]).pvalue)
    return out


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def _signed(fraction: float) -> str:
    """Points with a sign; a difference that rounds to zero reads +0.0, not -0.0."""
    return f"{(round(100 * fraction, 1) or 0.0):+.1f}"


def _num(value: float | None, std: float | None, scale: float, digits: int) -> str:
    if value is None:
        return "-"
    text = f"{value * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _cell(values: list[float | None], fmt: Callable) -> str:
    present = [v for v in values if v is not None]
    return fmt(*mean_std(present)) if present else "-"


def _twins(records: list[dict], pairs: list[list[str]]) -> dict[str, list[str]]:
    """Multi-task model -> its single-task twins (from ``pairs``), when they cover its tasks."""
    tasks = {m: set(rs[0]["tasks"]) for m, rs in by_model(records).items()}
    out: dict[str, list[str]] = {}
    for a, b in pairs:
        if a in tasks and b in tasks and len(tasks[a]) > 1 and len(tasks[b]) == 1:
            out.setdefault(a, []).append(b)
    return {
        a: bs
        for a, bs in out.items()
        if set().union(*(tasks[b] for b in bs)) == tasks[a] and len(bs) == len(tasks[a])
    }


def _with_latency(records: list[dict], side_by_side: dict | None) -> list[dict]:
    """The records with ``latency_ms`` from the side-by-side re-measure where it has the
    model (one figure per model: the same architecture for every seed)."""
    models = (side_by_side or {}).get("models", {})
    return [
        {**r, "latency_ms": models[r["model"]]["latency_ms"]} if r["model"] in models else r
        for r in records
    ]


def render(
    records: list[dict], order: list[str] | None = None, pairs=(), latency: dict | None = None
) -> str:
    """The Markdown study table (models in ``order``, then any others). ``latency``: the
    side-by-side re-measure (``experiments.latency``), used for the models it has."""
    records = _with_latency(records, latency)
    runs = by_model(records)
    names = [n for n in (order or []) if n in runs] + sorted(set(runs) - set(order or []))
    titles = [t for _, t, _ in METRICS] + [t for _, t, _, _ in COSTS]
    # a model the re-measure has not seen keeps its own run's figure, marked: it was timed
    # alone at the end of training, maybe beside other work, so it does not compare
    unmeasured = {
        n
        for n in names
        if latency and n not in latency["models"] and any(r.get("latency_ms") for r in runs[n])
    }
    if latency:
        backends = sorted({m["backend"] for m in latency["models"].values()})
        initial = [n for n in names if latency["models"].get(n, {}).get("weights") == "initial"]
        untrained = (
            f"; {'all' if len(initial) == len(latency['models']) else len(initial)} of them "
            "timed with initial weights: the same network, but every box candidate reaches NMS, "
            "the worst case of post-processing"
        )
        where = (
            f"latency batch 1, the models side by side in one run ({', '.join(backends)}; "
            f"{latency['machine']}; {latency['measured'][:10]}; latency.json"
            f"{untrained if initial else ''})"
        )
    else:
        where = "latency batch 1 (backend in each run record)"
    lines = [
        f"Accuracy in %, mean ± sample std over seeds; {where}; train = wall time of training.",
        "",
        "| model | tasks | seeds | " + " | ".join(titles) + " |",
        "|" + "---|" * (3 + len(titles)),
    ]
    dead: list[tuple[str, int, str]] = []  # (model, seed, task) of collapsed runs
    for name in names:
        rs = runs[name]
        cells = [_cell([metric(r, k) for r in rs], _pct) for k, _, _ in METRICS]
        cells += [
            _cell([r.get(k) for r in rs], lambda m, s, a=scale, d=digits: _num(m, s, a, d))
            + (f" {OWN_LATENCY}" if k == "latency_ms" and name in unmeasured else "")
            for k, _, scale, digits in COSTS
        ]
        tasks = "+".join(t[:3] for t in rs[0]["tasks"])
        dead_tasks = [collapsed(r) for r in rs]
        seeds = ",".join(f"{r['seed']}{COLLAPSED if d else ''}" for r, d in zip(rs, dead_tasks))
        dead += [(name, r["seed"], t) for r, d in zip(rs, dead_tasks) for t in d]
        lines.append(f"| {name} | {tasks} | {seeds} | " + " | ".join(cells) + " |")
    for twins in _twins(records, [list(p) for p in pairs]).values():
        sums = []
        for k, _, scale, digits in COSTS:
            means = [
                mean_std([r[k] for r in runs[t] if r.get(k) is not None] or [math.nan])[0]
                for t in twins
            ]
            total = sum(means)
            sums.append("-" if math.isnan(total) else _num(total, None, scale, digits))
        blank = ["-"] * len(METRICS)
        label = " + ".join(twins)
        lines.append(f"| {label} (sum of three) | | | " + " | ".join(blank + sums) + " |")
    if dead:
        which = "; ".join(f"{m} seed {seed}: {task}" for m, seed, task in dead)
        lines += ["", f"{COLLAPSED} collapsed on a task it trained, no box on any test frame or "
                  f"no better than always naming the most common scene ({which}): "
                  "kept in the means and the paired figures, as it happened."]  # fmt: skip
    if unmeasured:
        lines += ["", f"{OWN_LATENCY} latency from the end of its own run, not in the side-by-side "
                  f"re-measure ({', '.join(n for n in names if n in unmeasured)}): rerun "
                  "`--latency` on a quiet machine to compare it."]  # fmt: skip
    rows = []
    if pairs:
        tasks = {m: set(rs[0]["tasks"]) for m, rs in runs.items()}
        for a, b in pairs:
            if a not in runs or b not in runs:
                continue
            for key, title, _ in METRICS:
                if METRIC_TASK[key] not in tasks[a] & tasks[b]:
                    continue
                d = paired(records, a, b, key)
                if d is None:
                    continue
                ci = (
                    "-"
                    if d["ci95"] is None
                    else f"{_signed(d['ci95'][0])} … {_signed(d['ci95'][1])}"
                )
                p = "-" if d["p"] is None else f"{d['p']:.3f}"
                rows.append(
                    f"| {a} | {b} | {title} | {len(d['seeds'])} | {_signed(d['mean'])} "
                    f"| {ci} | {p} |"
                )
    if rows:  # no pair has a seed in common yet: no empty table
        lines += [
            "",
            "Paired by seed: a − b in points (95 % t interval; p of a two-sided paired t-test).",
            "",
            "| a | b | metric | seeds | a − b | 95 % CI | p |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    return "\n".join(lines) + "\n"


def replace_block(path: Path, name: str, text: str) -> None:
    """Replace what stands between the ``results/<name>`` markers of ``path``."""
    begin, end = f"<!-- results/{name} begin -->", f"<!-- results/{name} end -->"
    content = path.read_text()
    if begin not in content or end not in content:
        raise ValueError(f"{path}: no {begin} ... {end} block to replace")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}{end}{tail}")


def block(path: Path, name: str) -> str | None:
    """The text of the ``results/<name>`` block of ``path`` (None without one)."""
    begin, end = f"<!-- results/{name} begin -->\n", f"<!-- results/{name} end -->"
    content = path.read_text()
    if begin not in content or end not in content:
        return None
    return content.split(begin, 1)[1].split(end, 1)[0]


# --- the quick comparison (one seed, no result files) -------------------------------------


def summary_row(record: dict) -> dict[str, Any]:
    """One record as the comparison table's row."""
    m = record["metrics"]
    return {
        "name": record["model"],
        "backbone": record["backbone"],
        "tasks": record["tasks"],
        "train_seconds": record.get("train_s"),
        "top1": _get("classification", "top1")(m),
        "top5": _get("classification", "top5")(m),
        "AP": _get("detection", "AP")(m),
        "AP50": _get("detection", "AP50")(m),
        "mIoU": _get("segmentation", "mIoU")(m),
        "params_M": record["params"] / 1e6,
        "gflops": record["gflops"],
        "latency_ms": record.get("latency_ms"),
    }


def comparison_markdown(rows: list[dict[str, Any]], base: dict[str, Any]) -> str:
    steps = base.get("train", {}).get("steps") or f"{base.get('train', {}).get('epochs')} epochs"
    lines = [
        f"Same budget for every model: {steps} steps, seed {base.get('seed', 0)}, "
        "same datasets and batch sizes per task. Metrics in %, latency = predict() on one "
        "input-size image, batch 1.",
        "",
        "| model | tasks | top-1 | top-5 | AP | AP50 | mIoU | params (M) | GFLOPs | latency (ms) "
        "| train (s) |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        tasks = "+".join(t[:3] for t in r["tasks"])
        secs = "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
        lat = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}"
        lines.append(
            f"| {r['name']} | {tasks} | {_pct(r['top1'])} | {_pct(r['top5'])} | {_pct(r['AP'])} "
            f"| {_pct(r['AP50'])} | {_pct(r['mIoU'])} | {r['params_M']:.2f} | {r['gflops']:.2f} "
            f"| {lat} | {secs} |"
        )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> Path | None:
    """Each accuracy against latency, mean and std over seeds per model; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shown = [("top1", "scene top-1 (%)"), ("AP50", "AP50 (%)"), ("mIoU", "mIoU (%)")]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], shown):
        for name, rs in by_model(records).items():
            values = [metric(r, key) for r in rs]
            lat = [r["latency_ms"] for r in rs if r.get("latency_ms") is not None]
            if None in values or not lat:
                continue
            m, s = mean_std([100 * v for v in values])
            ax.errorbar(
                statistics.fmean(lat),
                m,
                yerr=s or 0,
                fmt="o",
                capsize=3,
                ms=4 + rs[0]["params"] / 4e6,
            )
            ax.annotate(name, (statistics.fmean(lat), m), fontsize=7)
        ax.set_xlabel("latency (ms, batch 1)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
