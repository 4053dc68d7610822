"""Imports run one way: every module of pvt_mtl_ros, training and benchmarks sits in a layer,
and imports only from its own unit or a lower layer; no module imports another module's
private names. The imports are read with `ast` (nothing is imported), lazy ones included.

docs/ARCHITECTURE.md states the same layers and the rule.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pvt_mtl_ros", "training", "benchmarks")

# Lowest first. A unit is a package or module (a dotted prefix); a module belongs to the
# longest unit that prefixes it. A module imports its own unit and the units of lower layers;
# the units of one layer are independent of each other.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "pvt_mtl_ros",  # the package's own __init__ only
            "pvt_mtl_ros.config_loader",
            "pvt_mtl_ros.conventions",
            "pvt_mtl_ros.visualize",
        ),
    ),
    ("model", ("pvt_mtl_ros.model",)),
    ("inference", ("pvt_mtl_ros.inference",)),
    ("libraries", ("pvt_mtl_ros.metrics", "pvt_mtl_ros.sim")),
    ("ros", ("pvt_mtl_ros.ros",)),
    # replay and sil share what they both need through ros.outputs and metrics, never
    # through each other
    ("tools", ("pvt_mtl_ros.replay", "pvt_mtl_ros.sil")),
    ("entry points", ("pvt_mtl_ros.demo",)),
    ("training", ("training",)),
    ("benchmarks", ("benchmarks",)),
)
EXACT_UNITS = {"pvt_mtl_ros"}  # matches the module itself, not what lies under it


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # the dotted module imported (first-party only)
    names: tuple[str, ...]  # the names taken from it (from-imports), else ()
    line: int

    def where(self) -> str:
        return f"{self.importer} (line {self.line})"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party_modules(root: Path = ROOT) -> dict[str, Path]:
    return {
        module_name(p, root): p
        for package in PACKAGES
        for p in sorted((root / package).rglob("*.py"))
        if ".venv" not in p.parts
    }


def imports_of(
    module: str,
    source: str,
    known: set[str],
    is_package: bool = False,
    folder_modules=(),
    heads: tuple[str, ...] = PACKAGES,
) -> list[Import]:
    """The first-party imports (those under `heads`) in `source`, the text of `module`, with
    relative ones resolved. `folder_modules`: the scripts beside it that it imports as
    top-level modules (benchmarks and tests have their folder on sys.path)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []

    def first_party(name: str) -> bool:
        return name.split(".")[0] in heads

    def local(name: str) -> str:
        head = name.split(".")[0]
        return f"{package}.{name}" if head in folder_modules and package else name

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = local(alias.name)
                if first_party(name):
                    found.append(Import(module, name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = local(node.module or "")
            if not first_party(target):
                continue
            names = tuple(a.name for a in node.names)
            submodules = [n for n in names if f"{target}.{n}" in known]
            found += [Import(module, f"{target}.{n}", (), node.lineno) for n in submodules]
            rest = tuple(n for n in names if n not in submodules)
            if rest or not submodules:
                found.append(Import(module, target, rest, node.lineno))
    return found


def scripts_beside(path: Path) -> set[str]:
    """What a script imports by bare name from its own folder (benchmarks/, test/)."""
    return {p.stem for p in path.parent.glob("*.py")} if path.parent.name in SCRIPTS else set()


SCRIPTS = ("benchmarks", "test")


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = first_party_modules(root)
    out = []
    for name, path in modules.items():
        package = path.name == "__init__.py"
        out += imports_of(name, path.read_text(), set(modules), package, scripts_beside(path))
    return out


def unit_of(module: str) -> tuple[int, str] | None:
    """(layer index, unit) of a module, or None where no layer holds it."""
    best = None
    for index, (_, units) in enumerate(LAYERS):
        for unit in units:
            exact = unit in EXACT_UNITS
            if module == unit or (not exact and module.startswith(unit + ".")):
                if best is None or len(unit) > len(best[1]):
                    best = (index, unit)
    return best


def layering_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        src, dst = unit_of(imp.importer), unit_of(imp.target)
        if src is None or dst is None or src[1] == dst[1]:
            continue  # unplaced modules have their own test; a unit imports itself freely
        src_layer, dst_layer = LAYERS[src[0]][0], LAYERS[dst[0]][0]
        if dst[0] > src[0]:
            bad.append(f"{imp.where()} imports {imp.target}: {src_layer} -> {dst_layer}, upward")
        elif dst[0] == src[0]:
            bad.append(
                f"{imp.where()} imports {imp.target}: {src[1]} and {dst[1]} share the layer "
                f"{src_layer}, whose units are independent"
            )
    return bad


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        names = [n for n in imp.names if is_private(n)]
        if names:
            bad.append(f"{imp.where()} imports {', '.join(names)} from {imp.target}")
        parts = imp.target.split(".")
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])  # a private module is its package's own
            if is_private(part) and not imp.importer.startswith(owner + "."):
                bad.append(f"{imp.where()} imports the private module {imp.target}")
    return bad


