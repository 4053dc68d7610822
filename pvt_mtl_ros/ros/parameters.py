"""Node parameters as tables: one row per parameter, everything else derived from it.

From a row come the declaration (name, default, static type), the descriptor that
`ros2 param describe` shows (description, range, read-only, when it takes effect), the check
of a start-up override (type, range, choices) and of a live `ros2 param set`, the shipped
YAML's mirror test and the parameter reference in docs/PARAMETERS.md
(`python -m pvt_mtl_ros.ros.parameters` writes it; a test keeps it current).

When a parameter takes effect (`when`):

- LIVE: read for every frame; `ros2 param set` takes effect on the next one.
- CONFIGURE: read at configure (or activate); refused while the node is configured, with the
  reason: deactivate and clean up, set it, configure again.
- START: read once when the node is built (read-only afterwards).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

LIVE, CONFIGURE, START = "live", "configure", "start"
WHEN_TEXT = {
    LIVE: "live: takes effect on the next frame",
    CONFIGURE: "read at configure: refused while the node is configured",
    START: "read when the node starts: read-only",
}
TYPE_WORDS = {
    Parameter.Type.NOT_SET: "no value",
    Parameter.Type.BOOL: "a bool",
    Parameter.Type.INTEGER: "an integer",
    Parameter.Type.DOUBLE: "a double",
    Parameter.Type.STRING: "a string",
    Parameter.Type.BYTE_ARRAY: "a byte list",
    Parameter.Type.BOOL_ARRAY: "a list of bools",
    Parameter.Type.INTEGER_ARRAY: "a list of integers",
    Parameter.Type.DOUBLE_ARRAY: "a list of doubles",
    Parameter.Type.STRING_ARRAY: "a list of strings",
}
ARRAY_TYPES = {
    Parameter.Type.BYTE_ARRAY,
    Parameter.Type.BOOL_ARRAY,
    Parameter.Type.INTEGER_ARRAY,
    Parameter.Type.DOUBLE_ARRAY,
    Parameter.Type.STRING_ARRAY,
}


@dataclass(frozen=True)
class Param:
    """One parameter. `default` may be a function of the values declared before it in the same
    table (a camera's topic follows its transport); `shown` is then its text in the docs.
    `choices` limits a string; `range` an integer or double, both ends included."""

    name: str
    default: Any
    description: str
    when: str = CONFIGURE
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    list_type: Parameter.Type | None = None  # the type of an empty-list default
    shown: str = ""

    @property
    def type(self) -> Parameter.Type:
        if self.list_type is not None:
            return self.list_type
        if callable(self.default):
            return Parameter.Type.STRING
        return Parameter.Type.from_parameter_value(self.default)

    def descriptor(self) -> ParameterDescriptor:
        desc = ParameterDescriptor(description=self.description, read_only=self.when == START)
        notes = [WHEN_TEXT[self.when]]
        if self.choices:
            notes.append("one of " + ", ".join(repr(c) for c in self.choices))
        desc.additional_constraints = "; ".join(notes)
        if self.range is not None and self.type == Parameter.Type.DOUBLE:
            lo, hi = self.range
            desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi)]
        if self.range is not None and self.type == Parameter.Type.INTEGER:
            lo, hi = self.range
            desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
        return desc

    def problem(self, value: Any, type_: Parameter.Type | None = None) -> str | None:
        """What is wrong with `value` for this parameter, as one phrase; None when it fits."""
        got = Parameter.Type.from_parameter_value(value) if type_ is None else type_
        if got != self.type and not (self.is_empty_list(value, got)):
            example = f" such as {self.example()}" if self.example() else ""
            return (
                f"{self.name} {value!r}: expected {TYPE_WORDS[self.type]}{example}, "
                f"got {TYPE_WORDS.get(got, str(got))}"
            )
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            lo, hi = self.range
            return f"{self.name} {value!r}: expected {TYPE_WORDS[self.type]} in [{lo}, {hi}]"
        if self.choices and value not in self.choices:
            options = ", ".join(repr(c) for c in self.choices)
            return f"{self.name} {value!r} is not one of {options}"
        return None

    def is_empty_list(self, value: Any, type_: Parameter.Type) -> bool:
        """An empty list reads as any list type (or none, from YAML's `[]`)."""
        empty = value is None or (isinstance(value, list | tuple) and len(value) == 0)
        return self.type in ARRAY_TYPES and empty and (type_ in ARRAY_TYPES or value is None)

    def example(self) -> str:
        if callable(self.default):
            return ""
        if self.type == Parameter.Type.DOUBLE:
            return repr(float(self.default))
        return repr(self.default) if self.default not in ("", []) else ""

    def doc_default(self) -> str:
        if self.shown:
            return self.shown
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, str):
            return repr(self.default) if self.default == "" else self.default
        return str(self.default).replace("'", "")


class ParameterTable(Mapping[str, Param]):
    """Parameters in declaration order, by name."""

    def __init__(self, title: str, params: list[Param]) -> None:
        self.title = title
        self._params = {p.name: p for p in params}
        if len(self._params) != len(params):
            raise ValueError(f"{title}: a parameter name appears twice")

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def rows(self) -> list[Param]:
        return list(self._params.values())

    def under(self, prefix: str) -> list[Param]:
        """The rows with `prefix.` before each name (a camera's own parameters)."""
        return [replace(p, name=f"{prefix}.{p.name}") for p in self._params.values()]

    def markdown(self, prefix: str = "") -> str:
        """The reference table docs/PARAMETERS.md shows."""
        lines = [
            "| parameter | default | when | description |",
            "|---|---|---|---|",
        ]
        for p in self._params.values():
            limits = ""
            if p.range is not None:
                limits = f" Range [{p.range[0]}, {p.range[1]}]."
            if p.choices:
                limits = " One of " + ", ".join(f"`{c!r}`" for c in p.choices) + "."
            text = (p.description + limits).replace("|", "\\|")
            text = text.replace("<", "&lt;").replace(">", "&gt;")  # <camera> is no HTML tag
            lines.append(f"| `{prefix}{p.name}` | `{p.doc_default()}` | {p.when} | {text} |")
        return "\n".join(lines)


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean x?)' for a name close to a known one, else ''."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def given_values(argv: list[str], node_fqn: str) -> dict[str, Any]:
    """The last value each parameter of this node is given in `argv`'s ROS arguments, by
    params files and `-p` rules in their order, with YAML types.

    rcl silently drops a value whose type differs from an earlier one for the same node key
    (a `/**` file says 0.3, a later `-p score_threshold:=high` or `/**` file says 'high'): the
    override then holds the earlier value. Comparing with what was given finds those.
    """
    import yaml

    given: dict[str, Any] = {}
    args = _ros_args(argv)
    for flag, value in zip(args, args[1:]):
        if flag in ("--params-file",):
            try:
                tree = yaml.safe_load(open(value).read()) or {}
            except (OSError, yaml.YAMLError):
                continue  # rcl has already refused it
            for key, params in _node_sections(tree, ""):
                if _matches(key, node_fqn):
                    given.update(_flatten(params))
        elif flag in ("-p", "--param"):
            rule, sep, text = value.partition(":=")
            if not sep:
                continue
            target, _, name = rule.rpartition(":")
            if not target or _matches(target, node_fqn):
                try:
                    given[name] = yaml.safe_load(text)
                except yaml.YAMLError:
                    given[name] = text
    return given


