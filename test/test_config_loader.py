"""The one config reader: _base_ inheritance, --set overrides, typed dataclasses; used by the
training configs and the SIL scenarios alike."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pvt_mtl_ros.config_loader import ConfigError, apply_set, from_dict, parse_assignment
from pvt_mtl_ros.sil.scenario import ScenarioError, load_scenario
from training.config import TrainConfigError


@dataclass
class Inner:
    rate: float = 1.0
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    size: tuple[int, int]
    inner: Inner = field(default_factory=Inner)
    note: str | None = None


def test_set_overrides_reach_list_items_and_create_missing_mappings():
    raw = {"a": [{"x": 1}, {"x": 2}], "b": None}
    apply_set(raw, "a.1.x=5")
    apply_set(raw, "b.c.d=[1, 2]")
    apply_set(raw, "e=")
    assert raw == {"a": [{"x": 1}, {"x": 5}], "b": {"c": {"d": [1, 2]}}, "e": None}
    with pytest.raises(ConfigError, match="a.2 is not an index of the list"):
        apply_set(raw, "a.2.x=1")
    with pytest.raises(ConfigError, match="expects key=value"):
        parse_assignment("novalue")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_assignment("a=[1,")


def test_typed_conversion_names_the_key_and_suggests_the_near_miss():
    got = from_dict(Outer, {"size": [2, 3], "inner": {"rate": "1e-3", "names": ["p"]}}, "cfg")
    assert got == Outer((2, 3), Inner(0.001, ["p"]))
    with pytest.raises(
        ConfigError, match=r"cfg\.inner: unknown key\(s\) rte \(did you mean 'rate'"
    ):
        from_dict(Outer, {"size": [2, 3], "inner": {"rte": 2}}, "cfg")
    with pytest.raises(ConfigError, match=r"cfg\.size\[1\]: expected an integer, got 'x'"):
        from_dict(Outer, {"size": [2, "x"]}, "cfg")
    with pytest.raises(ConfigError, match="missing required key 'size'"):
        from_dict(Outer, {}, "cfg")


def test_training_and_scenario_errors_are_the_loaders(tmp_path):
    assert TrainConfigError is ConfigError and ScenarioError is ConfigError
    shipped = Path(__file__).resolve().parents[1] / "config" / "sil" / "default.yaml"
    base = load_scenario(shipped)
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"_base_": str(shipped), "thresholds": {"miou": 0.01}}))
    scn = load_scenario(child, [parse_assignment("duration=7")])
    assert scn.duration == 7 and scn.thresholds == {**base.thresholds, "miou": 0.01}
    assert [c.name for c in scn.cameras] == [c.name for c in base.cameras]
    (tmp_path / "bad.yaml").write_text("_base_: missing.yaml\n")
    with pytest.raises(ScenarioError, match="config file not found: .*missing.yaml"):
        load_scenario(tmp_path / "bad.yaml")