def test_every_module_is_in_a_layer():
    unplaced = sorted(m for m in first_party_modules() if unit_of(m) is None)
    assert not unplaced, (
        f"modules in no layer: {unplaced}; add each to LAYERS in test/test_layering.py "
        "and to the layers in docs/ARCHITECTURE.md"
    )


def test_imports_run_down_the_layers():
    bad = layering_violations(all_imports())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    imports = all_imports()
    known = set(first_party_modules())
    for path in sorted((ROOT / "test").glob("*.py")):  # the tests too, which import everything
        imports += imports_of(f"test.{path.stem}", path.read_text(), known, False,
                              scripts_beside(path), (*PACKAGES, "test"))  # fmt: skip
    bad = private_violations(imports)
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "module, source, is_package, layering, private",
    [
        # the cycle this test was written against: model reaching up into inference
        ("pvt_mtl_ros.model.multitask", "def f():\n    from ..inference.predictor import x\n",
         False, ["pvt_mtl_ros.inference.predictor: model -> inference, upward"], []),
        ("pvt_mtl_ros.inference.export", "from ..sim import render", False,
         ["pvt_mtl_ros.sim: inference -> libraries, upward"], []),
        ("pvt_mtl_ros.inference", "from . import export\nfrom ..model import build_model", True,
         [], []),
        ("pvt_mtl_ros.metrics.detection", "import pvt_mtl_ros.sim.classes", False,
         ["share the layer libraries"], []),
        ("pvt_mtl_ros.ros.perception_node", "from pvt_mtl_ros import demo", False,
         ["pvt_mtl_ros.demo: ros -> entry points, upward"], []),
        ("pvt_mtl_ros.replay.offline", "from training.evaluate import evaluate", False,
         ["training.evaluate: tools -> training, upward"], []),
        ("benchmarks.bench_train", "from training.trainer import _to_float as f", False,
         [], ["imports _to_float from training.trainer"]),
        ("benchmarks.bench_node", "from machine import cpu_name\nfrom pvt_mtl_ros import ros",
         False, [], []),
        ("pvt_mtl_ros.sil.harness", "from pvt_mtl_ros.replay._impl import run", False,
         ["share the layer tools"], ["the private module pvt_mtl_ros.replay._impl"]),
        ("pvt_mtl_ros.sil.adapters", "from pvt_mtl_ros.replay.messages import boxes_from_msg",
         False, ["pvt_mtl_ros.sil and pvt_mtl_ros.replay share the layer tools"], []),
        ("pvt_mtl_ros.replay.realtime", "from ..ros.outputs import boxes_from_msg", False, [],
         []),
        ("pvt_mtl_ros.replay.cli", "from ._impl import run\nfrom .session import __all__",
         False, [], []),
    ],
)  # fmt: skip
def test_the_checks_catch_what_they_should(module, source, is_package, layering, private):
    """The checks on fixed sources: each rule fails where it should, and only there."""
    known = {"pvt_mtl_ros.ros", "pvt_mtl_ros.demo", "pvt_mtl_ros.inference.export"}
    imports = imports_of(module, source, known, is_package, folder_modules={"machine"})
    for found, expected in ((layering_violations(imports), layering),
                            (private_violations(imports), private)):  # fmt: skip
        assert len(found) == len(expected), found
        for message, part in zip(found, expected):
            assert part in message, (message, part)