def _ros_args(argv: list[str]) -> list[str]:
    out, inside = [], False
    for arg in argv:
        if arg == "--ros-args":
            inside = True
        elif arg == "--" and inside:
            inside = False
        elif inside:
            out.append(arg)
    return out


def _node_sections(tree: Any, prefix: str) -> Iterator[tuple[str, dict]]:
    """(node key, its ros__parameters) of a params file, nested namespaces joined by /."""
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if not isinstance(value, dict):
            continue
        if "ros__parameters" in value and isinstance(value["ros__parameters"], dict):
            yield f"{prefix}/{str(key).strip('/')}", value["ros__parameters"]
        yield from _node_sections(value, f"{prefix}/{str(key).strip('/')}")


def _matches(pattern: str, node_fqn: str) -> bool:
    """rcl's node keys: a name, a full name, with * (one token) and ** (any tokens)."""
    import re

    pattern = pattern if pattern.startswith("/") else "/" + pattern
    if "/" not in pattern[1:] and "*" not in pattern:  # a bare node name
        return pattern[1:] == node_fqn.rsplit("/", 1)[-1]
    regex = re.escape(pattern).replace(r"/\*\*", "(/[^/]+)*").replace(r"\*", "[^/]+")
    return re.fullmatch(regex, node_fqn) is not None


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def reference(tables: list[tuple[ParameterTable, str]], heading: Callable[[str], str]) -> str:
    """docs/PARAMETERS.md: every table, each under its heading."""
    parts = [
        "# Node parameters",
        "",
        "Generated from the parameter tables in `pvt_mtl_ros/ros/` by "
        "`python -m pvt_mtl_ros.ros.parameters`; `test/test_parameters.py` fails when it is "
        "out of date. *when*: `live` takes effect on the next frame (`ros2 param set`); "
        "`configure` is read at configure and refused while the node is configured; `start` "
        "is read when the node starts. A wrongly typed, out-of-range or misspelled override "
        "stops configure with one line naming the key, the value and what was expected.",
    ]
    for table, prefix in tables:
        parts += ["", heading(table.title), "", table.markdown(prefix)]
    return "\n".join(parts) + "\n"


def _tables() -> list[tuple[ParameterTable, str]]:
    from .perception_node import CAMERA_PARAMETERS, PARAMETERS
    from .sim_camera_node import PARAMETERS as SIM_PARAMETERS

    return [(PARAMETERS, ""), (CAMERA_PARAMETERS, "cameras.<name>."), (SIM_PARAMETERS, "")]


def render_reference() -> str:
    return reference(_tables(), lambda title: f"## {title}")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    out = Path(__file__).resolve().parents[2] / "docs" / "PARAMETERS.md"
    out.write_text(render_reference())
    sys.stdout.write(f"wrote {out}\n")
